"""Live-service support for tests and benchmarks: a config with signed-webhook accounts,
the real ``mailers serve`` process, pre-signed requests and a cheap keep-alive HTTP/1.1 client.

The client speaks raw HTTP over asyncio streams rather than through httpx: on two cores the
load generator shares the machine with the service, and a heavy client would measure itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from adapters.simulator import postmark, resend
from tests.serve.helpers import config_document, webhook_accounts

PM_USER, PM_PASSWORD = "bench-user", "bench-password"
RESEND_SECRET = "whsec_" + base64.b64encode(b"bench-resend-secret-32-bytes-long").decode()
ENV = {
    "BENCH_PM_TOKEN": "pm-token",
    "BENCH_PM_USER": PM_USER,
    "BENCH_PM_PASSWORD": PM_PASSWORD,
    "BENCH_MG_KEY": "mg-key",
    "BENCH_MG_SIGNING": "mg-signing-key",
    "BENCH_RS_KEY": "rs-key",
    "BENCH_RS_SECRET": RESEND_SECRET,
    "BENCH_UNSUBSCRIBE_KEY": "bench-unsubscribe-key",
}


def write_config(root: Path, serve: dict[str, object] | None = None) -> Path:
    """``root/mailers.yaml``: workspace ``acme`` with Postmark, Mailgun and Resend accounts
    (credentials in :data:`ENV`); data (and so the landing zone) under ``root/.mailers``."""
    unsubscribe = {
        "base_url": "https://u.example/unsubscribe",
        "signing_key": {"env": "BENCH_UNSUBSCRIBE_KEY"},
    }
    document = config_document(webhook_accounts("BENCH"), unsubscribe, dict(serve or {}))
    path = root / "mailers.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Service:
    """``mailers serve -c CONFIG --port PORT`` as a child process."""

    def __init__(self, config: Path, port: int) -> None:
        self.config, self.port = config, port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Service:
        mailers = Path(sys.executable).with_name("mailers")
        self.process = subprocess.Popen(
            [str(mailers), "serve", "-c", str(self.config), "--port", str(self.port)],
            env={**os.environ, **ENV},
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mailers serve exited with {self.process.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"mailers serve did not get ready on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM: the service closes its open segments on the way out."""
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=60)


@dataclass(frozen=True)
class Prepared:
    """One signed webhook as bytes on the wire, and the event id it carries."""

    ident: str
    wire: bytes


def _wire(port: int, account: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"POST /webhooks/acme/{account} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    head += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "content-length"]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def prepared(port: int, count: int, prefix: str = "b") -> Iterator[Prepared]:
    """``count`` distinct delivery webhooks, alternating Postmark (basic auth) and Resend
    (Standard Webhooks HMAC), each with its own id."""
    for n in range(count):
        ident = f"{prefix}-{n:08d}"
        if n % 2 == 0:
            body = json.dumps(
                {
                    "RecordType": "Delivery",
                    "MessageID": ident,
                    "Recipient": f"r{n}@example.com",
                    "DeliveredAt": "2026-01-05T10:00:00Z",
                }
            ).encode()
            request = postmark.signed_request(
                body, {"webhook_username": PM_USER, "webhook_password": PM_PASSWORD}
            )
            yield Prepared(ident, _wire(port, "pm", body, dict(request.headers)))
        else:
            body = json.dumps(
                {
                    "type": "email.delivered",
                    "created_at": "2026-01-05T10:00:00.000Z",
                    "data": {
                        "email_id": ident,
                        "to": [f"r{n}@example.com"],
                        "created_at": "2026-01-05T10:00:00.000Z",
                    },
                }
            ).encode()
            request = resend.signed_request(body, RESEND_SECRET, message_id=f"msg_{ident}")
            yield Prepared(ident, _wire(port, "rs", body, dict(request.headers)))


@dataclass
class Outcome:
    """What the client saw: per request, its status (0: no answer) and latency."""

    statuses: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def acknowledged(self) -> set[str]:
        return {ident for ident, status in self.statuses.items() if status == 200}


async def _answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


@dataclass
class _Trigger:
    """Call ``action`` once, when ``after`` requests have been answered (or failed)."""

    after: int
    action: Callable[[], object]
    fired: bool = False

    def check(self, done: int) -> None:
        if not self.fired and done >= self.after:
            self.fired = True
            self.action()


async def _connection(
    port: int, queue: list[Prepared], outcome: Outcome, until: float, trigger: _Trigger | None
) -> None:
    reader = writer = None
    while queue and time.monotonic() < until:
        request = queue.pop()
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            writer.write(request.wire)
            await writer.drain()
            status = await asyncio.wait_for(_answer(reader), timeout=30)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            status = 0
            if writer is not None:
                writer.close()
            reader = writer = None
        outcome.latencies.append(time.perf_counter() - started)
        # A request answered 200 once stays acknowledged, whatever a later retry gets.
        if outcome.statuses.get(request.ident) != 200:
            outcome.statuses[request.ident] = status
        if trigger is not None:
            trigger.check(len(outcome.latencies))
    if writer is not None:
        writer.close()


async def _drive(
    port: int,
    requests: list[Prepared],
    connections: int,
    seconds: float,
    trigger: _Trigger | None,
) -> Outcome:
    outcome = Outcome()
    queue = list(reversed(requests))
    started = time.perf_counter()
    until = time.monotonic() + seconds
    await asyncio.gather(
        *(_connection(port, queue, outcome, until, trigger) for _ in range(connections))
    )
    outcome.elapsed = time.perf_counter() - started
    return outcome


def drive(
    port: int,
    requests: list[Prepared],
    connections: int,
    seconds: float,
    *,
    after: int = 0,
    then: Callable[[], object] | None = None,
) -> Outcome:
    """Send ``requests`` over ``connections`` keep-alive connections, for at most ``seconds``.

    ``then`` (a SIGKILL of the service, say) is called once ``after`` requests are done.
    """
    trigger = _Trigger(after, then) if then is not None else None
    return asyncio.run(_drive(port, requests, connections, seconds, trigger))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def landed_ids(landing: Path) -> list[str]:
    """The webhook id of every landed line, duplicates kept (closed segments only)."""
    ids = []
    for path in sorted(landing.glob("*/*/*.jsonl")):
        for line in path.read_bytes().splitlines():
            body = json.loads(line)  # the service lands each verified body as one line
            ident = body.get("MessageID") or body.get("data", {}).get("email_id")
            ids.append(str(ident))
    return ids
