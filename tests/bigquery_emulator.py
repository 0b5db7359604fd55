"""A local BigQuery for the tests: bqemulator (REST + Storage API gRPC on DuckDB), run as a
separate process from its own virtualenv.

bqemulator pins an older sqlglot than the main venv's packages, so it cannot be installed
there: it runs from ``<repo>/.venv-bqemulator`` (``tests/tool_venvs.py``). The emulator
binds free loopback ports (``--rest-port 0 --grpc-port 0``) and says which in its JSON log
lines, so nothing races for a port.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .tool_venvs import ensure_tool

PROJECT = "test-proj"
START_TIMEOUT_SECONDS = 120
"""Generous: on a loaded 2-core machine importing the emulator takes several seconds."""


@dataclass(frozen=True)
class BigQueryEmulator:
    """A running emulator: its REST and Storage API endpoints."""

    rest_port: int
    grpc_port: int
    project: str = PROJECT

    def warehouse_config(self, **overrides: object) -> dict[str, object]:
        """The ``warehouse:`` section of a config pointing at this emulator."""
        return {
            "kind": "bigquery",
            "project": self.project,
            "location": "US",
            "api_endpoint": f"http://127.0.0.1:{self.rest_port}",
            "storage_api_endpoint": f"127.0.0.1:{self.grpc_port}",
            "anonymous": True,
            # The emulator serves Storage API reads of tables but not of query results.
            "storage_read_api": False,
            **overrides,
        }


def ensure_venv() -> Path:
    """The emulator's virtualenv, created on first use; its ``bqemulator`` executable."""
    return ensure_tool("bqemulator", "bqemulator")


@contextmanager
def running_emulator(executable: Path) -> Iterator[BigQueryEmulator]:
    """Start ``bqemulator start`` (in-memory) and stop it after the block."""
    process = subprocess.Popen(
        [
            str(executable),
            "start",
            "--project",
            PROJECT,
            "--rest-host",
            "127.0.0.1",
            "--rest-port",
            "0",
            "--grpc-host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--ephemeral",
            "--log-format",
            "json",
            "--log-level",
            "info",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ports: dict[str, int] = {}
    seen: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            seen.append(line)
            del seen[:-40]
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") in ("rest.listen", "grpc.listen"):
                    ports[event["event"]] = int(event["port"])
                    if len(ports) == 2:
                        ready.set()
        ready.set()

    # The reader keeps draining the log after start-up, so the emulator never blocks on a
    # full pipe.
    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(START_TIMEOUT_SECONDS) or len(ports) < 2:
            raise RuntimeError(
                "bqemulator did not start (exit code "
                f"{process.poll()}); last output:\n{''.join(seen)}"
            )
        yield BigQueryEmulator(ports["rest.listen"], ports["grpc.listen"])
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
