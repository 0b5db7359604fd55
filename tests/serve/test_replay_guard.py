"""The replay guard is shared by every ``mailers serve`` process of a host and survives a
restart: real service processes on one landing zone, one signed Resend webhook (its
``svix-id`` is the replay token) sent to each of them and again after a SIGKILL.

A retry of a request that was landed is answered 200 ("already landed", the provider
stops retrying) and is not landed again; a request that was never landed is accepted by
whichever process it reaches.
"""

from __future__ import annotations

import socket
from pathlib import Path

from tests.serve.live import Prepared, Service, free_port, landed_ids, prepared, write_config


def _send(port: int, request: Prepared) -> tuple[int, bytes]:
    """One request on its own connection (closed by the service after answering)."""
    wire = request.wire.replace(b"Host: 127.0.0.1:0", f"Host: 127.0.0.1:{port}".encode())
    wire = wire.replace(b"\r\n", b"\r\nConnection: close\r\n", 1)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(wire)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _resend_requests(count: int) -> list[Prepared]:
    # prepared() alternates Postmark (no replay token) and Resend (svix-id): odd ones
    return [p for n, p in enumerate(prepared(0, 2 * count, prefix="guard")) if n % 2 == 1]


def test_processes_on_one_landing_zone_share_the_guard_and_a_restart_keeps_it(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    landing = tmp_path / ".mailers" / "landing"
    first, second = _resend_requests(2)
    one = Service(config, free_port()).start()
    two = Service(config, free_port()).start()
    try:
        assert _send(one.port, first)[0] == 200
        status, body = _send(two.port, first)  # the provider's retry reaches the other one
        assert (status, body) == (200, b"already landed")
        assert _send(two.port, second)[0] == 200  # a new request lands wherever it goes

        one.kill()
        one = Service(config, one.port).start()
        for request in (first, second):
            assert _send(one.port, request) == (200, b"already landed")
    finally:
        for service in (one, two):
            if service.process and service.process.poll() is None:
                service.stop()
    ids = landed_ids(landing)
    assert sorted(ids) == sorted([first.ident, second.ident])  # each landed exactly once
