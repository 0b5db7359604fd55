"""``mailers serve``: the webhook service on uvicorn (see :mod:`adapters.serve`)."""

from __future__ import annotations

from typing import Annotated

import typer

from adapters.serve.embedded import run
from adapters.serve.s3_store import spool_dir
from orchestration.cli_common import ConfigOption, console, settings_of


def serve(
    host: Annotated[str | None, typer.Option(help="Address (default: serve.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serve.port).")] = None,
    config: ConfigOption = None,
) -> None:
    """Receive provider webhooks: verify, land durably, then answer (never the warehouse)."""
    settings = settings_of(config)
    updates = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    serve_config = settings.config.serve.model_copy(update=updates)
    landing = serve_config.landing
    where = (
        f"s3://{landing.bucket}/{landing.prefix} (spooled in {spool_dir(settings, landing)})"
        if landing.kind == "s3"
        else str(settings.landing_dir)
    )
    console.print(
        f"mailers serve on http://{serve_config.host}:{serve_config.port}, landing in {where}",
        highlight=False,
    )
    run(settings, serve_config)
