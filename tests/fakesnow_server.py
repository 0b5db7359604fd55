"""A fake Snowflake that two processes share: fakesnow's HTTP server, for dbt-snowflake.

dbt-snowflake runs as its own process from ``<repo>/.venv-dbt-snowflake``
(``tests/tool_venvs.py``: its certifi pin cannot share the main venv) and reaches the
server on a loopback port with the profile's ``host``/``port``/``protocol``
(``MAILERS_SNOWFLAKE_HOST`` and friends). The test process reaches the same databases
either through the unpatched connector over HTTP too (a config's ``host``, ``port`` and
``protocol``: :meth:`FakesnowServer.warehouse_config`) or, patched, directly: the server's
sessions and the patched connections are cursors of one in-memory
:class:`fakesnow.instance.FakeSnow`.

The server is started here rather than with ``fakesnow.server()``: importing the
``fakesnow.server`` module replaces that function on the package, so it starts once per
process; and uvicorn binding port 0 leaves no window for another process to take the port.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from .tool_venvs import ensure_tool

START_TIMEOUT_SECONDS = 60
NETWORK_TIMEOUT_SECONDS = 10
"""Generous for a loopback request on a loaded machine; a 500 is retried for this long."""
DATABASE = "MAILERS_TEST"


@dataclass(frozen=True)
class FakesnowServer:
    """A running server: where the unpatched connector and dbt-snowflake connect."""

    port: int
    database: str = DATABASE

    def warehouse_config(self, password_env: str) -> dict[str, object]:
        """The ``warehouse:`` section of a config whose unpatched connector reaches this
        server, its (any) password in variable ``password_env``."""
        return {
            "kind": "snowflake",
            "account": "fakesnow",
            "user": "mailers",
            "database": self.database,
            "password": {"env": password_env},
            "host": "127.0.0.1",
            "port": self.port,
            "protocol": "http",
            # A statement the server fails on (HTTP 500) fails here too, not after retries
            # without end: fakesnow answers 500 to what DuckDB refuses for a NOT NULL column.
            "network_timeout_seconds": NETWORK_TIMEOUT_SECONDS,
        }


def ensure_dbt_venv() -> Path:
    """dbt-snowflake's virtualenv, created on first use; its ``dbt`` executable."""
    return ensure_tool("dbt-snowflake", "dbt")


@contextmanager
def running_fakesnow(*, patch_connector: bool = True) -> Iterator[FakesnowServer]:
    """Serve a fresh in-memory fakesnow over HTTP on a free loopback port until the block
    ends; with ``patch_connector``, ``snowflake.connector.connect`` in this process opens
    the same instance directly (without, this process's connector goes over the wire too:
    :meth:`FakesnowServer.warehouse_config`)."""
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
    with ExitStack() as patches:
        patches.enter_context(_quiet(logging.getLogger("fakesnow")))
        patches.enter_context(mock.patch.object(server_module, "shared_fs", fake))
        patches.enter_context(_null_timestamps_kept())
        if patch_connector:
            patches.enter_context(
                mock.patch("snowflake.connector.connect", side_effect=fake.connect)
            )
            patches.enter_context(
                mock.patch.object(
                    snowflake.connector.pandas_tools, "write_pandas", side_effect=fakes.write_pandas
                )
            )
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
def _null_timestamps_kept() -> Iterator[None]:
    """Mend a fakesnow 0.12.1 server gap: it sends a timestamp column as Snowflake's
    (epoch, fraction) struct without the column's null mask, so the connector reads a NULL
    timestamp as 1970-01-01. Snowflake sends a NULL as a null struct; so does this."""
    import pyarrow as pa
    from fakesnow import arrow

    original = arrow.timestamp_to_sf_struct

    def with_nulls(ts: pa.Array | pa.ChunkedArray) -> pa.Array:
        struct = original(ts)
        values = ts.combine_chunks() if isinstance(ts, pa.ChunkedArray) else ts
        if values.null_count == 0:
            return struct
        return pa.StructArray.from_arrays(
            struct.flatten(), fields=list(struct.type), mask=values.is_null()
        )

    with mock.patch.object(arrow, "timestamp_to_sf_struct", with_nulls):
        yield


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
