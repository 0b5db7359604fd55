"""Circuit breakers per provider account: stop calling an account that keeps failing.

One :class:`CircuitBreaker` per account, configured by its
:class:`~mailers.policy_config.BreakerConfig`::

    closed ──(consecutive_failures in a row, or error_rate over a full window)──▶ open
    open ──(open_seconds passed: the next call is a probe)──────────────────────▶ half_open
    half_open ──(the probe was answered)─────────────────────────────────────────▶ closed
    half_open ──(the probe failed)──────────────────────────▶ open (open_seconds afresh)

A *call* is one wave of a provider's ``send_batch`` (what one ``handing_over`` announced,
judged by :func:`judge_wave` from what ``answered`` then reports):

* **success**: nothing failed and the provider answered (accepted or rejected) for at
  least one message;
* **failure**: a message got no usable answer (``unknown``), or the account gave up on it
  (``not_sent`` with ``account_unavailable``: retries exhausted, credentials refused);
* **not counted**: rate limits (``throttled``: the pacer's business), and ``not_sent``
  results the flow makes again itself (a retry after a 503, the halves of a batch refused
  for one bad entry: counting those would open the breaker on one bad address). A retried
  call that finally fails is counted then, once.

The error rate is taken over the last ``window_calls`` counted calls and opens the breaker
only once the window is full. A half-open breaker admits one probe at a time. Every
change of state is a :class:`Transition` carrying its evidence. Times come from
:mod:`mailers.clock`.

The breakers of one send run, their audit records and their state across runs:
:mod:`mailers.breaker_board`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from mailers import clock
from mailers.messages import SendOutcome, SendResult
from mailers.policy_config import BreakerConfig


class BreakerState(StrEnum):
    """Where an account's breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class WaveOutcome(StrEnum):
    """What one wave of calls says about the account (see the module docstring)."""

    SUCCESS = "success"
    FAILURE = "failure"
    NOT_COUNTED = "not_counted"


def judge_wave(results: Sequence[SendResult]) -> tuple[WaveOutcome, str | None]:
    """One wave's outcome and, for a failure, the reason of its first failed message."""
    judged = [r for r in results if not r.throttled]
    failed = [
        r
        for r in judged
        if r.outcome == SendOutcome.UNKNOWN
        or (r.outcome == SendOutcome.NOT_SENT and r.account_unavailable)
    ]
    if failed:
        return WaveOutcome.FAILURE, failed[0].reason or str(failed[0].outcome)
    if any(r.outcome == SendOutcome.ANSWERED for r in judged):
        return WaveOutcome.SUCCESS, None
    return WaveOutcome.NOT_COUNTED, None


@dataclass(frozen=True)
class Evidence:
    """The counts a transition was decided on."""

    consecutive_failures: int
    window_calls: int
    window_failures: int
    last_failure: str | None

    @property
    def error_rate(self) -> float | None:
        """Failed share of the window's calls (None while it holds none)."""
        return self.window_failures / self.window_calls if self.window_calls else None


@dataclass(frozen=True)
class Transition:
    """One change of state of one account's breaker."""

    account: str
    from_state: BreakerState
    to_state: BreakerState
    trigger: str
    """Why, in words: ``5 failures in a row (opens at 5)``, ``probe answered``."""
    at: datetime
    opened_at: datetime | None
    """When the breaker last opened (None once closed)."""
    opened_because: str | None
    """The trigger of that opening (None once closed)."""
    probe_at: datetime | None
    """When an open breaker lets its next probe through."""
    evidence: Evidence
    config: BreakerConfig

    def detail(self) -> dict[str, Any]:
        """The audit record's ``detail``."""
        return {
            "account": self.account,
            "from_state": str(self.from_state),
            "to_state": str(self.to_state),
            "trigger": self.trigger,
            "at": self.at.isoformat(),
            "opened_at": self.opened_at.isoformat() if self.opened_at else None,
            "opened_because": self.opened_because,
            "probe_at": self.probe_at.isoformat() if self.probe_at else None,
            "consecutive_failures": self.evidence.consecutive_failures,
            "window_calls": self.evidence.window_calls,
            "window_failures": self.evidence.window_failures,
            "error_rate": self.evidence.error_rate,
            "last_failure": self.evidence.last_failure,
            "thresholds": self.config.model_dump(),
        }


class CircuitBreaker:
    """One account's breaker (not thread-safe on its own: :class:`BreakerBoard` locks)."""

    def __init__(
        self,
        account: str,
        config: BreakerConfig,
        *,
        state: BreakerState = BreakerState.CLOSED,
        opened_at: datetime | None = None,
        opened_because: str | None = None,
        last_failure: str | None = None,
        consecutive_failures: int = 0,
    ) -> None:
        if state != BreakerState.CLOSED and opened_at is None:
            raise ValueError(f"breaker of {account}: state {state} needs the time it opened")
        self.account = account
        self.config = config
        self.state = state
        self.opened_at = opened_at
        self.opened_because = opened_because
        self.last_failure = last_failure
        self.consecutive = consecutive_failures
        self.window: deque[bool] = deque(maxlen=config.window_calls)
        """Whether each of the last counted calls failed, oldest first."""
        self.probing = False

    @property
    def probe_at(self) -> datetime | None:
        """When an open breaker half-opens (None unless open)."""
        if self.state != BreakerState.OPEN or self.opened_at is None:
            return None
        return self.opened_at + timedelta(seconds=self.config.open_seconds)

    def refresh(self) -> Transition | None:
        """Half-open an open breaker whose ``open_seconds`` have passed."""
        probe_at = self.probe_at
        if probe_at is None or clock.now() < probe_at:
            return None
        return self._move(BreakerState.HALF_OPEN, f"open for {self.config.open_seconds:g}s")

    def available(self) -> bool:
        """Whether a call may start now (after :meth:`refresh`)."""
        return self.state == BreakerState.CLOSED or (
            self.state == BreakerState.HALF_OPEN and not self.probing
        )

    def start_call(self) -> bool:
        """Admit a call (a half-open breaker: as its one probe); False when refused."""
        if not self.available():
            return False
        self.probing = self.state == BreakerState.HALF_OPEN
        return True

    def release(self) -> None:
        """An admitted call was not made: a half-open breaker may admit another probe."""
        self.probing = False

    def end_call(self, outcome: WaveOutcome, reason: str | None = None) -> Transition | None:
        """Count a call's outcome; the transition it causes, if any."""
        self.probing = False
        if outcome == WaveOutcome.NOT_COUNTED:
            return None
        failed = outcome == WaveOutcome.FAILURE
        self.window.append(failed)
        self.consecutive = self.consecutive + 1 if failed else 0
        if failed:
            self.last_failure = reason
        if self.state == BreakerState.HALF_OPEN:
            if failed:
                return self._move(BreakerState.OPEN, f"probe failed: {reason}")
            return self._move(BreakerState.CLOSED, "probe answered")
        if self.state == BreakerState.CLOSED and failed:
            return self._trip()
        return None  # a call admitted before the breaker opened: counted, nothing to decide

    def evidence(self) -> Evidence:
        return Evidence(self.consecutive, len(self.window), sum(self.window), self.last_failure)

    def why(self) -> str:
        """The breaker's state in words, with its evidence."""
        evidence = self.evidence()
        counts = (
            f"{_failures(evidence.consecutive_failures)} in a row, "
            f"{evidence.window_failures} of the last {evidence.window_calls} calls failed"
        )
        if self.state == BreakerState.CLOSED:
            return f"circuit breaker of {self.account} closed ({counts})"
        opened = f"opened {_moment(self.opened_at)} after {self.opened_because}"
        last = f"; last failure: {self.last_failure}" if self.last_failure else ""
        if self.state == BreakerState.OPEN:
            return (
                f"circuit breaker of {self.account} open: {opened}{last}; "
                f"next probe at {_moment(self.probe_at)}"
            )
        probe = "a probe call is in flight" if self.probing else "the next call is a probe"
        return f"circuit breaker of {self.account} half-open ({probe}): {opened}{last}"

    def _trip(self) -> Transition | None:
        config, evidence = self.config, self.evidence()
        if evidence.consecutive_failures >= config.consecutive_failures:
            return self._move(
                BreakerState.OPEN,
                f"{_failures(evidence.consecutive_failures)} in a row "
                f"(opens at {config.consecutive_failures})",
            )
        rate = evidence.error_rate or 0.0
        if evidence.window_calls == config.window_calls and rate >= config.error_rate:
            return self._move(
                BreakerState.OPEN,
                f"error rate {rate:.2f} over the last {evidence.window_calls} calls "
                f"(opens at {config.error_rate:.2f})",
            )
        return None

    def _move(self, to_state: BreakerState, trigger: str) -> Transition:
        now = clock.now()
        from_state, evidence = self.state, self.evidence()
        self.state = to_state
        if to_state == BreakerState.OPEN:
            self.opened_at, self.opened_because = now, trigger
        elif to_state == BreakerState.CLOSED:
            # Closed again: a fresh start, so old failures never count towards the next trip.
            self.opened_at, self.opened_because = None, None
            self.last_failure, self.consecutive = None, 0
            self.window.clear()
        return Transition(
            self.account,
            from_state,
            to_state,
            trigger,
            now,
            self.opened_at,
            self.opened_because,
            self.probe_at,
            evidence,
            self.config,
        )


def _failures(count: int) -> str:
    return f"{count} failure" if count == 1 else f"{count} failures"


def _moment(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at is not None else "?"
