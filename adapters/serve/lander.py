"""Durable landing with group commit: many requests, one write and one fsync per batch.

Request handlers call :meth:`GroupCommitLander.land` (the :data:`~adapters.serve.
landing_port.Land` port) and await it. One writer thread takes every payload waiting,
appends each (kind, account)'s lines to its segment in one write, makes them durable once
(one fsync; with S3 landing too, before any upload), records the requests' replay tokens,
and then wakes every waiter; while it does, the next batch gathers. A waiter is woken with
the exception when its batch could not be made durable: nothing was acknowledged, its
tokens are released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from adapters.serve.replay import SharedReplayStore, Token
from adapters.serve.segments import Key

log = logging.getLogger(__name__)


class SegmentStore(Protocol):
    """Where group commits go: :class:`~adapters.serve.segments.LocalSegments` or S3."""

    fsyncs: int

    def commit(self, groups: Mapping[Key, Sequence[bytes]]) -> dict[Key, Exception]:
        """Make each group's lines durable; the keys that failed, with why."""
        ...

    def rotate_due(self) -> int: ...

    def recover(self) -> int: ...

    def check_writable(self) -> None:
        """Raise ``OSError`` when nothing could be landed now."""
        ...

    def close(self) -> None: ...


@dataclass
class _Item:
    key: Key
    line: bytes
    tokens: Sequence[Token]
    loop: asyncio.AbstractEventLoop | None
    waiter: Any  # an asyncio.Future (loop set) or a _Blocking
    error: BaseException | None = None


@dataclass
class _Call:
    function: Callable[[], Any]
    waiter: _Blocking


@dataclass
class _Blocking:
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None

    def wait(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


class LandingFailed(Exception):
    """The payload could not be made durable; nothing was acknowledged."""


class GroupCommitLander:
    """The writer thread of one receiver process, over one :class:`SegmentStore`."""

    def __init__(
        self,
        store: SegmentStore,
        replay: SharedReplayStore,
        *,
        max_batch: int = 4096,
        tick_seconds: float = 0.25,
        recover_every_seconds: float = 30.0,
    ) -> None:
        self.store = store
        self.replay = replay
        self.max_batch = max_batch
        self.tick_seconds = tick_seconds
        self.recover_every_seconds = recover_every_seconds
        self.commits = 0
        """Group commits made (each one write and one durability point per key)."""
        self.landed = 0
        self._queue: queue.SimpleQueue[_Item | _Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> GroupCommitLander:
        """Recover dead processes' segments, then start the writer thread."""
        recovered = self.store.recover()
        if recovered:
            log.info("recovered %d segment(s) left by stopped receivers", recovered)
        self._thread = threading.Thread(target=self._run, name="mailers-lander", daemon=True)
        self._thread.start()
        return self

    async def land(self, kind: str, account: str, line: bytes) -> None:
        """Land one payload line durably (the :data:`Land` port); raises when it could not."""
        await self.land_with_tokens(kind, account, line, ())

    async def land_with_tokens(
        self, kind: str, account: str, line: bytes, tokens: Sequence[Token]
    ) -> None:
        """Land one line, then record its request's replay tokens as seen."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._put(_Item((kind, account), _checked(line), tokens, loop, future))
        await future

    def land_blocking(
        self, kind: str, account: str, line: bytes, tokens: Sequence[Token] = ()
    ) -> None:
        """:meth:`land` for a thread that is not running an event loop."""
        waiter = _Blocking()
        self._put(_Item((kind, account), _checked(line), tokens, None, waiter))
        waiter.wait()

    def rotate_due(self) -> int:
        """Close the segments due by age now (on the writer thread); how many.

        The writer also does this on its own every ``tick_seconds``; tests moving a fixed
        clock call it to close segments at a known moment.
        """
        return int(self._call(self.store.rotate_due))

    def check_writable(self) -> None:
        """Raise when nothing could land now (the writer stopped, the store refuses)."""
        if self._thread is None or not self._thread.is_alive():
            raise LandingFailed("the landing writer is not running")
        self.store.check_writable()

    def close(self) -> None:
        """Finish what is queued, close every open segment, stop the writer."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        else:
            self.store.close()

    def _put(self, item: _Item | _Call) -> None:
        if self._closed or self._thread is None:
            raise LandingFailed("the lander is not running")
        self._queue.put(item)

    def _call(self, function: Callable[[], Any]) -> Any:
        waiter = _Blocking()
        self._put(_Call(function, waiter))
        return waiter.wait()

    def _run(self) -> None:
        last_recovery = time.monotonic()
        stopping = False
        while not stopping:
            try:
                batch = [self._queue.get(timeout=self.tick_seconds)]
            except queue.Empty:
                batch = []
            while batch and len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = None in batch
            self._commit([i for i in batch if isinstance(i, _Item)])
            for call in (i for i in batch if isinstance(i, _Call)):
                _run_call(call)
            try:
                self.store.rotate_due()
                if time.monotonic() - last_recovery >= self.recover_every_seconds:
                    last_recovery = time.monotonic()
                    self.store.recover()
            except Exception:
                log.exception("landing housekeeping failed; retrying on the next tick")
        try:
            self.store.close()
        except Exception:
            log.exception("closing the open segments failed; the next start recovers them")

    def _commit(self, items: list[_Item]) -> None:
        if not items:
            return
        groups: dict[Key, list[bytes]] = defaultdict(list)
        for item in items:
            groups[item.key].append(item.line)
        try:
            failed = self.store.commit(groups)
        except Exception as err:
            log.exception("a group commit failed")
            failed = dict.fromkeys(groups, err)
        self.commits += 1
        landed = [i for i in items if i.key not in failed]
        for item in items:
            if item.key in failed:
                item.error = LandingFailed(
                    f"could not land for {item.key[0]} account {item.key[1]}: {failed[item.key]}"
                )
        for key, why in failed.items():
            log.warning("landing failed for %s/%s: %s", key[0], key[1], why)
        self.landed += len(landed)
        try:
            self.replay.commit(_tokens(landed))
        except Exception:  # landed is what matters: a duplicate is dropped at ingestion
            log.exception("could not record replay tokens of landed requests")
        self.replay.release(_tokens(i for i in items if i.error is not None))
        _wake(items)


def _checked(line: bytes) -> bytes:
    line = line.rstrip(b"\n")
    if b"\n" in line:
        raise ValueError("a landed payload must be a single line of JSON")
    return line + b"\n"


def _tokens(items: Iterable[_Item]) -> list[Token]:
    return [token for item in items for token in item.tokens]


def _run_call(call: _Call) -> None:
    try:
        call.waiter.result = call.function()
    except BaseException as err:
        call.waiter.error = err
    call.waiter.done.set()


def _wake(items: list[_Item]) -> None:
    """One wake-up per event loop for the whole batch, not one per waiter."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Item]] = defaultdict(list)
    for item in items:
        if item.loop is None:
            item.waiter.error = item.error
            item.waiter.done.set()
        else:
            by_loop[item.loop].append(item)
    for loop, waiting in by_loop.items():
        # A loop that has stopped has nobody waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, waiting)


def _settle(items: list[_Item]) -> None:
    for item in items:
        if item.waiter.done():
            continue  # the request was cancelled (client gone)
        if item.error is None:
            item.waiter.set_result(None)
        else:
            item.waiter.set_exception(item.error)
