"""Time in one place, injectable: every "now" in Mailers comes from the current :class:`Clock`.

The default clock is the system's. ``MAILERS_CLOCK`` (an ISO-8601 instant, e.g.
``2027-03-28T00:59:00Z``) starts a clock at that instant that then runs at real speed, so a
whole process tree (tests, the simulator, Dagster runs) can live on another date. Tests
install a :class:`FixedClock` with :func:`use_clock`.

Warehouse ``TIMESTAMP`` columns hold UTC without tzinfo by convention: :func:`utcnow`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Protocol

CLOCK_ENV = "MAILERS_CLOCK"


class Clock(Protocol):
    """A source of the current instant."""

    def now(self) -> datetime:
        """Now, timezone-aware in UTC."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ShiftedClock:
    """A clock that reads ``start`` when created and then runs at the system's speed."""

    def __init__(self, start: datetime) -> None:
        self.start = _aware(start)
        self._origin = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self._origin)


class FixedClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, at: datetime) -> None:
        self._at = _aware(at)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._at

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        with self._lock:
            self._at += timedelta(seconds=seconds)

    def set(self, at: datetime) -> None:
        """Move the clock to ``at``."""
        with self._lock:
            self._at = _aware(at)


_current: Clock | None = None
_last_stamp: datetime | None = None
_stamp_lock = threading.Lock()


def current() -> Clock:
    """The clock in force (read from ``MAILERS_CLOCK`` on first use)."""
    global _current
    if _current is None:
        _current = clock_from_environment()
    return _current


def clock_from_environment() -> Clock:
    """A :class:`ShiftedClock` when ``MAILERS_CLOCK`` is set, else the system clock."""
    value = os.environ.get(CLOCK_ENV)
    if not value:
        return SystemClock()
    try:
        start = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as err:
        raise ValueError(f"{CLOCK_ENV}={value!r} is not an ISO-8601 instant") from err
    return ShiftedClock(start)


def set_clock(clock: Clock | None) -> Clock | None:
    """Install ``clock`` (``None``: back to the environment's); returns the previous one."""
    global _current, _last_stamp
    with _stamp_lock:
        previous, _current = _current, clock
        _last_stamp = None  # stamps are ordered per clock: a new clock starts afresh
    return previous


@contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Install ``clock`` for the duration of a ``with`` block."""
    previous = set_clock(clock)
    try:
        yield clock
    finally:
        set_clock(previous)


def now() -> datetime:
    """Now, timezone-aware in UTC."""
    return current().now()


def utcnow() -> datetime:
    """Now in UTC without tzinfo (warehouse ``TIMESTAMP`` columns hold UTC by convention)."""
    return now().replace(tzinfo=None)


def stamp() -> datetime:
    """:func:`utcnow`, but strictly after every earlier stamp taken on the current clock.

    For rows whose order matters (the send ledger): a retry appends ``not_sent`` and then
    ``dispatching`` for one message microseconds apart, and those must never tie, however
    coarse, frozen or stepped back the clock is.
    """
    global _last_stamp
    with _stamp_lock:
        moment = utcnow()
        if _last_stamp is not None and moment <= _last_stamp:
            moment = _last_stamp + timedelta(microseconds=1)
        _last_stamp = moment
        return moment


def epoch() -> float:
    """Now as Unix seconds (webhook timestamps, provider query parameters)."""
    return now().timestamp()


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
