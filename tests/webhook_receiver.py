"""A real webhook subscriber on a loopback port, and a warehouse to deliver to it from.

:class:`Receiver` answers each POST as its ``decide`` hook says (a status, ``"sleep"``: no
answer within the client's timeout, or ``"drop"``: close the connection unanswered) and
checks every signature with the independent ``standardwebhooks`` package: the library
signs ``id.timestamp.body`` with each of the receiver's secrets and one must match a sent
signature. (Its ``verify`` also holds the timestamp to the machine's clock, which the tests
move forward by days; the signed content is checked all the same.)
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
from standardwebhooks.webhooks import Webhook

from adapters.settings import load
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.clock import utcnow
from mailers.config import Settings
from mailers.events import EVENTS_SCHEMA
from mailers.tables import ensure_tables
from mailers.warehouse import MAILERS_SCHEMA, Warehouse
from tests.conftest import write_config

SECRET_NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
SECRET_OLD = "whsec_" + base64.b64encode(b"o" * 24).decode()
ENVIRON = {"HOOK_KEY": SECRET_NEW, "HOOK_KEY_OLD": SECRET_OLD}

Decide = Callable[[str, int], int | str]
"""(webhook-id, how many times that id was received before) → a status, "sleep" or "drop"."""


@dataclass(frozen=True)
class Received:
    """One request as it arrived, verified, and what it was answered."""

    webhook_id: str
    timestamp: int
    body: bytes
    document: dict[str, Any]
    answer: int | str

    @property
    def event_ids(self) -> list[str]:
        data = self.document["data"]
        events = data["events"] if self.document["type"] == "email.batch" else [self.document]
        return [e["data"]["event_id"] for e in events]


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, decide: Decide, secrets: Sequence[str] = (SECRET_NEW,)) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.decide = decide
        self.secrets = list(secrets)
        self.received: list[Received] = []
        self.unverified = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks"

    def accepted(self) -> list[Received]:
        """Requests answered 2xx."""
        return [r for r in self.received if isinstance(r.answer, int) and 200 <= r.answer < 300]

    def accepted_event_ids(self) -> list[str]:
        """Event ids of accepted requests, each webhook-id counted once (as receivers dedupe)."""
        seen: dict[str, list[str]] = {}
        for r in self.accepted():
            seen.setdefault(r.webhook_id, r.event_ids)
        return [e for ids in seen.values() for e in ids]


def verify(secrets: Sequence[str], body: bytes, headers: dict[str, str]) -> dict[str, Any] | None:
    """The parsed body when one of ``secrets`` signed it (checked by ``standardwebhooks``)."""
    sent = headers["webhook-signature"].split(" ")
    moment = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    for secret in secrets:
        expected = Webhook(secret).sign(headers["webhook-id"], moment, body.decode())
        if expected in sent:
            document: dict[str, Any] = json.loads(body)
            return document
    return None


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}
        document = verify(self.server.secrets, body, headers)
        if document is None:
            with self.server.lock:
                self.server.unverified += 1
            self._answer(401)
            return
        hook_id = headers["webhook-id"]
        with self.server.lock:
            before = sum(1 for r in self.server.received if r.webhook_id == hook_id)
            answer = self.server.decide(hook_id, before)
            self.server.received.append(
                Received(hook_id, int(headers["webhook-timestamp"]), body, document, answer)
            )
        if answer == "sleep":
            time.sleep(2.0)  # well past the subscriber's timeout (0.5 s in the tests)
            self.close_connection = True
            return
        if answer == "drop":
            self.close_connection = True
            return
        self._answer(int(answer))

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def receiving(decide: Decide, secrets: Sequence[str] = (SECRET_NEW,)) -> Iterator[Receiver]:
    """A :class:`Receiver` serving on its own thread for the ``with`` block."""
    server = Receiver(decide, secrets)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def always(answer: int | str) -> Decide:
    return lambda hook_id, before: answer


def subscriber(url: str, **extra: Any) -> dict[str, Any]:
    """A subscriber's config: signed by HOOK_KEY, timeout 0.5 s, plus ``extra``."""
    return {"url": url, "secrets": [{"env": "HOOK_KEY"}], "timeout_seconds": 0.5, **extra}


def settings_with(root: Path, subscribers: dict[str, dict[str, Any]]) -> Settings:
    """The example config with ``subscribers`` in workspace ``acme``, and its warehouse."""

    def add(config: dict[str, Any]) -> None:
        config["workspaces"]["acme"]["webhook_subscribers"] = subscribers

    settings = load(write_config(root, add))
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
    return settings


def event_rows(
    count: int,
    *,
    start: int = 0,
    workspace: str = "acme",
    event_type: str = "delivered",
    stream: str = "lifecycle",
    occurred_at: datetime | None = None,
) -> list[dict[str, Any]]:
    """``count`` canonical events ``ev-<n>`` ingested now."""
    now = utcnow()
    return [
        {
            "event_id": f"ev-{n:06d}",
            "event_type": event_type,
            "occurred_at": occurred_at or now,
            "provider": "sandbox",
            "provider_account": "acme_sandbox_a",
            "workspace": workspace,
            "stream": stream,
            "recipient": f"r{n}@example.test",
            "raw_payload": json.dumps({"n": n}),
            "ingested_at": now,
        }
        for n in range(start, start + count)
    ]


def add_events(warehouse: Warehouse, rows: list[dict[str, Any]]) -> None:
    warehouse.append(MAILERS_SCHEMA, "events", pa.Table.from_pylist(rows, EVENTS_SCHEMA))
