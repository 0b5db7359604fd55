"""When to try a delivery again, when to give up, and when to disable a subscriber.

    attempt n fails ──► elapsed since attempt 1 ≥ give_up_after ──► dead letter
                   └──► otherwise: retry at now + delay(n), never past first + give_up_after

``delay(n) = min(first_delay * factor**(n-1), max_delay)``, moved by a jitter of up to
``±jitter`` of itself. The jitter is drawn from a generator seeded by the delivery and the
attempt, so it spreads retries of many deliveries apart yet is the same whenever it is
recomputed. The last retry lands exactly at ``first + give_up_after``, so a delivery is
tried for the whole period (three days by default) before it is dead-lettered.

A subscriber is disabled when it has failed without one success since ``failing_since``
for at least ``disable.after_hours`` and at least ``disable.min_failures`` attempts.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailers.subscribers_config import DisableConfig, RetryConfig


def delay_seconds(retry: RetryConfig, attempt: int, seed: str) -> float:
    """The wait after failed attempt ``attempt`` (1-based), jittered deterministically."""
    if attempt < 1:
        raise ValueError("attempts count from 1")
    # An exponent past ~1000 overflows a float; the cap is reached long before.
    base = min(
        retry.first_delay_seconds * retry.factor ** min(attempt - 1, 200), retry.max_delay_seconds
    )
    digest = hashlib.sha256(f"{seed}\x1f{attempt}".encode()).digest()
    spread = random.Random(int.from_bytes(digest[:8], "big")).uniform(-1.0, 1.0)
    return max(1.0, base * (1.0 + retry.jitter * spread))


@dataclass(frozen=True, slots=True)
class Next:
    """What follows a failed attempt: a retry at ``retry_at``, or giving up."""

    retry_at: datetime | None

    @property
    def give_up(self) -> bool:
        return self.retry_at is None


def after_failure(
    retry: RetryConfig, attempt: int, first_attempted_at: datetime, now: datetime, seed: str
) -> Next:
    """The decision after attempt ``attempt`` failed at ``now``."""
    deadline = first_attempted_at + timedelta(seconds=retry.give_up_after_seconds)
    if now >= deadline:
        return Next(None)
    return Next(min(now + timedelta(seconds=delay_seconds(retry, attempt, seed)), deadline))


def retry_offsets(retry: RetryConfig, seed: str, limit: int = 10_000) -> list[float]:
    """Seconds after attempt 1 of every attempt of a delivery that always fails (attempt 1
    at 0): the schedule ``mailers webhooks status`` and the README describe."""
    start = datetime(2000, 1, 1)
    offsets, at, attempt = [0.0], start, 1
    while attempt < limit:
        decision = after_failure(retry, attempt, start, at, seed)
        if decision.retry_at is None:
            break
        at = decision.retry_at
        attempt += 1
        offsets.append((at - start).total_seconds())
    return offsets


def should_disable(
    disable: DisableConfig, failing_since: datetime | None, failures: int, now: datetime
) -> bool:
    """Whether a subscriber failing since ``failing_since`` (``failures`` attempts) is disabled."""
    if failing_since is None:
        return False
    return (
        now - failing_since >= timedelta(hours=disable.after_hours)
        and failures >= disable.min_failures
    )
