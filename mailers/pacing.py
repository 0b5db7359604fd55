"""Pacing one provider account: a token bucket, and backing off when the provider says so.

A send asks its account's :class:`Pacer` before every provider call
(:meth:`Pacer.acquire` with the call's message count) and tells it about every rate-limit
answer (:meth:`Pacer.throttled`). The pacer:

* spaces calls with a :class:`TokenBucket` refilled at the account's pace in messages per
  second, holding at most ``burst`` tokens (for an account, its largest wave of calls in
  flight together, so a full wave can always go once the bucket has refilled);
* after a rate-limit answer, makes every caller wait at least
  ``max(min_backoff_seconds, Retry-After)`` plus up to ``jitter`` of it more (from an
  injectable random): a ``Retry-After: 0`` or a missing header never makes a caller spin;
* backs its pace off on each rate-limit answer (multiplicative decrease: ``decrease``
  times the current pace, never below ``floor`` of the configured one) and recovers it
  slowly (additive: ``recovery`` of the configured pace per second), so a run settles just
  under the provider's real quota. One decrease per pause: the answers of calls that were
  in flight together count once. An account without a configured pace is only paused:
  guessing a pace from what got through (timeouts and pauses included) would throttle it
  far below what the provider takes.

Nothing here sleeps for real or reads the wall clock: ``clock`` (monotonic seconds) and
``sleep`` are injected, so tests drive time. The pacer is thread-safe; each sender the
registry builds has its own, shared by every send through it.

:class:`ProviderQuota` is what a provider publishes about an account's limits (SES
``GetSendQuota``); :func:`pace_limit` and :func:`daily_limit` combine it with the config.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from mailers.policy_config import PacingConfig

Clock = Callable[[], float]
Sleep = Callable[[float], None]

_ROUNDING = 1e-6
"""Tokens short of a call that count as there, and seconds of a pause that count as over."""


@dataclass(frozen=True)
class ProviderQuota:
    """An account's sending limits as the provider reports them (None: not published)."""

    max_send_rate: float | None = None
    """Messages per second."""
    max_24_hour_send: int | None = None
    """Messages in a rolling 24 hours."""
    sent_last_24_hours: int | None = None

    @property
    def remaining_24_hours(self) -> int | None:
        """Messages the account may still send in the rolling 24 hours, if known."""
        if self.max_24_hour_send is None:
            return None
        return max(0, self.max_24_hour_send - (self.sent_last_24_hours or 0))


def pace_limit(config: PacingConfig, quota: ProviderQuota | None = None) -> float | None:
    """Messages per second to pace at: the tighter of the config and the provider's quota."""
    limits = [config.messages_per_second, quota.max_send_rate if quota else None]
    known = [limit for limit in limits if limit is not None and limit > 0]
    return min(known) if known else None


def daily_limit(config: PacingConfig, quota: ProviderQuota | None = None) -> int | None:
    """Messages per day: the tighter of ``daily_cap`` and the provider's 24-hour quota."""
    limits = [config.daily_cap, quota.max_24_hour_send if quota else None]
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


class ThrottleWaitExceeded(Exception):
    """The rate-limit pause in force lasts longer than the caller is willing to wait."""

    def __init__(self, remaining: float, patience: float, reason: str) -> None:
        super().__init__(
            f"{reason}: the provider asked to wait {remaining:.1f}s more, past the "
            f"{patience:.1f}s of throttle waiting this send has left"
        )
        self.remaining = remaining
        self.patience = patience


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` held; not thread-safe on its own.

    :meth:`take` may drive the level below zero (a call larger than the bucket goes once
    the bucket is full); the debt is refilled before anything else goes.
    """

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError(f"a bucket needs a positive rate and capacity: {rate}, {capacity}")
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self._at = now

    def refill(self, now: float) -> None:
        """Add what ``rate`` earned since the last refill, up to ``capacity``."""
        if now > self._at:
            self.level = min(self.capacity, self.level + (now - self._at) * self.rate)
        self._at = max(self._at, now)

    def wait_for(self, tokens: float, now: float) -> float:
        """Seconds until ``tokens`` (at most ``capacity``) are in the bucket."""
        self.refill(now)
        missing = min(tokens, self.capacity) - self.level
        # A rounding error's worth of a token is there: waiting for it could not move a
        # float clock, and the caller would spin.
        return missing / self.rate if missing > _ROUNDING else 0.0

    def take(self, tokens: float) -> None:
        """Take ``tokens`` (call :meth:`wait_for` first: it refills)."""
        self.level -= tokens


class Pacer:
    """One provider account's pace; see the module docstring.

    ``rate`` (messages per second) is the ceiling the pace recovers to; ``None`` sends
    unpaced, only pausing after rate-limit answers. ``burst`` is the bucket's capacity
    (default: one second at ``rate``).
    """

    def __init__(
        self,
        rate: float | None,
        *,
        burst: float | None = None,
        min_backoff: float = 1.0,
        max_throttle_wait: float = 900.0,
        jitter: float = 0.1,
        decrease: float = 0.9,
        recovery: float = 0.01,
        floor: float = 0.1,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if min_backoff <= 0:
            raise ValueError("min_backoff must be positive: a rate-limit answer must never spin")
        if not 0 < decrease < 1:
            raise ValueError("decrease must be between 0 and 1")
        if jitter < 0 or recovery < 0:
            raise ValueError("jitter and recovery cannot be negative")
        self.ceiling = rate
        self.burst = burst
        self.min_backoff = min_backoff
        self.max_throttle_wait = max_throttle_wait
        self.jitter = jitter
        self.decrease = decrease
        self.recovery = recovery
        self.floor = floor
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        now = clock()
        self._bucket = self._make_bucket(rate, now) if rate is not None else None
        self._paused_until = now
        self._recovered_at = now
        self._reason = "rate limited"
        self.throttles = 0
        """Rate-limit answers heard."""

    @classmethod
    def of(
        cls,
        config: PacingConfig,
        *,
        largest_wave: int,
        quota: ProviderQuota | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        rng: random.Random | None = None,
    ) -> Pacer:
        """The pacer an account's ``pacing:`` config (and its provider quota) ask for.

        The bucket holds the most messages the account asks for at once (a wave: its
        largest call times the calls in flight together), so a full wave can always go and
        what the rate earns while a wave is in flight is not thrown away.
        """
        return cls(
            pace_limit(config, quota),
            burst=float(largest_wave),
            min_backoff=config.min_backoff_seconds,
            max_throttle_wait=config.max_throttle_wait_seconds,
            clock=clock,
            sleep=sleep,
            rng=rng,
        )

    @property
    def rate(self) -> float | None:
        """The pace now, in messages per second (None: unpaced)."""
        with self._lock:
            self._recover(self._clock())
            return self._bucket.rate if self._bucket else None

    def pause_remaining(self) -> float:
        """Seconds left of the rate-limit pause in force (0 when there is none)."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())

    def acquire(self, messages: int, *, patience: float = math.inf) -> float:
        """Wait until ``messages`` may go to the provider; return the seconds spent paused.

        The seconds returned are the part of the wait due to rate-limit pauses (pacing
        itself is not throttling). Raises :class:`ThrottleWaitExceeded`, having taken
        nothing, when a pause would keep the caller waiting more than ``patience`` seconds
        in all.
        """
        paused = 0.0
        while True:
            with self._lock:
                now = self._clock()
                remaining = self._paused_until - now
                if remaining > _ROUNDING:
                    if paused + remaining > patience:
                        raise ThrottleWaitExceeded(remaining, patience - paused, self._reason)
                else:
                    self._recover(now)
                    wait = self._bucket.wait_for(messages, now) if self._bucket else 0.0
                    if wait <= 0:
                        if self._bucket is not None:
                            self._bucket.take(messages)
                        return paused
            if remaining > _ROUNDING:
                self._sleep(remaining)
                paused += remaining
            else:
                self._sleep(wait)

    def throttled(self, retry_after: float | None, *, reason: str = "rate limited") -> float:
        """Hear a rate-limit answer (``reason``); return the pause it set.

        Every caller waits at least ``max(min_backoff, retry_after)`` from now, plus up to
        ``jitter`` of it; the pace backs off once per pause.
        """
        base = max(self.min_backoff, retry_after or 0.0)
        pause = base * (1.0 + self.jitter * self._rng.random())
        with self._lock:
            now = self._clock()
            self.throttles += 1
            self._reason = reason
            if now >= self._paused_until:
                self._back_off(now)
            self._paused_until = max(self._paused_until, now + pause)
            self._recovered_at = self._paused_until  # no recovery while paused
            return self._paused_until - now

    def _back_off(self, now: float) -> None:
        # The floor keeps 429s that are not about the pace (a provider's hiccups, a
        # shared quota) from slowing a run to a crawl it would take minutes to recover from.
        if self._bucket is not None and self.ceiling is not None:
            self._bucket.refill(now)
            lowest = self.floor * self.ceiling
            self._bucket.rate = max(lowest, self._bucket.rate * self.decrease)

    def _recover(self, now: float) -> None:
        """Raise the pace additively since the last change, up to the ceiling."""
        bucket, ceiling = self._bucket, self.ceiling
        elapsed = now - self._recovered_at
        if bucket is None or ceiling is None or elapsed <= 0:
            return
        bucket.refill(now)
        bucket.rate = min(ceiling, bucket.rate + self.recovery * ceiling * elapsed)
        self._recovered_at = now

    def _make_bucket(self, rate: float, now: float) -> TokenBucket:
        return TokenBucket(rate, self.burst or max(rate, 1.0), now)
