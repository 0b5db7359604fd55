"""The shared send flow's rules for idempotent providers and one-message-per-call ones.

A scripted provider answers each call from a list, so the flow's decisions are checked
call by call; the providers' own mappings are checked against their simulators elsewhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from adapters.providers.base import BatchProvider
from adapters.providers.hooks import Ambiguous, BatchRejected, Retryable, RetryPolicy
from adapters.providers.per_message import OneMessagePerCall
from mailers.messages import OutboundMessage, SendOutcome, SendResult
from tests.adapters.provider_contract import RecordingJournal, make_message

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
