"""``mailers serve`` over real loopback sockets: every status code, durable landing first."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.serve.embedded import EmbeddedServer
from mailers.config import Settings
from mailers.unsubscribe import UnsubscribeClaim, sign
from tests.serve.helpers import (
    landed_lines,
    mailgun_request,
    postmark_request,
    resend_request,
    serve_settings,
)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return serve_settings(tmp_path, monkeypatch, max_body_bytes=4096)


@pytest.fixture
def server(settings: Settings) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(settings) as running:
        yield running


def _raw(server: EmbeddedServer, data: bytes, *, half_close: bool = True) -> bytes:
    """Send raw bytes on a fresh connection; everything the server answers until it closes."""
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as conn:
        conn.sendall(data)
        if half_close:
            conn.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_verified_webhooks_land_and_the_rest_get_their_status(
    server: EmbeddedServer, settings: Settings
) -> None:
    good = postmark_request()
    url = server.url_for("acme", "pm")
    headers = dict(good.headers)
    answers = {
        "good": httpx.post(url, content=good.body, headers=headers),
        "replay": httpx.post(url, content=good.body, headers=headers),
        "unsigned": httpx.post(url, content=good.body),
        "bad json, verified": httpx.post(url, content=b"{oops", headers=headers),
        "unknown account": httpx.post(server.url_for("acme", "nope"), content=good.body),
        "unknown workspace": httpx.post(server.url_for("nope", "pm"), content=good.body),
        "mailgun not json": httpx.post(server.url_for("acme", "mg"), content=b"[1,"),
        "too big": httpx.post(url, content=b"x" * 5000, headers=headers),
    }
    assert {name: a.status_code for name, a in answers.items()} == {
        "good": 200,
        "replay": 200,  # a verified retry of a landed request: acknowledged, not landed again
        "unsigned": 401,
        "bad json, verified": 400,
        "unknown account": 404,
        "unknown workspace": 404,
        "mailgun not json": 400,
        "too big": 413,
    }
    assert landed_lines(settings.landing_dir) == [
        good.body.replace(b", ", b",").replace(b": ", b":")
    ]
    assert (server.landed, server.rejected) == (1, 3)
    assert httpx.get(server.base_url + "/healthz").status_code == 200
    assert httpx.get(server.base_url + "/readyz").status_code == 200


def test_content_length_is_checked_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = serve_settings(tmp_path, monkeypatch, max_body_bytes=4096, body_timeout_seconds=1)
    with EmbeddedServer(settings) as server:
        _check_content_lengths(server)


def _check_content_lengths(server: EmbeddedServer) -> None:
    path = "/webhooks/acme/pm"
    not_a_number = _raw(
        server, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 12a\r\n\r\n{{}}".encode()
    )
    huge = _raw(
        server, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n{{}}".encode()
    )
    short = _raw(
        server,
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{{}}".encode(),
        half_close=False,
    )
    assert not_a_number.startswith(b"HTTP/1.1 400")
    assert huge.startswith(b"HTTP/1.1 413")
    assert short.startswith(b"HTTP/1.1 408")  # the rest of the body never came
    assert server.landed == 0


def test_a_chunked_body_over_the_limit_is_refused_while_reading(
    server: EmbeddedServer, settings: Settings
) -> None:
    good = postmark_request()
    auth = good.headers["Authorization"]
    chunk = b"x" * 1000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(10)) + b"0\r\n\r\n"
    answer = _raw(
        server,
        b"POST /webhooks/acme/pm HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        + f"Authorization: {auth}\r\n\r\n".encode()
        + body,
    )
    assert answer.startswith(b"HTTP/1.1 413")
    small = b"%x\r\n%s\r\n0\r\n\r\n" % (len(good.body), good.body)
    answer = _raw(
        server,
        b"POST /webhooks/acme/pm HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        + f"Connection: close\r\nAuthorization: {auth}\r\n\r\n".encode()
        + small,
        half_close=False,
    )
    assert answer.startswith(b"HTTP/1.1 200")
    assert len(landed_lines(settings.landing_dir)) == 1


def test_an_unwritable_landing_zone_answers_503_and_the_retry_lands_once(
    server: EmbeddedServer, settings: Settings
) -> None:
    request = resend_request(b'{"type": "email.delivered", "data": {"email_id": "e1"}}')
    url = server.url_for("acme", "rs")
    blocker = settings.landing_dir / "resend"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the kind's directory belongs")  # unwritable even as root

    failed = httpx.post(url, content=request.body, headers=dict(request.headers))
    blocker.unlink()
    retried = httpx.post(url, content=request.body, headers=dict(request.headers))
    again = httpx.post(url, content=request.body, headers=dict(request.headers))

    # The third is a retry of a landed request: acknowledged again, landed once.
    assert (failed.status_code, retried.status_code, again.status_code) == (503, 200, 200)
    assert len(landed_lines(settings.landing_dir, "resend")) == 1


def test_readiness_fails_when_the_landing_zone_is_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = serve_settings(tmp_path, monkeypatch)
    with EmbeddedServer(settings) as server:
        assert httpx.get(server.base_url + "/readyz").status_code == 200
        landing = settings.landing_dir
        for child in landing.iterdir():
            child.unlink()
        landing.rmdir()
        landing.write_text("not a directory")
        answer = httpx.get(server.base_url + "/readyz")
        landing.unlink()
    assert answer.status_code == 503 and "not writable" in answer.text


def test_mailgun_signed_inside_the_body_is_verified(
    server: EmbeddedServer, settings: Settings
) -> None:
    good = mailgun_request()
    url = server.url_for("acme", "mg")
    forged = good.body.replace(b'"signature": "', b'"signature": "0')
    assert httpx.post(url, content=forged).status_code == 401
    assert httpx.post(url, content=good.body).status_code == 200
    assert len(landed_lines(settings.landing_dir, "mailgun")) == 1


def test_unsubscribe_waits_for_its_signing_key_and_lands_once_it_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unset unsubscribe key keeps webhooks flowing; the link answers 503, then works."""
    settings = serve_settings(tmp_path, monkeypatch)
    monkeypatch.delenv("UNUSED", raising=False)
    token = sign(UnsubscribeClaim("m-1", "acme", "lifecycle"), "unsub-key")
    form = {"List-Unsubscribe": "One-Click"}
    with EmbeddedServer(settings) as server:
        url = f"{server.base_url}/?token={token}"
        waiting = httpx.post(url, data=form)
        assert httpx.post(server.url_for("acme", "mg"), content=mailgun_request().body).is_success
        monkeypatch.setenv("UNUSED", "unsub-key")
        landed = httpx.post(url, data=form)
    assert waiting.status_code == 503 and "try again" in waiting.text.lower()
    assert landed.status_code == 200
    assert len(landed_lines(settings.landing_dir, "unsubscribe")) == 1
    assert len(landed_lines(settings.landing_dir, "mailgun")) == 1


def test_s3_landing_is_accepted_with_a_bucket_and_refused_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Landing in S3 end to end (service, mirror, ingestion) is tests/serve/test_serve_s3.py."""
    settings = serve_settings(tmp_path, monkeypatch, landing={"kind": "s3", "bucket": "events"})
    assert settings.config.serve.landing.bucket == "events"
    with pytest.raises(ValueError, match=r"serve.landing.kind: s3 needs serve.landing.bucket"):
        serve_settings(tmp_path, monkeypatch, landing={"kind": "s3"})
    with pytest.raises(ValueError, match=r"aws_secret_access_key"):
        serve_settings(
            tmp_path,
            monkeypatch,
            landing={"kind": "s3", "bucket": "b", "aws_secret_access_key": "x"},
        )
