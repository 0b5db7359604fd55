"""A fake Snowflake that two processes share: fakesnow's HTTP server, for dbt-snowflake.

The pipeline runs in the test process on the patched connector (as every other Snowflake
test does); dbt-snowflake runs as its own process from ``<repo>/.venv-dbt-snowflake``
(``tests/tool_venvs.py``: its certifi pin cannot share the main venv) and reaches
the same databases through fakesnow's server on a loopback port, with the profile's
``host``/``port``/``protocol`` (``MAILERS_SNOWFLAKE_HOST`` and friends). Both sides are one
in-memory DuckDB: the server's sessions and the patched connections are cursors of the
same :class:`fakesnow.instance.FakeSnow`.

The server is started here rather than with ``fakesnow.server()``: importing the
``fakesnow.server`` module replaces that function on the package, so it starts once per
process; and uvicorn binding port 0 leaves no window for another process to take the port.
"""

from __future__ import annotations

import importlib
import logging
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from .engine_pipeline import run_dbt_process
from .tool_venvs import ensure_tool

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_SECONDS = 60
DATABASE = "MAILERS_TEST"


@dataclass(frozen=True)
class FakesnowServer:
    """A running server: where dbt-snowflake connects."""

    port: int
    database: str = DATABASE

    def dbt_environment(self) -> dict[str, str]:
        """The variables of ``dbt_project/profiles.yml``'s ``snowflake`` target, pointed
        here (fakesnow takes any credentials)."""
        return {
            "MAILERS_SNOWFLAKE_ACCOUNT": "fakesnow",
            "MAILERS_SNOWFLAKE_USER": "mailers",
            "MAILERS_SNOWFLAKE_PASSWORD": "fakesnow-takes-any-password",
            "MAILERS_SNOWFLAKE_ROLE": "MAILERS",
            "MAILERS_SNOWFLAKE_WAREHOUSE": "MAILERS_WH",
            "MAILERS_SNOWFLAKE_DATABASE": self.database,
            "MAILERS_SNOWFLAKE_HOST": "127.0.0.1",
            "MAILERS_SNOWFLAKE_PORT": str(self.port),
            "MAILERS_SNOWFLAKE_PROTOCOL": "http",
        }


def ensure_dbt_venv() -> Path:
    """dbt-snowflake's virtualenv, created on first use; its ``dbt`` executable."""
    return ensure_tool("dbt-snowflake", "dbt")


@contextmanager
def running_fakesnow() -> Iterator[FakesnowServer]:
    """Patch ``snowflake.connector.connect`` onto a fresh in-memory fakesnow and serve the
    same instance over HTTP on a free loopback port, until the block ends."""
    import snowflake.connector.pandas_tools
    import uvicorn
    from fakesnow import fakes
    from fakesnow.instance import FakeSnow

    server_module = importlib.import_module("fakesnow.server")
    fake = FakeSnow()
    server = uvicorn.Server(
        uvicorn.Config(server_module.app, host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="fakesnow server", daemon=True)
    with (
        _quiet(logging.getLogger("fakesnow.server")),
        mock.patch.object(server_module, "shared_fs", fake),
        mock.patch("snowflake.connector.connect", side_effect=fake.connect),
        mock.patch.object(
            snowflake.connector.pandas_tools, "write_pandas", side_effect=fakes.write_pandas
        ),
    ):
        thread.start()
        try:
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while thread.is_alive() and not server.started and time.monotonic() < deadline:
                time.sleep(0.05)
            if not server.started:
                raise RuntimeError("the fakesnow server did not start")
            port = server.servers[0].sockets[0].getsockname()[1]
            yield FakesnowServer(port)
        finally:
            server.should_exit = True
            thread.join()
            fake.duck_conn.close()


@contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """Warnings and up only: fakesnow logs every login and failed statement at INFO (a
    failing dbt run names the statement itself)."""
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_dbt(
    executable: Path,
    server: FakesnowServer,
    args: Sequence[str],
    target_path: Path,
    *,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``dbt ARGS`` of the project on the ``snowflake`` target against ``server``
    (:func:`tests.engine_pipeline.run_dbt_process`)."""
    return run_dbt_process(
        executable, "snowflake", server.dbt_environment(), args, target_path, check=check
    )
