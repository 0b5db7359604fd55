"""``mailers serve``: the webhook service on uvicorn (see :mod:`adapters.serve`)."""

from __future__ import annotations

from typing import Annotated

import typer

from adapters.serve.embedded import run
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
    console.print(
        f"mailers serve on http://{serve_config.host}:{serve_config.port}, landing in "
        f"{settings.landing_dir if serve_config.landing.kind == 'local' else 's3'}",
        highlight=False,
    )
    run(settings, serve_config)
