"""The circuit breaker's state machine and how a wave's results are judged, on a fixed clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from mailers.breaker import BreakerState, CircuitBreaker, Transition, WaveOutcome, judge_wave
from mailers.clock import FixedClock, use_clock
from mailers.messages import SendOutcome, SendResult
from mailers.policy_config import BreakerConfig

START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
OK = WaveOutcome.SUCCESS
FAIL = WaveOutcome.FAILURE


@pytest.fixture
def fixed() -> Iterator[FixedClock]:
    pinned = FixedClock(START)
    with use_clock(pinned):
        yield pinned


def breaker(**config: float) -> CircuitBreaker:
    defaults: dict[str, float] = {
        "consecutive_failures": 3,
        "error_rate": 0.5,
        "window_calls": 4,
        "open_seconds": 60,
    }
    return CircuitBreaker("acme_pm", BreakerConfig.model_validate({**defaults, **config}))


def call(
    b: CircuitBreaker, outcome: WaveOutcome, reason: str = "500 from the provider"
) -> Transition | None:
    assert b.start_call(), b.why()
    return b.end_call(outcome, reason if outcome == FAIL else None)


def test_it_opens_on_consecutive_failures_with_the_evidence(fixed: FixedClock) -> None:
    b = breaker(window_calls=20)
    assert call(b, FAIL) is None
    assert call(b, FAIL) is None
    opened = call(b, FAIL, "provider unavailable (503) (gave up after 3 attempts)")

    assert opened is not None and b.state == BreakerState.OPEN
    assert (opened.from_state, opened.to_state) == (BreakerState.CLOSED, BreakerState.OPEN)
    assert opened.trigger == "3 failures in a row (opens at 3)"
    assert opened.evidence.consecutive_failures == 3
    assert (opened.evidence.window_calls, opened.evidence.window_failures) == (3, 3)
    assert opened.evidence.last_failure == "provider unavailable (503) (gave up after 3 attempts)"
    assert opened.at == opened.opened_at == START
    assert opened.probe_at == datetime(2026, 11, 23, 8, 1, tzinfo=UTC)
    assert not b.start_call()
    assert "open: opened 2026-11-23 08:00:00 UTC after 3 failures in a row" in b.why()
    assert "next probe at 2026-11-23 08:01:00 UTC" in b.why()


def test_a_success_resets_the_consecutive_count(fixed: FixedClock) -> None:
    b = breaker(window_calls=20)
    for outcome in (FAIL, FAIL, OK, FAIL, FAIL, OK):
        assert call(b, outcome) is None
    assert b.state == BreakerState.CLOSED


def test_the_error_rate_opens_it_only_once_the_window_is_full(fixed: FixedClock) -> None:
    b = breaker(consecutive_failures=10, error_rate=0.5, window_calls=4)
    assert call(b, FAIL) is None  # 1 of 1 failed: a rate of 1.0, but the window is not full
    assert call(b, OK) is None
    assert call(b, FAIL) is None  # 2 of 3
    assert b.state == BreakerState.CLOSED
    opened = call(b, FAIL)  # 3 of 4: the window is full

    assert opened is not None and b.state == BreakerState.OPEN
    assert opened.trigger == "error rate 0.75 over the last 4 calls (opens at 0.50)"
    assert opened.evidence.error_rate == 0.75


def test_the_window_slides_over_the_last_calls(fixed: FixedClock) -> None:
    b = breaker(consecutive_failures=10, error_rate=0.5, window_calls=4)
    for outcome in (FAIL, OK, OK, OK, OK, OK):
        assert call(b, outcome) is None
    # The early failure has slid out: 1 failure in the last 4 is not 0.5.
    assert call(b, FAIL) is None
    opened = call(b, FAIL)  # OK OK FAIL FAIL: 2 of 4
    assert opened is not None and opened.evidence.window_failures == 2


def test_it_half_opens_after_open_seconds_and_admits_one_probe_at_a_time(
    fixed: FixedClock,
) -> None:
    b = breaker(consecutive_failures=1)
    call(b, FAIL)
    fixed.advance(59.9)
    assert b.refresh() is None and not b.available()

    fixed.advance(0.1)
    half = b.refresh()
    assert half is not None and half.trigger == "open for 60s"
    assert (half.from_state, half.to_state) == (BreakerState.OPEN, BreakerState.HALF_OPEN)
    assert half.opened_at == START and half.opened_because == "1 failure in a row (opens at 1)"
    assert b.start_call()
    assert not b.start_call() and not b.available()
    assert "half-open (a probe call is in flight)" in b.why()


def test_a_good_probe_closes_it_with_a_fresh_window(fixed: FixedClock) -> None:
    b = breaker()
    for _ in range(3):
        call(b, FAIL)
    fixed.advance(60)
    b.refresh()
    closed = call(b, OK)

    assert closed is not None and closed.to_state == BreakerState.CLOSED
    assert closed.trigger == "probe answered" and closed.opened_at is None
    assert b.evidence().window_calls == 0 and b.evidence().consecutive_failures == 0
    assert call(b, FAIL) is None and call(b, FAIL) is None  # old failures do not count


def test_a_bad_probe_opens_it_again_for_open_seconds_afresh(fixed: FixedClock) -> None:
    b = breaker(consecutive_failures=1)
    call(b, FAIL)
    fixed.advance(90)
    b.refresh()
    reopened = call(b, FAIL, "timeout after sending")

    assert reopened is not None
    assert (reopened.from_state, reopened.to_state) == (BreakerState.HALF_OPEN, BreakerState.OPEN)
    assert reopened.trigger == "probe failed: timeout after sending"
    assert reopened.opened_at == datetime(2026, 11, 23, 8, 1, 30, tzinfo=UTC)
    fixed.advance(59)
    assert b.refresh() is None and not b.available()
    fixed.advance(1)
    assert b.refresh() is not None and b.available()


def test_a_probe_that_was_not_made_or_not_counted_frees_the_probe_slot(
    fixed: FixedClock,
) -> None:
    b = breaker(consecutive_failures=1)
    call(b, FAIL)
    fixed.advance(60)
    b.refresh()
    assert b.start_call()
    b.release()
    assert b.start_call()
    assert b.end_call(WaveOutcome.NOT_COUNTED) is None
    assert b.state == BreakerState.HALF_OPEN and b.start_call()


def test_a_restored_breaker_needs_the_time_it_opened() -> None:
    with pytest.raises(ValueError, match="acme_pm: state open needs the time it opened"):
        CircuitBreaker("acme_pm", BreakerConfig(), state=BreakerState.OPEN)


def result(
    outcome: SendOutcome = SendOutcome.ANSWERED,
    *,
    accepted: bool = False,
    unavailable: bool = False,
    throttled: bool = False,
    reason: str | None = None,
) -> SendResult:
    return SendResult(
        "k",
        accepted,
        reason=reason,
        outcome=outcome,
        account_unavailable=unavailable,
        throttled=throttled,
    )


def test_answered_waves_succeed_and_unanswered_ones_fail() -> None:
    accepted, rejected = result(accepted=True), result(reason="bad address")
    unknown = result(SendOutcome.UNKNOWN, reason="timeout")
    gave_up = result(SendOutcome.NOT_SENT, unavailable=True, reason="503 (gave up)")

    assert judge_wave([accepted, rejected]) == (WaveOutcome.SUCCESS, None)
    assert judge_wave([accepted, unknown]) == (WaveOutcome.FAILURE, "timeout")
    assert judge_wave([gave_up]) == (WaveOutcome.FAILURE, "503 (gave up)")


def test_rate_limits_and_calls_the_flow_makes_again_are_not_counted() -> None:
    throttled = result(SendOutcome.NOT_SENT, throttled=True, reason="429")
    throttled_out = result(SendOutcome.NOT_SENT, throttled=True, unavailable=True)
    retried = result(SendOutcome.NOT_SENT, reason="503; trying again")
    halved = result(SendOutcome.NOT_SENT, reason="one bad entry; sending it in halves")

    for wave in ([throttled], [throttled_out], [retried], [halved], [throttled, retried], []):
        assert judge_wave(wave) == (WaveOutcome.NOT_COUNTED, None), wave
    assert judge_wave([throttled, result(accepted=True)]) == (WaveOutcome.SUCCESS, None)


def test_throttled_waves_never_open_it(fixed: FixedClock) -> None:
    b = breaker(consecutive_failures=1, window_calls=1)
    outcome, _ = judge_wave([result(SendOutcome.NOT_SENT, throttled=True, unavailable=True)])
    for _ in range(10):
        assert call(b, outcome) is None
    assert b.state == BreakerState.CLOSED and b.evidence().window_calls == 0
