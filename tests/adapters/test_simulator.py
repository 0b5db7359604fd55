"""The provider simulator's server: a held request or a kept-alive connection cannot outlive it."""

from __future__ import annotations

import time

import httpx
import pytest

from adapters.simulator import Fault, Request, Response, Simulator


def counting_simulator(served: list[Request]) -> Simulator:
    """A started simulator whose one route records each request it processes."""

    def send(request: Request) -> Response:
        served.append(request)
        return Response()

    sim = Simulator()
    sim.route("demo", "POST", r"/send", send)
    return sim.start()


def test_a_held_answer_ends_unsent_when_the_simulator_stops() -> None:
    # A timeout fault processes the request (the provider stored it), then holds the answer
    # past the client's read timeout; stopping the simulator ends the hold, so it cannot
    # answer into a later test.
    served: list[Request] = []
    sim = counting_simulator(served)
    sim.inject("demo", Fault(timeout=30.0))
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{sim.base_url}/send", timeout=1.0)

    sim.stop()

    assert time.monotonic() - started < 20  # the 30 s hold did not run out
    assert len(served) == 1
    assert sim.requests == [("demo", "POST", "/send")]


def test_a_kept_alive_connection_is_not_served_after_stop() -> None:
    served: list[Request] = []
    sim = counting_simulator(served)
    with httpx.Client(base_url=sim.base_url, timeout=5.0) as client:
        assert client.post("/send").status_code == 200
        sim.stop()
        with pytest.raises(httpx.TransportError):
            client.post("/send")

    assert len(served) == 1
