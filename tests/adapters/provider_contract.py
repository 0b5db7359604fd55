"""The contract every provider adapter passes, against its simulator or emulator.

A provider's test module defines a ``harness`` fixture returning an object with the
attributes of :class:`Harness` (a provider without webhooks takes those from
:class:`NoWebhooks`), and a test class inheriting :class:`ProviderContract`.
Everything here goes over real sockets to the simulator (or moto / aiosmtpd).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from adapters.providers.base import BatchProvider
from adapters.providers.registry import SPECS
from adapters.providers.spec import ProviderSpec
from adapters.simulator.server import Fault, Simulator
from mailers.errors import WebhookRejected
from mailers.events import BounceClass, CanonicalEvent, EventType
from mailers.keys import message_key
from mailers.messages import MESSAGE_KEY_HEADER, OutboundMessage, SendOutcome, SendResult
from mailers.webhooks import SeenTokens, WebhookRequest

P = TypeVar("P", bound=BatchProvider)

CLIENT_TIMEOUT = 2.0
"""The read timeout adapters get in tests: far above a normal answer on a loaded machine."""

HELD = 30.0
"""How long an injected timeout holds a request: far past :data:`CLIENT_TIMEOUT`. The
simulator a test owns drops the held request when it stops, so it never reaches another
test."""


class Harness(Protocol):
    """What a provider's test module supplies to the shared contract."""

    secrets: list[str]
    """Credential values that must never appear in errors or logs."""

    supports_webhooks: bool

    def provider(self, *, valid_credentials: bool = True) -> BatchProvider:
        """An adapter for one account; ``sleep`` recorded in ``self.slept``."""
        ...

    slept: list[float]

    def inject_rate_limit(self, retry_after: float) -> None:
        """Make the next send answer 429 with this ``Retry-After``."""
        ...

    rate_limits_lift: bool
    """Whether an injected rate limit lifts once waited out, so the retry is accepted
    (``False``: it lasts and the account leaves the run, as with the sandbox's faults)."""

    def inject_timeout(self) -> None:
        """Make the next send hang past the client's read timeout (after it was sent)."""
        ...

    def delivered_keys(self) -> dict[str, str]:
        """Message key → recipient, as the provider side recorded them (from metadata)."""
        ...

    def signed_webhook(self, body: bytes) -> WebhookRequest:
        """A correctly signed, fresh webhook request carrying ``body``."""
        ...

    def forged_webhook(self, body: bytes) -> WebhookRequest:
        """The same request with a wrong signature or credentials."""
        ...

    def stale_webhook(self, body: bytes) -> WebhookRequest:
        """A correctly signed request whose timestamp is too old (or ``None`` if N/A)."""
        ...

    def verify(self, request: WebhookRequest, guard: SeenTokens) -> None:
        """The adapter's webhook verification."""
        ...

    def event_body(self, event: str, recipient: str, key: str) -> bytes:
        """A webhook body of this provider's ``event`` type for one message."""
        ...

    def unknown_event_body(self) -> bytes:
        """A webhook body with an event type the adapter does not map."""
        ...

    parse: Callable[[bytes, str], list[CanonicalEvent]]

    spec: ProviderSpec[Any]
    """The package's declared spec (what the registry holds)."""

    fixtures: Path | None
    """The directory of recorded provider payloads (``None``: the provider has none)."""

    fixture_types: Mapping[str, tuple[EventType, BounceClass | None]]
    """Recorded fixture name (file stem) → the canonical type it must parse to."""


class NoWebhooks:
    """The webhook part of the harness of a provider without webhooks (never called)."""

    supports_webhooks = False

    def signed_webhook(self, body: bytes) -> WebhookRequest:
        raise NotImplementedError("this provider has no webhooks")

    def forged_webhook(self, body: bytes) -> WebhookRequest:
        raise NotImplementedError("this provider has no webhooks")

    def stale_webhook(self, body: bytes) -> WebhookRequest | None:
        raise NotImplementedError("this provider has no webhooks")

    def verify(self, request: WebhookRequest, guard: SeenTokens) -> None:
        raise NotImplementedError("this provider has no webhooks")

    def event_body(self, event: str, recipient: str, key: str) -> bytes:
        raise NotImplementedError("this provider has no webhooks")

    def unknown_event_body(self) -> bytes:
        raise NotImplementedError("this provider has no webhooks")


def make_message(recipient: str, window: str = "w1") -> OutboundMessage:
    key = message_key("acme", "pro_tips", recipient, window)
    return OutboundMessage(
        message_key=key,
        workspace="acme",
        stream="lifecycle",
        campaign="pro_tips",
        send_window=window,
        identity="acme_news",
        recipient=recipient,
        from_address="news@news.acme.test",
        from_name="Acme",
        sending_domain="news.acme.test",
        subject=f"Hello {recipient}",
        html=f"<p>Hello {recipient} &amp; friends</p>",
        text=f"Hello {recipient}",
        headers={MESSAGE_KEY_HEADER: key, "List-Unsubscribe": "<https://u.test/x>"},
    )


def account_left_the_run(results: Sequence[SendResult]) -> str:
    """Assert every message is ``not_sent`` because the account failed; return the reason."""
    assert results
    assert all(r.outcome == SendOutcome.NOT_SENT and r.account_unavailable for r in results), [
        (r.outcome, r.account_unavailable, r.reason) for r in results
    ]
    return results[0].reason or ""


def all_in_doubt(results: Sequence[SendResult]) -> bool:
    """Whether every message is in doubt: handed over, no usable answer."""
    return bool(results) and all(
        r.outcome == SendOutcome.UNKNOWN and not r.accepted for r in results
    )


class RecordingJournal:
    """A journal that remembers each call's message keys, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.idempotency_keys: list[dict[str, str]] = []

    def handing_over(
        self, messages: Sequence[OutboundMessage], idempotency_keys: Mapping[str, str]
    ) -> None:
        self.calls.append(("handing_over", [m.message_key for m in messages]))
        self.idempotency_keys.append(dict(idempotency_keys))

    def answered(self, results: Sequence[SendResult]) -> None:
        self.calls.append(("answered", [r.message_key for r in results]))


class SimulatorHarness:
    """Harness plumbing for providers tested against ``adapters.simulator`` (``kind``)."""

    kind: str
    rate_limits_lift = True
    supports_webhooks = True

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.slept: list[float] = []
        self.built: list[BatchProvider] = []

    def track(self, provider: P) -> P:
        """Remember a built provider, so :meth:`close` releases it."""
        self.built.append(provider)
        return provider

    def close(self) -> None:
        for provider in self.built:
            provider.close()

    def inject_rate_limit(self, retry_after: float) -> None:
        self.sim.inject(self.kind, Fault(status=429, retry_after=retry_after))

    def inject_timeout(self) -> None:
        self.sim.inject(self.kind, Fault(timeout=HELD))

    def stored(self) -> list[dict[str, Any]]:
        """What the simulator accepted for this kind."""
        return list(self.sim.store[self.kind]["messages"])


class ThrottledAfterFirstCall(RecordingJournal):
    """Once the first call is answered, the provider throttles for longer than the flow waits."""

    def __init__(self, harness: Harness) -> None:
        super().__init__()
        self.harness = harness

    def answered(self, results: Sequence[SendResult]) -> None:
        if not any(kind == "answered" for kind, _ in self.calls):
            self.harness.inject_rate_limit(retry_after=3600)
        super().answered(results)


class ProviderContract:
    """Shared behaviour; subclasses get every test by providing a ``harness`` fixture."""

    def test_a_batch_is_accepted_with_provider_ids_and_keys_carried(self, harness) -> None:
        messages = [make_message(f"user{i}@example.com") for i in range(7)]
        results = harness.provider().send_batch(messages)
        assert [r.message_key for r in results] == [m.message_key for m in messages]
        assert all(r.accepted and r.provider_message_id for r in results)
        assert len({r.provider_message_id for r in results}) == len(messages)
        recorded = harness.delivered_keys()
        assert {m.message_key: m.recipient for m in messages}.items() <= recorded.items()

    def test_a_refused_recipient_is_rejected_alone(self, harness) -> None:
        good = [make_message(f"ok{i}@example.com") for i in range(3)]
        bad = make_message("nobody@reject.mailers.test")
        results = harness.provider().send_batch([good[0], bad, *good[1:]])
        by_key = {r.message_key: r for r in results}
        assert not by_key[bad.message_key].accepted
        assert by_key[bad.message_key].reason
        assert all(by_key[m.message_key].accepted for m in good)

    def test_refused_credentials_stop_the_account_without_leaking_them(self, harness) -> None:
        if not harness.spec.credentials.known:
            pytest.skip(f"provider kind {harness.spec.kind!r} reads no credentials to refuse")
        results = harness.provider(valid_credentials=False).send_batch(
            [make_message("a@example.com"), make_message("b@example.com")]
        )
        reason = account_left_the_run(results)
        assert all(secret not in reason for secret in harness.secrets)

    def test_a_rate_limit_is_honoured_then_the_batch_goes(self, harness) -> None:
        if not harness.rate_limits_lift:
            pytest.skip("an injected rate limit never lifts here, so no retry can be accepted")
        harness.inject_rate_limit(retry_after=1.5)
        results = harness.provider().send_batch([make_message("rl@example.com")])
        assert results[0].accepted
        assert 1.5 in harness.slept

    def test_a_timeout_after_sending_is_unknown_unless_its_idempotency_key_settles_it(
        self, harness
    ) -> None:
        harness.inject_timeout()
        message = make_message("slow@example.com")
        provider = harness.provider()
        results = provider.send_batch([message])
        if provider._idempotency_key([message]) is not None:
            # Made again under the same key: the provider answers the first request's outcome.
            assert results[0].accepted
            assert len(harness.slept) == 1
            assert message.message_key in harness.delivered_keys()
        else:
            assert all_in_doubt(results)
            assert harness.slept == []

    def test_the_journal_brackets_every_call(self, harness) -> None:
        messages = [make_message(f"j{i}@example.com") for i in range(3)]
        journal = RecordingJournal()
        results = harness.provider().send_batch(messages, journal)
        handed = [key for kind, keys in journal.calls if kind == "handing_over" for key in keys]
        assert sorted(handed) == sorted(m.message_key for m in messages)
        assert journal.calls[0][0] == "handing_over"
        answered = {key for kind, keys in journal.calls if kind == "answered" for key in keys}
        assert answered == {r.message_key for r in results}

    def test_a_later_call_that_fails_never_undoes_an_accepted_one(self, harness) -> None:
        """The partial-batch rule: each call keeps its own outcome (issue 6's duplicates)."""
        messages = [make_message(f"part{i}@example.com") for i in range(6)]
        provider = harness.provider()
        provider.max_batch_size = 2
        provider.request_size = min(provider.request_size, 2)  # 1 stays 1 (per-message APIs)
        provider.concurrency = 1
        journal = ThrottledAfterFirstCall(harness)
        results = provider.send_batch(messages, journal)

        first = set(journal.calls[0][1])
        assert 0 < len(first) < len(messages)
        for result in results:
            if result.message_key in first:
                assert result.accepted, result
            else:
                assert result.outcome == SendOutcome.NOT_SENT and result.account_unavailable
        delivered = harness.delivered_keys()
        assert first <= delivered.keys()
        assert not ({m.message_key for m in messages} - first) & delivered.keys()

    def test_a_signed_webhook_verifies_once_and_a_replay_is_refused(self, harness) -> None:
        if not harness.supports_webhooks:
            pytest.skip("this provider has no webhooks")
        body = harness.event_body("delivered", "ann@example.com", "k" * 32)
        request = harness.signed_webhook(body)
        guard = SeenTokens()
        harness.verify(request, guard)
        with pytest.raises(WebhookRejected):
            harness.verify(request, guard)

    def test_forged_and_stale_webhooks_are_refused(self, harness) -> None:
        if not harness.supports_webhooks:
            pytest.skip("this provider has no webhooks")
        body = harness.event_body("delivered", "ann@example.com", "k" * 32)
        with pytest.raises(WebhookRejected):
            harness.verify(harness.forged_webhook(body), SeenTokens())
        stale = harness.stale_webhook(body)
        if stale is not None:
            with pytest.raises(WebhookRejected):
                harness.verify(stale, SeenTokens())

    def test_webhook_events_map_to_canonical_ones(self, harness) -> None:
        if not harness.supports_webhooks:
            pytest.skip("this provider has no webhooks")
        key = message_key("acme", "pro_tips", "ann@example.com", "w1")
        events = harness.parse(harness.event_body("delivered", "ann@example.com", key), "acct")
        assert [e.event_type for e in events] == [EventType.DELIVERED]
        assert events[0].message_key == key
        assert events[0].recipient == "ann@example.com"
        again = harness.parse(harness.event_body("delivered", "ann@example.com", key), "acct")
        assert [e.event_id for e in again] == [e.event_id for e in events]

    def test_an_unknown_event_is_kept_raw(self, harness) -> None:
        if not harness.supports_webhooks:
            pytest.skip("this provider has no webhooks")
        body = harness.unknown_event_body()
        events = harness.parse(body, "acct")
        assert events and all(e.event_type == EventType.UNKNOWN for e in events)
        assert all(e.raw_payload for e in events)

    def test_the_spec_is_registered_and_says_what_the_package_does(self, harness) -> None:
        spec = harness.spec
        assert SPECS[spec.kind] is spec
        assert spec.settings.__name__.lower() == f"{spec.kind}settings"
        assert (spec.verify_webhook is not None) == harness.supports_webhooks
        provider = harness.provider()
        assert provider.kind == spec.kind
        assert provider.max_batch_size <= spec.max_batch_size
        takes_a_key = provider._idempotency_key([make_message("idem@example.com")]) is not None
        assert takes_a_key == spec.idempotent

    def test_recorded_fixtures_parse_to_their_canonical_type(self, harness) -> None:
        if harness.fixtures is None:
            pytest.skip("this provider has no recorded payloads")
        assert {p.stem for p in harness.fixtures.glob("*.json")} == set(harness.fixture_types)
        assert (harness.fixtures / "README.md").is_file()  # cites the provider's documentation
        for name, expected in harness.fixture_types.items():
            body = (harness.fixtures / f"{name}.json").read_bytes()
            events = harness.parse(body, "acct")
            assert events, name
            assert {(e.event_type, e.bounce_class) for e in events} == {expected}, name
            for event in events:
                assert event.provider == harness.spec.kind, name
                assert event.provider_account == "acct", name
                assert event.occurred_at.tzinfo is None, name
                assert event.raw_payload and json.loads(event.raw_payload), name
            again = harness.parse(body, "acct")
            assert [e.event_id for e in again] == [e.event_id for e in events], name
