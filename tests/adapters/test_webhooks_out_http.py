"""The httpx transport against a real subscriber on a loopback port that fails (5xx), times
out and recovers; what it receives verifies with the independent ``standardwebhooks``."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from adapters.webhooks_out import HttpxTransport
from mailers.webhooks_out import payload, signing

SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()


class Subscriber(ThreadingHTTPServer):
    """Answers each POST by the next of ``script``: a status, or "sleep" (no answer in time)."""

    def __init__(self, script: list[int | str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self.verified: list[dict[str, object]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks"


class _Handler(BaseHTTPRequestHandler):
    server: Subscriber

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        step = self.server.script.pop(0) if self.server.script else 200
        if step == "sleep":
            time.sleep(1.5)
            step = 200
        if step == 200:
            self.server.verified.append(Webhook(SECRET).verify(body, dict(self.headers)))
        self.send_response(int(step))
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def subscriber(request: pytest.FixtureRequest) -> Iterator[Subscriber]:
    server = Subscriber(list(request.param))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _message() -> tuple[dict[str, str], bytes]:
    at = datetime(2026, 12, 3, 9)
    event = {"event_id": "e1", "event_type": "bounced", "occurred_at": at, "provider": "sandbox"}
    body = payload.body([event], at, batched=False)
    key = signing.secret_key(SECRET, "test")
    return signing.headers(
        [key], payload.webhook_id("acme", "crm", ["e1"]), int(time.time()), body
    ), body


@pytest.mark.parametrize("subscriber", [[503, "sleep", 200]], indirect=True)
def test_fails_times_out_and_recovers(subscriber: Subscriber) -> None:
    headers, body = _message()
    transport = HttpxTransport()
    try:
        failed = transport.post(subscriber.url, headers, body, 5.0)
        timed_out = transport.post(subscriber.url, headers, body, 0.5)
        ok = transport.post(subscriber.url, headers, body, 5.0)
    finally:
        transport.close()
    assert (failed.status_code, failed.delivered, failed.error) == (503, False, "answered 503")
    assert timed_out.status_code is None and not timed_out.delivered
    assert timed_out.error == "timed out after 0.5 s"
    assert ok.delivered and ok.latency_ms > 0
    assert subscriber.verified[-1]["data"]["event_id"] == "e1"  # type: ignore[index]
    assert SECRET not in f"{failed} {timed_out} {ok}"


@pytest.mark.parametrize("subscriber", [[]], indirect=True)
def test_nothing_listening_is_an_error_not_an_exception(subscriber: Subscriber) -> None:
    url = subscriber.url
    subscriber.shutdown()
    subscriber.server_close()
    result = HttpxTransport().post(url, *_message(), 2.0)
    assert result.status_code is None and result.error == f"ConnectError posting to {url}"
