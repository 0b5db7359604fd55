"""The shared send flow's rules for idempotent providers and one-message-per-call ones.

A scripted provider answers each call from a list, so the flow's decisions are checked
call by call; the providers' own mappings are checked against their simulators elsewhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

from adapters.providers.base import BatchProvider
from adapters.providers.hooks import Ambiguous, BatchRejected, Retryable, RetryPolicy, Throttled
from adapters.providers.per_message import OneMessagePerCall
from mailers.messages import OutboundMessage, SendOutcome, SendResult
from mailers.pacing import Pacer
from tests.adapters.provider_contract import RecordingJournal, make_message
from tests.core.test_pacing import FakeTime

P = TypeVar("P", bound=BatchProvider)

Script = list[Exception | None]
"""Per call: raise this, or (None) accept every message of the call."""


class Scripted(BatchProvider):
    kind = "scripted"

    def __init__(self, script: Script, *, idempotent: bool, request_size: int = 10) -> None:
        super().__init__(
            "acct",
            max_batch_size=100,
            request_size=request_size,
            retry=RetryPolicy(attempts=3),
            sleep=lambda _: None,
        )
        self.script = list(script)
        self.idempotent = idempotent
        self.calls: list[list[str]] = []

    def _idempotency_key(self, messages: Sequence[OutboundMessage]) -> str | None:
        if not self.idempotent:
            return None
        keys = "\n".join(m.message_key for m in messages)
        return "k-" + hashlib.sha256(keys.encode()).hexdigest()[:16]

    def _send_request(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        self.calls.append([m.message_key for m in messages])
        answer = self.script.pop(0) if self.script else None
        if answer is not None:
            raise answer
        return [SendResult(m.message_key, True, provider_message_id="id") for m in messages]


def batch(count: int) -> list[OutboundMessage]:
    return [make_message(f"flow{i}@example.com") for i in range(count)]


def test_an_ambiguous_idempotent_call_is_made_again_under_its_key_and_settled() -> None:
    provider = Scripted([Ambiguous("500 after storing")], idempotent=True)
    journal = RecordingJournal()
    results = provider.send_batch(batch(3), journal)

    assert all(r.accepted for r in results)
    assert provider.calls[0] == provider.calls[1]
    first, second = journal.idempotency_keys
    assert first == second and len(set(first.values())) == 1
    assert [kind for kind, _ in journal.calls] == ["handing_over", "answered"] * 2


def test_a_retry_of_an_ambiguous_call_that_is_throttled_stays_in_doubt() -> None:
    script: Script = [Ambiguous("timeout"), Retryable("429", retry_after=1), Retryable("429")]
    provider = Scripted(script, idempotent=True)
    results = provider.send_batch(batch(2))

    assert len(provider.calls) == 3
    assert all(r.outcome == SendOutcome.UNKNOWN and not r.accepted for r in results)
    assert not any(r.account_unavailable for r in results)


def test_a_retry_refused_for_its_content_is_an_answer_and_the_call_is_halved() -> None:
    provider = Scripted([Ambiguous("500"), BatchRejected("one bad entry")], idempotent=True)
    messages = batch(2)
    results = provider.send_batch(messages)

    assert all(r.accepted for r in results)
    keys = [m.message_key for m in messages]
    assert provider.calls == [keys, keys, keys[:1], keys[1:]]


def test_without_idempotency_an_ambiguous_call_is_never_made_again() -> None:
    provider = Scripted([Ambiguous("timeout")], idempotent=False)
    journal = RecordingJournal()
    results = provider.send_batch(batch(2), journal)

    assert len(provider.calls) == 1
    assert all(r.outcome == SendOutcome.UNKNOWN for r in results)
    assert journal.idempotency_keys == [{}]


def test_when_the_account_leaves_a_pending_retry_stays_in_doubt_and_the_rest_fail_over() -> None:
    script: Script = [Ambiguous("a"), Ambiguous("b"), Ambiguous("c")]
    provider = Scripted(script, idempotent=True, request_size=2)
    provider.ambiguous_limit = 2
    messages = batch(6)
    results = provider.send_batch(messages)

    doubted = {k for call in provider.calls for k in call}
    for message, result in zip(messages, results, strict=True):
        if message.message_key in doubted:
            assert result.outcome == SendOutcome.UNKNOWN, result
        else:
            assert result.outcome == SendOutcome.NOT_SENT and result.account_unavailable


class OnePerCall(OneMessagePerCall):
    kind = "one"

    def __init__(self) -> None:
        super().__init__("acct", max_batch_size=10, concurrency=3, sleep=lambda _: None)
        self.sent: list[str] = []

    def _send_one(self, message: OutboundMessage) -> SendResult:
        self.sent.append(message.message_key)
        if message.recipient.startswith("flow1@"):
            raise Retryable("refused connection")
        return SendResult(message.message_key, True, provider_message_id=message.recipient)


def test_one_message_per_call_keeps_each_failure_its_own() -> None:
    provider = OnePerCall()
    messages = batch(4)
    try:
        results = provider.send_batch(messages)
    finally:
        provider.close()

    assert [r.accepted for r in results] == [True, False, True, True]
    assert results[1].outcome == SendOutcome.NOT_SENT and results[1].account_unavailable
    assert provider.sent.count(messages[1].message_key) == 3  # the retry policy's attempts
    assert all(provider.sent.count(m.message_key) == 1 for m in messages if m != messages[1])


def paced(provider: P, time: FakeTime, *, max_throttle_wait: float = 900.0) -> P:
    """``provider`` paced on the fake clock (no rate: only rate-limit pauses hold it)."""
    pacer = Pacer(
        None,
        min_backoff=1.0,
        max_throttle_wait=max_throttle_wait,
        clock=time.clock,
        sleep=time.sleep,
    )
    provider.pace(pacer)
    return provider


def test_a_throttled_call_is_paced_without_using_up_attempts_or_the_account() -> None:
    time = FakeTime()
    provider = paced(Scripted([Throttled("429", retry_after=0)] * 5, idempotent=False), time)
    journal = RecordingJournal()

    results = provider.send_batch(batch(3), journal)

    assert all(r.accepted for r in results)
    assert len(provider.calls) == 6  # five 429s, far past the policy's 3 attempts
    assert len(time.slept) == 5 and all(1.0 <= s <= 1.1 for s in time.slept)  # never spun
    assert [kind for kind, _ in journal.calls] == ["handing_over", "answered"] * 6


def test_past_the_throttle_budget_the_waiting_messages_are_not_sent_for_failover() -> None:
    time = FakeTime()
    script: Script = [None] + [Throttled("rate limited (429)", retry_after=2)] * 50
    provider = paced(Scripted(script, idempotent=False, request_size=2), time, max_throttle_wait=7)
    messages = batch(6)

    results = provider.send_batch(messages)

    assert [r.accepted for r in results[:2]] == [True, True]  # answered before: kept
    for result in results[2:]:
        assert result.outcome == SendOutcome.NOT_SENT, result
        assert result.account_unavailable and result.throttled
        assert "rate limited (429): the provider asked to wait" in (result.reason or "")
    assert sum(time.slept) <= 7.0
    assert not any(r.outcome == SendOutcome.UNKNOWN for r in results)


def test_a_throttled_retry_of_an_idempotent_call_in_doubt_stays_in_doubt_until_answered() -> None:
    time = FakeTime()
    script: Script = [Ambiguous("timeout")] + [Throttled("429")] * 4
    provider = paced(Scripted(script, idempotent=True), time)

    results = provider.send_batch(batch(2))

    assert all(r.accepted for r in results)  # the key settled it, however many 429s
    assert len(provider.calls) == 6


def test_a_throttled_retry_in_doubt_past_the_budget_stays_unknown_never_not_sent() -> None:
    time = FakeTime()
    script: Script = [Ambiguous("timeout")] + [Throttled("429", retry_after=5)] * 10
    provider = paced(Scripted(script, idempotent=True), time, max_throttle_wait=12)

    results = provider.send_batch(batch(2))

    assert all(r.outcome == SendOutcome.UNKNOWN for r in results)
    assert not any(r.account_unavailable for r in results)


def test_without_a_pacer_a_rate_limit_is_retried_under_the_policy_and_marked_throttled() -> None:
    provider = Scripted([Throttled("rate limited (429)")] * 3, idempotent=False)

    results = provider.send_batch(batch(2))

    assert len(provider.calls) == 3
    assert all(r.outcome == SendOutcome.NOT_SENT and r.account_unavailable for r in results)
    assert all(r.throttled for r in results)


def test_an_unavailable_provider_is_not_throttling() -> None:
    time = FakeTime()
    provider = paced(Scripted([Retryable("503", retry_after=1)] * 3, idempotent=False), time)

    results = provider.send_batch(batch(2))

    assert len(provider.calls) == 3  # the retry policy's attempts, then the account leaves
    assert all(r.account_unavailable and not r.throttled for r in results)
    assert time.slept == []  # the pacer only pauses for rate limits


def test_pacing_config_concurrency_replaces_the_providers_default() -> None:
    provider = OnePerCall()
    provider.pace(None, concurrency=7)
    try:
        results = provider.send_batch(batch(14))
        workers = provider._workers()._max_workers
    finally:
        provider.close()

    assert workers == 7
    assert sum(r.accepted for r in results) == 13  # flow1@ is refused, as above
