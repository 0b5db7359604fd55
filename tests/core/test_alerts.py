"""The alert hook: a log line always, and a signed webhook received on a loopback server."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mailers.alerts import SIGNATURE_HEADER, TIMESTAMP_HEADER, Alerter
from mailers.rules_config import AlertWebhook
from mailers.secrets import SecretRef

SECRET = "alert-signing-secret"


class Receiver(ThreadingHTTPServer):
    """A loopback HTTP server recording each POST; answers ``status``."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 204

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/alerts"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def webhook(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> AlertWebhook:
    monkeypatch.setenv("MAILERS_TEST_ALERT_SECRET", SECRET)
    return AlertWebhook(url=receiver.url, secret=SecretRef(env="MAILERS_TEST_ALERT_SECRET"))


def test_the_webhook_gets_a_signed_json_body(
    receiver: Receiver, webhook: AlertWebhook, caplog: pytest.LogCaptureFixture
) -> None:
    alert = Alerter(webhook)
    with caplog.at_level(logging.WARNING, logger="mailers.alerts"):
        assert alert(logging.ERROR, "paused: stream acme.lifecycle", {"scope": "s"})
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "paused: stream acme.lifecycle")
    ]
    ((headers, body),) = receiver.received
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}"
    payload = json.loads(body)
    assert payload["scope"] == "s" and payload["message"] == "paused: stream acme.lifecycle"
    assert headers[TIMESTAMP_HEADER] == str(int(payload["sent_at"]))
    assert headers["Content-Type"] == "application/json"
    assert SECRET.encode() not in body


def test_a_failing_webhook_is_logged_and_never_raises(
    receiver: Receiver, webhook: AlertWebhook, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.status = 500
    with caplog.at_level(logging.WARNING, logger="mailers.alerts"):
        assert not Alerter(webhook)(logging.WARNING, "warning: x", {})
    assert len(receiver.received) == 1
    failures = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(failures) == 1 and "500" in failures[0] and receiver.url in failures[0]
    assert all(SECRET not in r.getMessage() for r in caplog.records)

    receiver.shutdown()
    receiver.server_close()  # nothing listens there now: connection refused
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mailers.alerts"):
        assert not Alerter(webhook)(logging.WARNING, "warning: y", {})
    assert any("alert webhook" in r.getMessage() for r in caplog.records)


def test_a_missing_secret_skips_the_webhook_with_a_log_line(
    receiver: Receiver, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAILERS_TEST_UNSET_SECRET", raising=False)
    hook = AlertWebhook(url=receiver.url, secret=SecretRef(env="MAILERS_TEST_UNSET_SECRET"))
    with caplog.at_level(logging.WARNING, logger="mailers.alerts"):
        assert not Alerter(hook)(logging.ERROR, "paused: x", {})
    assert receiver.received == []
    assert any("MAILERS_TEST_UNSET_SECRET" in r.getMessage() for r in caplog.records)
