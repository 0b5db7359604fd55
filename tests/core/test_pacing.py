"""The pacer's token bucket and rate-limit backoff, on a fake clock (nothing really sleeps)."""

from __future__ import annotations

import random
import threading

import pytest

from mailers.pacing import (
    Pacer,
    ProviderQuota,
    ThrottleWaitExceeded,
    TokenBucket,
    daily_limit,
    pace_limit,
)
from mailers.policy_config import PacingConfig


class FakeTime:
    """A monotonic clock that only moves when someone sleeps (thread-safe)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "a pacer never sleeps for nothing: that would be a spin"
        with self._lock:
            self.slept.append(seconds)
            self.now += seconds


def pacer(time: FakeTime, rate: float | None, **options: float) -> Pacer:
    return Pacer(rate, clock=time.clock, sleep=time.sleep, rng=random.Random(7), **options)


def test_calls_are_spaced_at_the_rate_after_the_burst() -> None:
    time = FakeTime()
    paced = pacer(time, 10.0, burst=5)
    start = time.now

    for _ in range(15):
        assert paced.acquire(1) == 0.0  # no rate-limit pause: pacing is not throttling

    assert time.now - start == pytest.approx((15 - 5) / 10)


def test_the_burst_is_the_largest_wave_so_a_full_wave_goes_at_once() -> None:
    time = FakeTime()
    paced = Pacer.of(
        PacingConfig(messages_per_second=100), largest_wave=500, clock=time.clock, sleep=time.sleep
    )

    paced.acquire(500)
    assert time.slept == []
    paced.acquire(500)
    assert sum(time.slept) == pytest.approx(5.0)


def test_a_call_larger_than_the_bucket_goes_once_it_is_full_and_the_debt_is_paid() -> None:
    time = FakeTime()
    paced = pacer(time, 10.0, burst=5)

    paced.acquire(20)
    assert time.slept == []
    paced.acquire(1)
    assert sum(time.slept) == pytest.approx((20 - 5 + 1) / 10)


@pytest.mark.parametrize("retry_after", [0.0, None])
def test_retry_after_zero_or_missing_waits_the_minimum_backoff(retry_after: float | None) -> None:
    time = FakeTime()
    paced = pacer(time, 100.0, min_backoff=1.5, jitter=0.1)

    pause = paced.throttled(retry_after)
    waited = paced.acquire(1)

    assert 1.5 <= pause <= 1.5 * 1.1
    assert waited == pytest.approx(pause)
    assert sum(time.slept) == pytest.approx(pause)


def test_retry_after_longer_than_the_backoff_is_honoured_for_every_caller() -> None:
    time = FakeTime()
    paced = pacer(time, None, min_backoff=1.0, jitter=0.0)

    paced.throttled(4.0)

    assert paced.pause_remaining() == pytest.approx(4.0)
    assert paced.acquire(1) == pytest.approx(4.0)
    assert paced.acquire(1) == 0.0  # the pause is over for the next caller too


def test_jitter_stays_within_its_bounds_and_varies() -> None:
    time = FakeTime()
    paced = pacer(time, 100.0, min_backoff=2.0, jitter=0.25)
    pauses = []
    for _ in range(200):
        pauses.append(paced.throttled(2.0))
        time.sleep(paced.pause_remaining() + 0.001)

    assert all(2.0 <= p <= 2.5 for p in pauses)
    assert len({round(p, 6) for p in pauses}) > 100


def test_answers_of_calls_in_flight_together_back_the_pace_off_once() -> None:
    time = FakeTime()
    paced = pacer(time, 100.0, min_backoff=0.5, decrease=0.5)

    for _ in range(4):  # four calls of one wave all answered 429
        paced.throttled(None)
    assert paced.rate == pytest.approx(50.0)
    assert paced.throttles == 4

    time.sleep(paced.pause_remaining())
    paced.throttled(None)  # a new answer after the pause: a new decrease
    assert paced.rate == pytest.approx(25.0, rel=0.01)


def test_the_pace_recovers_additively_up_to_the_configured_rate() -> None:
    time = FakeTime()
    paced = pacer(time, 100.0, min_backoff=1.0, jitter=0.0, decrease=0.9, recovery=0.01)

    paced.throttled(None)
    time.sleep(1.0)  # the pause
    assert paced.rate == pytest.approx(90.0)
    time.sleep(5.0)
    assert paced.rate == pytest.approx(95.0)  # 1% of 100 per second
    time.sleep(60.0)
    assert paced.rate == pytest.approx(100.0)


def test_many_rate_limit_answers_never_slow_the_pace_below_its_floor() -> None:
    time = FakeTime()
    paced = pacer(time, 100.0, min_backoff=0.5, jitter=0.0, decrease=0.5, recovery=0.0)
    for _ in range(20):
        paced.throttled(None)
        time.sleep(paced.pause_remaining())

    assert paced.rate == pytest.approx(10.0)  # floor: 10% of the configured pace


def test_an_unpaced_account_is_only_paused_never_slowed_to_a_guess() -> None:
    time = FakeTime()
    paced = pacer(time, None, min_backoff=0.5, jitter=0.0)
    paced.acquire(100)
    paced.throttled(None)

    assert paced.acquire(100) == pytest.approx(0.5)
    assert paced.rate is None
    assert paced.acquire(10_000) == 0.0 and time.slept == [pytest.approx(0.5)]


def test_a_pause_past_the_patience_left_raises_and_takes_nothing() -> None:
    time = FakeTime()
    paced = pacer(time, 10.0, burst=1, min_backoff=1.0, jitter=0.0)
    paced.throttled(30.0)

    with pytest.raises(ThrottleWaitExceeded, match=r"asked to wait 30\.0s") as caught:
        paced.acquire(1, patience=10.0)

    assert caught.value.remaining == pytest.approx(30.0)
    assert time.slept == []
    assert paced.acquire(1, patience=40.0) == pytest.approx(30.0)
    assert time.slept == [pytest.approx(30.0)]  # the bucket was still full: only the pause


def test_concurrent_callers_never_get_more_than_the_bucket_allows() -> None:
    time = FakeTime()
    paced = pacer(time, 100.0, burst=10, min_backoff=0.5)
    grants: list[tuple[float, int]] = []
    lock = threading.Lock()
    start = time.now

    def worker() -> None:
        for _ in range(25):
            paced.acquire(2)
            with lock:
                grants.append((time.clock(), 2))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(n for _, n in grants) == 400
    granted = 0
    for at, n in sorted(grants):
        granted += n
        # Never more than the burst plus what the rate earned by then (the clock only
        # moves forward, so a grant's recorded time is at or after when it was made).
        assert granted <= 10 + 100 * (at - start) + 2


def test_a_rate_limit_heard_by_one_caller_holds_every_caller() -> None:
    time = FakeTime()
    paced = pacer(time, None, min_backoff=3.0, jitter=0.0)
    paced.throttled(None)
    after: list[float] = []

    def worker() -> None:
        paced.acquire(1)
        after.append(time.clock())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(after) == 4 and min(after) >= 1000.0 + 3.0


def test_a_pacer_refuses_a_backoff_that_could_spin() -> None:
    with pytest.raises(ValueError, match="never spin"):
        Pacer(10.0, min_backoff=0.0)


def test_the_tighter_of_config_and_provider_quota_wins() -> None:
    config = PacingConfig(messages_per_second=50, daily_cap=10_000)
    quota = ProviderQuota(max_send_rate=14.0, max_24_hour_send=50_000, sent_last_24_hours=49_990)

    assert pace_limit(config, quota) == 14.0
    assert pace_limit(config) == 50
    assert pace_limit(PacingConfig()) is None
    assert daily_limit(config, quota) == 10_000
    assert daily_limit(PacingConfig(), quota) == 50_000
    assert quota.remaining_24_hours == 10
    assert ProviderQuota().remaining_24_hours is None


def test_the_bucket_refuses_a_rate_it_could_never_refill_at() -> None:
    with pytest.raises(ValueError, match="positive rate"):
        TokenBucket(0.0, 5.0, now=0.0)
