"""Time in one place, injectable: every "now" in Mailers comes from the current :class:`Clock`.

The default clock is the system's. ``MAILERS_CLOCK`` (an ISO-8601 instant, e.g.
``2027-03-28T00:59:00Z``) starts a clock at that instant that then runs at real speed, so a
whole process tree (tests, the simulator, Dagster runs) can live on another date: the first
process to read it exports ``MAILERS_CLOCK_ANCHOR`` (when, on the system clock, the shifted
clock read that instant), so child processes, and a return to the environment's clock with
``set_clock(None)``, continue the same timeline instead of starting it again. Tests install
a :class:`FixedClock` with :func:`use_clock`.

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
ANCHOR_ENV = "MAILERS_CLOCK_ANCHOR"
"""``<MAILERS_CLOCK value>@<Unix seconds>``: when, on the system clock, that value was now."""


class Clock(Protocol):
    """A source of the current instant.

    The clocks here also map an instant the system clock recorded onto themselves
    (``from_system``); see :func:`from_system` for clocks that do not.
    """

    def now(self) -> datetime:
        """Now, timezone-aware in UTC."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def from_system(self, moment: datetime) -> datetime:
        """``moment`` itself."""
        return _aware(moment)


class ShiftedClock:
    """A clock that read ``start`` at system time ``anchor`` (default: when created) and
    runs at the system's speed: a fixed offset from the system clock."""

    def __init__(self, start: datetime, anchor: float | None = None) -> None:
        self.start = _aware(start)
        self.anchor = time.time() if anchor is None else anchor

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.time() - self.anchor)

    def from_system(self, moment: datetime) -> datetime:
        """``moment`` moved by this clock's shift."""
        return self.start + timedelta(seconds=_aware(moment).timestamp() - self.anchor)


class FixedClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, at: datetime) -> None:
        self._at = _aware(at)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._at

    def from_system(self, moment: datetime) -> datetime:
        """The fixed instant: this clock reads the same whenever the system recorded."""
        return self.now()

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
    """A :class:`ShiftedClock` when ``MAILERS_CLOCK`` is set, else the system clock.

    The shifted clock is anchored by ``MAILERS_CLOCK_ANCHOR`` when it was exported for the
    same ``MAILERS_CLOCK`` value; otherwise it starts now and exports its anchor for child
    processes.
    """
    value = os.environ.get(CLOCK_ENV)
    if not value:
        return SystemClock()
    try:
        start = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as err:
        raise ValueError(f"{CLOCK_ENV}={value!r} is not an ISO-8601 instant") from err
    anchored, _, anchor = os.environ.get(ANCHOR_ENV, "").rpartition("@")
    try:
        at = float(anchor) if anchored == value else None
    except ValueError:
        at = None
    clock = ShiftedClock(start, at)
    os.environ[ANCHOR_ENV] = f"{value}@{clock.anchor!r}"
    return clock


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


def from_system(moment: datetime) -> datetime:
    """A moment the system clock recorded (e.g. a Dagster run's creation), on this clock.

    On a shifted clock that is the moment moved by the shift, so a run created a minute
    ago was created a minute before now, and the same answer is given all through a run.
    A fixed clock gives its fixed instant. A clock without ``from_system`` gives now
    minus the time elapsed on the system clock since ``moment``.
    """
    clock = current()
    translate = getattr(clock, "from_system", None)
    if callable(translate):
        translated: datetime = translate(moment)
        return translated
    return clock.now() - (datetime.now(UTC) - _aware(moment))


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
