"""The send flow every provider shares; provider packages fill in one hook.

:meth:`BatchProvider.send_batch` cuts a batch into provider calls
(:meth:`~BatchProvider._requests`: ``request_size`` messages each, or a provider's own
grouping), makes up to ``concurrency`` calls at a time through the provider's
:meth:`~BatchProvider._send_request` (or, for providers that take one message per call,
``_send_one`` of :class:`~adapters.providers.per_message.OneMessagePerCall`), and turns
what each call raises into per-message outcomes. Every call is bracketed in the
:class:`~mailers.providers.DispatchJournal`: ``handing_over`` before it leaves,
``answered`` as soon as it ends, so doubt after a crash is never larger than the calls in
flight.

==========================  ====================================================
the hook raises             outcome of the call's messages
==========================  ====================================================
(returns results)           accepted / rejected per message; a message missing
                            from the answer is ``unknown``
:class:`Throttled`          the provider's rate limit (429, SES ``Throttling``):
                            ``not_sent`` with ``throttled`` set, and with a pacer
                            the call is made again once the pacer's pause is over,
                            without using up an attempt (see below); without one,
                            as ``Retryable``
:class:`Retryable`          provably not accepted (503 with ``Retry-After``,
                            connection refused): ``not_sent``, then the call is
                            made again after ``Retry-After`` or a backoff, up to
                            the policy; past it the account leaves the run
:class:`BatchRejected`      the provider refused the whole call for one bad entry:
                            ``not_sent``, then each half is a call of its own, down
                            to single messages, which become ``rejected``
:class:`AuthFailed`         ``not_sent``; the account leaves the run
:class:`Ambiguous`          ``unknown`` for this call's messages only (a timeout or
                            a dropped connection after sending, a 500/502/504);
                            after ``ambiguous_limit`` such calls in a row the
                            account leaves the run
==========================  ====================================================

When the account leaves the run, every message not yet handed over is ``not_sent`` with
``account_unavailable`` set, so the core fails it over; nothing an earlier call of the
batch got accepted is ever reported otherwise. ``send_batch`` itself never raises for
what the provider did.

The journal takes the account out of the run the same way when its ``handing_over``
raises :class:`~mailers.providers.AccountUnavailable` (a circuit breaker refusing the
call): that wave is not made, and the reason is the journal's. When it raises
:class:`~mailers.providers.HandOverHeld` (a pause holds the scope), that wave is not made
either, and every message not yet handed over is ``held`` with the pause as its reason:
not failed over, since a pause never reroutes mail.

An account built by the registry has a :class:`~mailers.pacing.Pacer`
(:meth:`BatchProvider.pace`). Each wave of calls first acquires its messages from it, and
every ``Throttled`` answer is reported to it: it pauses every caller of the account (at
least its minimum backoff, so a ``Retry-After: 0`` never spins) and lowers the pace. A
throttled call goes again with the same attempt count and the account stays in the run,
for as long as the pauses of one ``send_batch`` add up to at most the pacer's
``max_throttle_wait``; a pause that would go past it ends the run for the account: the
messages still waiting are ``not_sent`` with ``account_unavailable`` and ``throttled`` set
and a reason naming the rate limit, never rejected, never in doubt (unless they already
were), never dropped.

A provider that deduplicates requests by an idempotency key (Resend's
``Idempotency-Key``) returns one from :meth:`~BatchProvider._idempotency_key`. Then an
``Ambiguous`` call is made again with the same key, up to the retry policy: the
provider answers the first request's outcome instead of sending twice, so the doubt is
settled. Until such a retry gets an answer its messages stay in doubt: a 429 or any
other failure of a retry never makes them ``not_sent``, since the first request may have
been accepted (with a pacer, a throttled retry is paced and made again without using up
an attempt, as any throttled call). A retry refused for what it carries
(``BatchRejected``) is an answer: had the first request been accepted, the provider would
have answered that instead, so the call is halved as any refused call is. The key is
journalled with each call (the ledger's ``batch_id``).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from adapters.providers.hooks import (
    Ambiguous,
    AuthFailed,
    BatchRejected,
    Retryable,
    RetryPolicy,
    Throttled,
)
from mailers.messages import OutboundMessage, SendOutcome, SendResult
from mailers.pacing import Pacer, ThrottleWaitExceeded
from mailers.providers import AccountUnavailable, DispatchJournal, HandOverHeld, NoJournal


@dataclass
class _Call:
    """One provider call to make: its messages and how many times it was tried."""

    messages: Sequence[OutboundMessage]
    attempt: int = 1
    in_doubt: bool = False
    """An earlier attempt got no usable answer (only idempotent calls are made again)."""


_Answer = list[SendResult] | Exception


@dataclass
class _State:
    """Where one ``send_batch`` stands: calls to make, final results, why the account left."""

    pending: deque[_Call]
    final: dict[str, SendResult] = field(default_factory=dict)
    down: str | None = None
    down_throttled: bool = False
    held: bool = False
    """``down`` is a pause holding the batch: what was not handed over is ``held``."""
    """The account left the run because of a rate limit (its messages are ``throttled``)."""
    throttle_waited: float = 0.0
    """Seconds this send spent in the pacer's rate-limit pauses."""
    ambiguous_in_a_row: int = 0
    again: list[_Call] = field(default_factory=list)
    """Calls of the current wave to make again (retries, halves), in order."""
    wait: float = 0.0
    """Seconds to wait before the next wave (the longest ``Retry-After`` of this one)."""

    def settle(self, results: list[SendResult]) -> list[SendResult]:
        """Record ``results`` as final and return them."""
        self.final.update((r.message_key, r) for r in results)
        return results


class BatchProvider(ABC):
    """Base of every provider adapter; see the module docstring for the flow."""

    kind: str
    max_batch_size: int
    concurrency: int = 1
    """Provider calls in flight at once (one-message-per-call providers raise it)."""
    ambiguous_limit: int = 3
    """Calls in a row without a usable answer after which the account leaves the run."""

    def __init__(
        self,
        account: str,
        *,
        max_batch_size: int,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        request_size: int | None = None,
        concurrency: int = 1,
        pacer: Pacer | None = None,
    ) -> None:
        self.account = account
        self.max_batch_size = max_batch_size
        self.request_size = request_size or max_batch_size
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self.pacer = pacer
        self._sleep = sleep
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    def pace(self, pacer: Pacer | None, *, concurrency: int | None = None) -> None:
        """Pace this account's calls with ``pacer``; ``concurrency`` replaces the default.

        Call it before the first send (the registry does, from the account's config).
        """
        self.pacer = pacer
        if concurrency is not None and concurrency != self.concurrency:
            self._stop_workers()  # they are sized to the concurrency
            self.concurrency = concurrency

    @abstractmethod
    def _send_request(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Make one provider call carrying ``messages``; raise the hook exceptions above."""

    def _idempotency_key(self, messages: Sequence[OutboundMessage]) -> str | None:
        """The key the provider deduplicates this call by, or None if it offers none.

        The same messages must always give the same key, so a retry is recognised.
        """
        return None

    def _requests(self, messages: Sequence[OutboundMessage]) -> list[Sequence[OutboundMessage]]:
        """How a batch is cut into provider calls (``request_size`` messages each)."""
        size = self.request_size
        return [messages[start : start + size] for start in range(0, len(messages), size)]

    def close(self) -> None:
        """Release connections and worker threads. Safe to call twice."""
        self._stop_workers()

    def _stop_workers(self) -> None:
        with self._executor_lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def send_batch(
        self, messages: Sequence[OutboundMessage], journal: DispatchJournal | None = None
    ) -> list[SendResult]:
        """Send ``messages``, one result per message in order; see the module docstring."""
        journal = journal or NoJournal()
        state = _State(deque(_Call(request) for request in self._requests(messages) if request))
        while state.pending and state.down is None:
            size = min(self.concurrency, len(state.pending))
            wave = [state.pending.popleft() for _ in range(size)]
            if not self._paced(wave, state):
                state.pending.extendleft(reversed(wave))
                break
            try:
                journal.handing_over(
                    [m for call in wave for m in call.messages], idempotency_keys=self._keys(wave)
                )
            except (AccountUnavailable, HandOverHeld) as refused:
                state.pending.extendleft(reversed(wave))
                state.down = refused.reason
                state.held = isinstance(refused, HandOverHeld)
                break
            answers = self._make_calls(wave)
            state.again, state.wait = [], 0.0
            journal.answered(
                [
                    r
                    for call, a in zip(wave, answers, strict=True)
                    for r in self._sort(call, a, state)
                ]
            )
            state.pending.extendleft(reversed(state.again))
            if state.wait and state.pending and state.down is None:
                self._sleep(state.wait)
        if state.pending:
            never_sent = [m for call in state.pending if not call.in_doubt for m in call.messages]
            doubted = [m for call in state.pending if call.in_doubt for m in call.messages]
            if state.held:
                left = _held(never_sent, state.down or "paused")
            else:
                left = _not_sent(
                    never_sent,
                    f"not sent: {state.down}",
                    account_unavailable=True,
                    throttled=state.down_throttled,
                )
            journal.answered(
                state.settle(left)
                + state.settle(_in_doubt(doubted, f"in doubt, not retried: {state.down}"))
            )
        return [state.final[m.message_key] for m in messages]

    def _paced(self, wave: Sequence[_Call], state: _State) -> bool:
        """Wait for the pacer to let the wave's messages go; False once the throttle
        budget of this send would be spent (the account then leaves the run)."""
        if self.pacer is None:
            return True
        patience = self.pacer.max_throttle_wait - state.throttle_waited
        try:
            state.throttle_waited += self.pacer.acquire(
                sum(len(call.messages) for call in wave), patience=patience
            )
        except ThrottleWaitExceeded as err:
            state.down, state.down_throttled = str(err), True
            return False
        return True

    def _keys(self, wave: Sequence[_Call]) -> dict[str, str]:
        """Message key → the idempotency key of the call carrying it (if the provider has one)."""
        keys: dict[str, str] = {}
        for call in wave:
            key = self._idempotency_key(call.messages)
            if key is not None:
                keys.update((m.message_key, key) for m in call.messages)
        return keys

    def _sort(self, call: _Call, answer: _Answer, state: _State) -> list[SendResult]:
        """What one call's answer means for its messages (the rows to journal)."""
        if not isinstance(answer, Ambiguous):
            state.ambiguous_in_a_row = 0  # the provider answered something
        if isinstance(answer, list):
            return state.settle(_complete(call.messages, answer))
        if isinstance(answer, Ambiguous):
            state.ambiguous_in_a_row += 1
            if state.ambiguous_in_a_row >= self.ambiguous_limit:
                state.down = f"{state.ambiguous_in_a_row} calls in a row got no usable answer"
        if (call.in_doubt and not isinstance(answer, BatchRejected)) or (
            isinstance(answer, Ambiguous) and self._idempotency_key(call.messages) is not None
        ):
            return self._retry_in_doubt(call, answer, state)
        throttled = isinstance(answer, Throttled)
        if isinstance(answer, Throttled) and self.pacer is not None:
            pause = self.pacer.throttled(answer.retry_after, reason=answer.reason)
            state.again.append(_Call(call.messages, call.attempt))
            why = f"{answer.reason}; paced, trying again in {pause:.2f}s"
            return _not_sent(call.messages, why, throttled=True)
        if isinstance(answer, Retryable):
            delay = self.retry.delay(call.attempt, answer.retry_after)
            if call.attempt < self.retry.attempts and delay <= self.retry.max_delay:
                state.again.append(_Call(call.messages, call.attempt + 1))
                state.wait = max(state.wait, delay)
                why = f"{answer.reason}; trying again"
                return _not_sent(call.messages, why, throttled=throttled)
            tries = "attempt" if call.attempt == 1 else "attempts"
            state.down = f"{answer.reason} (gave up after {call.attempt} {tries})"
            state.down_throttled = throttled
            left = _not_sent(
                call.messages, state.down, account_unavailable=True, throttled=throttled
            )
            return state.settle(left)
        if isinstance(answer, BatchRejected):
            if len(call.messages) == 1:
                key = call.messages[0].message_key
                return state.settle([SendResult(key, accepted=False, reason=answer.reason)])
            middle = len(call.messages) // 2
            state.again += [_Call(call.messages[:middle]), _Call(call.messages[middle:])]
            return _not_sent(call.messages, f"{answer.reason}; sending it in halves")
        if isinstance(answer, AuthFailed):
            state.down = str(answer)
            return state.settle(_not_sent(call.messages, state.down, account_unavailable=True))
        if isinstance(answer, Ambiguous):
            return state.settle(_in_doubt(call.messages, f"{answer}; in doubt, not re-sent"))
        # A bug in the adapter, after the call may have left: in doubt.
        why = f"adapter error {type(answer).__name__}: {answer}"
        return state.settle(_in_doubt(call.messages, why))

    def _retry_in_doubt(self, call: _Call, answer: Exception, state: _State) -> list[SendResult]:
        """An idempotent call without a usable answer: make it again under the same key.

        Whatever a retry meets, its messages stay ``unknown`` until one is answered: the
        first request may have been accepted.
        """
        retry_after = answer.retry_after if isinstance(answer, Retryable) else None
        reason = getattr(answer, "reason", None) or str(answer)
        if isinstance(answer, Throttled) and self.pacer is not None:
            self.pacer.throttled(retry_after, reason=reason)
            state.again.append(_Call(call.messages, call.attempt, in_doubt=True))
            return _in_doubt(call.messages, f"{reason}; paced, trying again under its key")
        delay = self.retry.delay(call.attempt, retry_after)
        if call.attempt < self.retry.attempts and delay <= self.retry.max_delay:
            state.again.append(_Call(call.messages, call.attempt + 1, in_doubt=True))
            state.wait = max(state.wait, delay)
            return _in_doubt(call.messages, f"{reason}; trying again under its idempotency key")
        tries = "attempt" if call.attempt == 1 else "attempts"
        why = f"{reason}; in doubt after {call.attempt} {tries} under its idempotency key"
        return state.settle(_in_doubt(call.messages, why))

    def _make_calls(self, wave: Sequence[_Call]) -> list[_Answer]:
        """Make the wave's calls (concurrently when there are several)."""
        if len(wave) == 1:
            return [self._answer(wave[0].messages)]
        return list(self._workers().map(self._answer, [call.messages for call in wave]))

    def _answer(self, messages: Sequence[OutboundMessage]) -> _Answer:
        try:
            return self._send_request(messages)
        except Exception as err:  # every outcome, including adapter bugs, is sorted above
            return err

    def _workers(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.concurrency, thread_name_prefix=f"{self.kind}-{self.account}"
                )
            return self._executor


def _complete(messages: Sequence[OutboundMessage], answer: list[SendResult]) -> list[SendResult]:
    """The call's results in order; a message the provider left out of its answer is in doubt."""
    by_key = {r.message_key: r for r in answer}
    missing = [m for m in messages if m.message_key not in by_key]
    by_key.update(
        (r.message_key, r)
        for r in _in_doubt(missing, "the provider answered without this message; in doubt")
    )
    return [by_key[m.message_key] for m in messages]


def _in_doubt(messages: Sequence[OutboundMessage], reason: str) -> list[SendResult]:
    return [
        SendResult(m.message_key, accepted=False, reason=reason, outcome=SendOutcome.UNKNOWN)
        for m in messages
    ]


def _held(messages: Sequence[OutboundMessage], reason: str) -> list[SendResult]:
    return [
        SendResult(m.message_key, accepted=False, reason=reason, outcome=SendOutcome.HELD)
        for m in messages
    ]


def _not_sent(
    messages: Sequence[OutboundMessage],
    reason: str,
    *,
    account_unavailable: bool = False,
    throttled: bool = False,
) -> list[SendResult]:
    return [
        SendResult(
            m.message_key,
            accepted=False,
            reason=reason,
            outcome=SendOutcome.NOT_SENT,
            account_unavailable=account_unavailable,
            throttled=throttled,
        )
        for m in messages
    ]
