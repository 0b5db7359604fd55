"""The simulator's HTTP server, request routing, fault injection and message store.

Provider modules register routes (:meth:`Simulator.route`) and keep their state in
:attr:`Simulator.store`. Faults are queued per provider and consumed one per request:

* ``Fault(status=429, retry_after=2)``: answer with that status (and ``Retry-After``)
  without processing the request; with ``after_processing=True`` the request is processed
  (messages stored) and the status replaces the answer, as a gateway's 500 or 504 can;
* ``Fault(timeout=5)``: process the request, then hold the answer that long (a client
  with a shorter read timeout sees a timeout after its request was accepted); stopping
  the simulator ends a held request unanswered, so it cannot outlive its test;
* ``Fault(drop=True)``: read the request, then close the connection without answering;
  with ``after_processing=True``, process it first;
* ``Fault(latency=0.2)``: answer normally, that much later.

Faults can also be queued over HTTP (``POST /_simulator/faults``) by another process, or
drawn at random per request from a seeded :class:`FaultMix` (:meth:`Simulator.mix`).

A provider can be given a sending quota (:meth:`Simulator.limit` with a :class:`Quota`, or
``POST /_simulator/quota`` with its fields and ``provider``; ``messages_per_second: null``
lifts it): a token bucket of messages per second with a burst, charged with the messages
of each request the provider's send route admits (:meth:`Simulator.admit`, called by each
provider module once it knows how many messages a request carries and before it stores
any). A request over the quota is answered 429 with a ``Retry-After`` (the seconds until
it would fit, a fixed value such as ``0``, or none at all) and is not processed. What the
quota did is counted in :attr:`Simulator.quota_stats` (``GET /_simulator/quota``): 429s
served, messages admitted and when, so a test can compute the sustained rate.

Provider modules count every message they accept by our message key
(:meth:`Simulator.record_accepted`); :attr:`Simulator.accepted` is what tests compare the
ledger with ("accepted at most once per key").
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import sys
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    """One HTTP request as a route handler sees it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass(frozen=True)
class Response:
    """What a route handler answers."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200, **headers: str) -> Response:
        return cls(
            status=status,
            body=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", **headers},
        )


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour, consumed by the next request to its provider."""

    status: int | None = None
    retry_after: float | None = None
    timeout: float | None = None
    drop: bool = False
    latency: float = 0.0
    after_processing: bool = False

    @property
    def processes(self) -> bool:
        """Whether the request is handled (and its messages stored) despite the fault."""
        if self.timeout or self.latency:
            return True
        if self.drop or self.status:
            return self.after_processing
        return True


@dataclass(frozen=True)
class FaultMix:
    """Faults drawn at random, each with its probability, per request (seeded, repeatable)."""

    faults: tuple[tuple[float, Fault], ...]
    seed: int = 0

    def __post_init__(self) -> None:
        if sum(rate for rate, _ in self.faults) > 1:
            raise ValueError("fault rates add up to more than 1")


@dataclass(frozen=True)
class Quota:
    """A provider's sending rate limit: ``messages_per_second``, at most ``burst`` at once.

    A request carrying more messages than ``burst`` never fits: configure a burst of at
    least the largest request. ``retry_after`` fixes the ``Retry-After`` of every 429 (``0``
    proves a client does not spin); by default it is the seconds until the request would
    fit. ``send_retry_after=False`` answers 429 without the header.
    """

    messages_per_second: float
    burst: float | None = None
    """Default: one second of messages."""
    retry_after: float | None = None
    send_retry_after: bool = True

    @property
    def capacity(self) -> float:
        return self.burst if self.burst is not None else self.messages_per_second


@dataclass
class QuotaStats:
    """What one provider's quota did: admitted requests (monotonic time, messages), 429s."""

    throttled: int = 0
    """429s served for the quota."""
    admitted: list[tuple[float, int]] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        """Messages in admitted requests."""
        return sum(n for _, n in self.admitted)

    @property
    def first(self) -> float | None:
        """When the first request was admitted (``time.monotonic``)."""
        return self.admitted[0][0] if self.admitted else None

    @property
    def last(self) -> float | None:
        return self.admitted[-1][0] if self.admitted else None

    def sustained_rate(self, burst: float) -> float:
        """Messages per second admitted beyond the initial ``burst``, first to last."""
        if len(self.admitted) < 2 or self.first is None or self.last is None:
            return 0.0
        return (self.accepted - burst) / max(self.last - self.first, 1e-9)

    def busiest(self, seconds: float = 1.0) -> int:
        """The most messages admitted in any window of ``seconds``."""
        most, start, inside = 0, 0, 0
        for at, messages in self.admitted:
            inside += messages
            while self.admitted[start][0] < at - seconds:
                inside -= self.admitted[start][1]
                start += 1
            most = max(most, inside)
        return most

    def as_json(self) -> dict[str, Any]:
        return {
            "throttled": self.throttled,
            "accepted": self.accepted,
            "first": self.first,
            "last": self.last,
        }


class _QuotaBucket:
    def __init__(self, quota: Quota, now: float) -> None:
        self.quota = quota
        self.level = quota.capacity
        self.at = now

    def take(self, messages: int, now: float) -> float | None:
        """Admit ``messages`` (None) or say how many seconds until they would fit."""
        rate = self.quota.messages_per_second
        self.level = min(self.quota.capacity, self.level + (now - self.at) * rate)
        self.at = now
        if messages <= self.level:
            self.level -= messages
            return None
        return (messages - self.level) / rate


Handler = Callable[[Request], Response]


@dataclass
class _Route:
    provider: str
    method: str
    pattern: re.Pattern[str]
    handler: Handler


class Simulator:
    """Provider APIs on ``127.0.0.1``; use as a context manager or ``start()``/``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._routes: list[_Route] = []
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._mixes: dict[str, tuple[FaultMix, random.Random]] = {}
        self._lock = threading.Lock()
        self.accepted: Counter[str] = Counter()
        """How many times each message key was accepted, across providers."""
        self.faults_served: Counter[str] = Counter()
        """How many requests got each kind of fault (``drop``, ``timeout``, ``429``, ...)."""
        self.store: dict[str, Any] = {}
        """Provider modules' state (accepted messages, events), keyed by provider name."""
        self.requests: list[tuple[str, str, str]] = []
        """(provider, method, path) of every request served, for assertions."""
        self.quota_stats: dict[str, QuotaStats] = defaultdict(QuotaStats)
        """Per provider: what its quota (:meth:`limit`) admitted and refused."""
        self._quotas: dict[str, _QuotaBucket] = {}
        self.monotonic: Callable[[], float] = time.monotonic
        """The clock quotas refill by."""
        self.after_request: dict[str, Callable[[Request, Response], None]] = {}
        """Per provider: called after a request is handled, before the answer is written
        (the demo uses it to post webhooks for what a send just produced)."""
        self._server = _Server((host, port), _handler_class(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.route("_simulator", "POST", r"/_simulator/faults", self._queue_fault)
        self.route("_simulator", "POST", r"/_simulator/quota", self._set_quota)
        self.route("_simulator", "GET", r"/_simulator/quota", self._quota_counts)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}"

    def start(self) -> Simulator:
        # A short poll interval: shutdown() waits for the serving loop's next poll, so a
        # simulator per test stays cheap to stop.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="provider-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; held requests are dropped unprocessed, later ones refused."""
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def route(self, provider: str, method: str, pattern: str, handler: Handler) -> None:
        """Serve ``method`` on paths matching ``pattern`` (named groups become params)."""
        self._routes.append(_Route(provider, method, re.compile(f"^{pattern}$"), handler))

    def inject(self, provider: str, *faults: Fault) -> None:
        """Queue faults for the next requests to ``provider`` (one fault per request)."""
        with self._lock:
            self._faults[provider].extend(faults)

    def mix(self, provider: str, mix: FaultMix | None) -> None:
        """Draw a fault from ``mix`` for every request to ``provider`` (``None`` stops it)."""
        with self._lock:
            if mix is None:
                self._mixes.pop(provider, None)
            else:
                self._mixes[provider] = (mix, random.Random(mix.seed))

    def limit(self, provider: str, quota: Quota | None) -> None:
        """Give ``provider`` a sending quota (``None`` lifts it); its counts start afresh."""
        with self._lock:
            self.quota_stats[provider] = QuotaStats()
            if quota is None:
                self._quotas.pop(provider, None)
            else:
                self._quotas[provider] = _QuotaBucket(quota, self.monotonic())

    def admit(self, provider: str, messages: int) -> dict[str, str] | None:
        """Charge a request of ``messages`` to ``provider``'s quota (called by its module).

        Returns None when it is admitted (or there is no quota), else the headers of the
        429 the module must answer without processing the request.
        """
        with self._lock:
            bucket = self._quotas.get(provider)
            if bucket is None:
                return None
            now = self.monotonic()
            stats = self.quota_stats[provider]
            wait = bucket.take(messages, now)
            if wait is None:
                stats.admitted.append((now, messages))
                return None
            stats.throttled += 1
            quota = bucket.quota
        if not quota.send_retry_after:
            return {}
        # Rounded up to the millisecond: a client that waits what it is told then fits.
        seconds = (
            quota.retry_after if quota.retry_after is not None else math.ceil(wait * 1e3) / 1e3
        )
        return {"Retry-After": f"{seconds:.3f}".rstrip("0").rstrip(".")}

    def record_accepted(self, message_keys: Iterable[str]) -> None:
        """Count messages a provider module just accepted (called by the modules)."""
        with self._lock:
            self.accepted.update(message_keys)

    def _next_fault(self, provider: str) -> Fault | None:
        with self._lock:
            queue = self._faults[provider]
            fault = queue.popleft() if queue else self._draw(provider)
            if fault is not None:
                self.faults_served[_fault_kind(fault)] += 1
            return fault

    def _draw(self, provider: str) -> Fault | None:
        if provider not in self._mixes:
            return None
        mix, rng = self._mixes[provider]
        roll = rng.random()
        for rate, fault in mix.faults:
            if roll < rate:
                return fault
            roll -= rate
        return None

    def _queue_fault(self, request: Request) -> Response:
        spec = dict(request.json())
        provider, times = spec.pop("provider"), int(spec.pop("times", 1))
        self.inject(provider, *[Fault(**spec)] * times)
        return Response(status=204)

    def _set_quota(self, request: Request) -> Response:
        spec = dict(request.json())
        provider = spec.pop("provider")
        rate = spec.pop("messages_per_second", None)
        self.limit(provider, None if rate is None else Quota(rate, **spec))
        return Response(status=204)

    def _quota_counts(self, request: Request) -> Response:
        [provider] = request.query.get("provider") or [""]
        with self._lock:
            counts = self.quota_stats[provider].as_json()
        return Response.json(counts)

    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        for route in self._routes:
            match = route.pattern.match(split.path)
            if route.method != method or match is None:
                continue
            if self._stopped.is_set():
                _drop(handler)
                return
            self.requests.append((route.provider, method, split.path))
            fault = self._next_fault(route.provider) if route.provider != "_simulator" else None
            if fault is not None and not fault.processes:
                _misbehave(handler, fault)
                return
            request = Request(
                method=method,
                path=split.path,
                query=parse_qs(split.query),
                headers=dict(handler.headers.items()),
                body=body,
                params=match.groupdict(),
            )
            try:
                response = route.handler(request)
                hook = self.after_request.get(route.provider)
                if hook is not None:
                    hook(request, response)
            except Exception as err:  # a simulator bug answers 500, like a provider would
                response = Response.json({"message": f"{type(err).__name__}: {err}"}, 500)
            pause = (fault.timeout or fault.latency) if fault is not None else 0.0
            if pause and self._stopped.wait(pause):
                _drop(handler)
                return
            if fault is not None and (fault.drop or fault.status):
                _misbehave(handler, fault)
                return
            _write(handler, response)
            return
        _write(handler, Response.json({"message": f"no route for {method} {split.path}"}, 404))


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (its timeout) before the answer is expected, not an error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def _misbehave(handler: BaseHTTPRequestHandler, fault: Fault) -> None:
    """Answer with the fault's status, or cut the connection without an answer."""
    if fault.drop:
        _drop(handler)
        return
    headers = {"Content-Type": "application/json"}
    if fault.retry_after is not None:
        headers["Retry-After"] = f"{fault.retry_after:g}"
    body = json.dumps({"message": f"simulated {fault.status}"}).encode()
    _write(handler, Response(fault.status or 500, body, headers))


def _fault_kind(fault: Fault) -> str:
    if fault.drop:
        return "drop_after" if fault.after_processing else "drop"
    if fault.timeout:
        return "timeout"
    if fault.status:
        return f"{fault.status}_after" if fault.after_processing else str(fault.status)
    return "latency" if fault.latency else "none"


def _drop(handler: BaseHTTPRequestHandler) -> None:
    """Close the connection without answering: the client sees a dropped socket."""
    handler.close_connection = True
    with contextlib.suppress(OSError):  # the client may have gone already (it timed out)
        handler.connection.shutdown(2)  # SHUT_RDWR


def _write(handler: BaseHTTPRequestHandler, response: Response) -> None:
    handler.send_response(response.status)
    for name, value in response.headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(response.body)))
    handler.end_headers()
    handler.wfile.write(response.body)


def _handler_class(simulator: Simulator) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes; with Nagle on, each keep-alive
        # response would wait ~40 ms for the client's delayed ACK.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            simulator._dispatch(self, "GET")

        def do_POST(self) -> None:
            simulator._dispatch(self, "POST")

        def do_PUT(self) -> None:
            simulator._dispatch(self, "PUT")

        def do_DELETE(self) -> None:
            simulator._dispatch(self, "DELETE")

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the simulator's requests are asserted on, not logged."""

    return _Handler
