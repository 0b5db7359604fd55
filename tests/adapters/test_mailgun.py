"""The Mailgun adapter against the Mailgun simulator: sending, webhooks, polling, parsing."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from pydantic import ValidationError

from adapters.providers import mailgun
from adapters.providers.mailgun import MailgunProvider, parse, poll_events
from adapters.providers.mailgun import MailgunSettings as Settings
from adapters.simulator import Fault, Simulator
from adapters.simulator import mailgun as mailgun_sim
from mailers import clock
from mailers.config import ProviderAccountConfig
from mailers.errors import (
    ConfigError,
    ProviderAuthError,
    ProviderUnavailable,
    SecretMissing,
    WebhookRejected,
)
from mailers.events import BounceClass, CanonicalEvent, EventType
from mailers.messages import MESSAGE_KEY_HEADER, OutboundMessage, SendOutcome, SendResult
from mailers.secrets import SecretRef
from mailers.webhooks import SeenTokens, WebhookRequest
from tests.adapters.provider_contract import (
    CLIENT_TIMEOUT,
    HELD,
    ProviderContract,
    RecordingJournal,
    SimulatorHarness,
    account_left_the_run,
    all_in_doubt,
    make_message,
)

ACCOUNT = "acme_mailgun"
DOMAIN = "mg.acme.test"
API_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0-test"
SIGNING_KEY = "whsk-5f1d0c8e2b7a4e1f9c3d6b8a0e2f4c6d-test"
CREDENTIALS = {"api_key": API_KEY, "webhook_signing_key": SIGNING_KEY}
ENV = {"MAILGUN_TEST_API_KEY": API_KEY, "MAILGUN_TEST_SIGNING_KEY": SIGNING_KEY}
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mailgun"
FIXTURE_KEY = "8f6931e16608fcb6afaa5a53de4b1130"


FIXTURE_TYPES = {
    "delivered": (EventType.DELIVERED, None),
    "failed_permanent": (EventType.BOUNCED, BounceClass.HARD),
    "failed_too_old": (EventType.BOUNCED, BounceClass.SOFT),
    "failed_temporary": (EventType.DEFERRED, None),
    "complained": (EventType.COMPLAINED, None),
    "opened": (EventType.OPENED, None),
    "clicked": (EventType.CLICKED, None),
    "unsubscribed": (EventType.UNSUBSCRIBED, None),
    "rejected": (EventType.REJECTED, None),
    "accepted": (EventType.UNKNOWN, None),
}


def account_config(**settings: Any) -> ProviderAccountConfig:
    return ProviderAccountConfig(
        kind="mailgun",
        credentials={
            "api_key": SecretRef(env="MAILGUN_TEST_API_KEY"),
            "webhook_signing_key": SecretRef(env="MAILGUN_TEST_SIGNING_KEY"),
        },
        settings={"domain": DOMAIN, **settings},
    )


class MailgunHarness(SimulatorHarness):
    """The shared contract's harness, over a live simulator."""

    kind = "mailgun"
    spec = mailgun.SPEC
    fixtures = FIXTURES
    fixture_types = FIXTURE_TYPES
    secrets: ClassVar[list[str]] = [API_KEY, SIGNING_KEY]
    parse = staticmethod(parse)

    def __init__(self, sim: Simulator, domain: str) -> None:
        super().__init__(sim)
        self.domain = domain

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "domain": self.domain,
            "base_url": self.sim.base_url,
            "timeout_seconds": CLIENT_TIMEOUT,
            **overrides,
        }
        return Settings.model_validate(values)

    def provider(
        self, *, valid_credentials: bool = True, max_batch_size: int = 1000, **settings: Any
    ) -> MailgunProvider:
        key = API_KEY if valid_credentials else "key-wrong"
        provider = MailgunProvider(
            ACCOUNT,
            self.settings(**settings),
            key,
            max_batch_size=max_batch_size,
            sleep=self.slept.append,
        )
        return self.track(provider)

    def messages(self) -> list[dict[str, Any]]:
        """Messages the simulator accepted for this test's domain."""
        return [m for m in self.stored() if m["domain"] == self.domain]

    def webhooks(self) -> list[bytes]:
        """Signed webhook bodies of this test's domain's events."""
        return [
            body
            for body in mailgun_sim.events_as_webhooks(self.sim)
            if json.loads(body)["event-data"]["domain"]["name"] == self.domain
        ]

    def sends(self) -> int:
        """Send requests the simulator served for this test's domain."""
        path = f"/v3/{self.domain}/messages"
        return sum(1 for p, _, served in self.sim.requests if p == "mailgun" and served == path)

    def delivered_keys(self) -> dict[str, str]:
        return {m["variables"]["mailers_message_key"]: m["recipient"] for m in self.messages()}

    def event_body(self, event: str, recipient: str, key: str) -> bytes:
        payload = {
            "event": event,
            "id": f"id-{event}-{key[:8]}",
            "timestamp": 1795420801.25,
            "log-level": "info",
            "recipient": recipient,
            "message": {"headers": {"message-id": f"20261123.{key[:12]}@{DOMAIN}"}},
            "user-variables": {"mailers_message_key": key, "mailers_workspace": "acme"},
        }
        return mailgun_sim.webhook_request(payload, CREDENTIALS).body

    def unknown_event_body(self) -> bytes:
        payload = {"event": "teleported", "id": "x1", "timestamp": 1795420801.0}
        return mailgun_sim.webhook_request(payload, CREDENTIALS).body

    def _resigned(self, body: bytes, key: str, timestamp: float | None = None) -> WebhookRequest:
        event = json.loads(body)["event-data"]
        return mailgun_sim.webhook_request(
            event, {**CREDENTIALS, "webhook_signing_key": key}, timestamp=timestamp
        )

    def signed_webhook(self, body: bytes) -> WebhookRequest:
        return self._resigned(body, SIGNING_KEY)

    def forged_webhook(self, body: bytes) -> WebhookRequest:
        return self._resigned(body, "not-the-signing-key")

    def stale_webhook(self, body: bytes) -> WebhookRequest:
        return self._resigned(body, SIGNING_KEY, timestamp=clock.epoch() - 600)

    def verify(self, request: WebhookRequest, guard: SeenTokens) -> None:
        mailgun.verify_webhook(request, account_config(), guard)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A Mailgun simulator of the test's own: no request or fault outlives its test."""
    with Simulator() as simulator:
        mailgun_sim.register(simulator, credentials=CREDENTIALS, domains=KNOWN_DOMAINS)
        yield simulator


@pytest.fixture(autouse=True)
def _credentials_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


_domains = itertools.count(1)
KNOWN_DOMAINS: set[str] = set()
"""Domains the simulator knows: each harness adds its own; others answer 404."""


@pytest.fixture
def harness(sim: Simulator) -> Iterator[MailgunHarness]:
    h = MailgunHarness(sim, f"mg{next(_domains)}.acme.test")
    KNOWN_DOMAINS.add(h.domain)
    yield h
    h.close()


class TestContract(ProviderContract):
    """Every shared provider test, for Mailgun."""


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def test_the_provider_side_gets_key_in_variables_and_header(harness: MailgunHarness) -> None:
    message = make_message("ann@example.com")

    [result] = harness.provider().send_batch([message])

    [stored] = harness.messages()
    assert result.accepted and result.provider_message_id == stored["id"]
    assert not result.provider_message_id.startswith("<")
    assert stored["variables"] == message.metadata
    assert stored["headers"][MESSAGE_KEY_HEADER] == message.message_key
    assert stored["headers"]["List-Unsubscribe"] == "<https://u.test/x>"
    assert stored["from"] == "Acme <news@news.acme.test>"
    assert (stored["subject"], stored["text"], stored["html"]) == (
        message.subject,
        message.text,
        message.html,
    )


def test_events_carry_the_key_back_and_match_the_provider_id(harness: MailgunHarness) -> None:
    message = make_message("ann@example.com")
    [result] = harness.provider().send_batch([message])

    events = [e for body in harness.webhooks() for e in parse(body, "a")]

    assert events and events[0].event_type is EventType.DELIVERED
    assert {e.message_key for e in events} == {message.message_key}
    assert {e.provider_message_id for e in events} == {result.provider_message_id}
    assert {(e.workspace, e.stream, e.campaign) for e in events} == {
        ("acme", "lifecycle", "pro_tips")
    }
    assert events[0].sending_domain == "news.acme.test"


def test_each_message_is_its_own_call_journaled_in_waves_of_concurrency() -> None:
    class Recording(MailgunProvider):
        calls: list[int]

        def _send_request(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
            self.calls.append(len(messages))
            return [SendResult(m.message_key, True, provider_message_id="x") for m in messages]

    provider = Recording(ACCOUNT, Settings(domain=DOMAIN, concurrency=4), API_KEY)
    provider.calls = []
    messages = [make_message(f"bulk{i}@example.com") for i in range(10)]
    journal = RecordingJournal()

    results = provider.send_batch(messages, journal)
    provider.close()

    assert mailgun.MAX_BATCH_SIZE == 1000
    assert provider.calls == [1] * 10
    assert len(results) == 10 and all(r.accepted for r in results)
    waves = [len(keys) for kind, keys in journal.calls if kind == "handing_over"]
    assert waves == [4, 4, 2]


def test_a_batch_over_the_configured_size_goes_out_in_several_chunks(
    harness: MailgunHarness,
) -> None:
    provider = harness.provider(max_batch_size=3)
    messages = [make_message(f"user{i}@example.com") for i in range(7)]

    results = provider.send_batch(messages)

    assert [r.accepted for r in results] == [True] * 7
    assert harness.sends() == 7
    assert sorted(harness.delivered_keys()) == sorted(m.message_key for m in messages)


def test_build_caps_batch_size_and_resolves_the_api_key(tmp_path: Path) -> None:
    config = account_config().model_copy(update={"batch_size": 5000})

    provider = mailgun.build(ACCOUNT, config, Settings(domain=DOMAIN), None)  # type: ignore[arg-type]
    provider.close()

    assert provider.max_batch_size == mailgun.MAX_BATCH_SIZE
    assert provider.kind == "mailgun" and provider.account == ACCOUNT


def test_build_without_the_api_key_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MAILGUN_TEST_API_KEY")
    with pytest.raises(SecretMissing, match=r"MAILGUN_TEST_API_KEY.*acme_mailgun.*api_key"):
        mailgun.build(ACCOUNT, account_config(), Settings(domain=DOMAIN), None)  # type: ignore[arg-type]
    bare = ProviderAccountConfig(kind="mailgun", settings={"domain": DOMAIN})
    with pytest.raises(ConfigError, match=r"credentials\.api_key is required"):
        mailgun.build(ACCOUNT, bare, Settings(domain=DOMAIN), None)  # type: ignore[arg-type]


def test_the_simulator_enforces_the_1000_recipient_batch_limit(harness: MailgunHarness) -> None:
    auth = ("api", API_KEY)
    url = f"{harness.sim.base_url}/v3/{harness.domain}/messages"
    form: dict[str, Any] = {"from": "news@news.acme.test", "subject": "Hi", "text": "Hi"}
    addresses = [f"u{i}@example.com" for i in range(1001)]

    too_many = httpx.post(url, auth=auth, data={**form, "to": addresses})
    just_right = httpx.post(
        url,
        auth=auth,
        data={
            **form,
            "to": addresses[:1000],
            "recipient-variables": json.dumps({a: {"n": i} for i, a in enumerate(addresses)}),
            "subject": "Hi %recipient.n%",
            "v:n": "%recipient.n%",
        },
    )

    assert too_many.status_code == 400
    assert "1000" in too_many.json()["message"]
    assert just_right.status_code == 200
    assert just_right.json()["message"] == "Queued. Thank you."
    stored = harness.messages()
    assert len(stored) == 1000
    assert len({m["id"] for m in stored}) == 1  # one id per call
    assert (stored[7]["subject"], stored[7]["variables"]) == ("Hi 7", {"n": "7"})


def test_one_refused_entry_is_rejected_and_only_the_good_ones_go_once(
    harness: MailgunHarness,
) -> None:
    good = [make_message(f"ok{i}@example.com") for i in range(4)]
    bad = make_message("nobody@reject.mailers.test")
    batch = [good[0], good[1], bad, good[2], good[3]]

    results = harness.provider().send_batch(batch)

    by_key = {r.message_key: r for r in results}
    assert not by_key[bad.message_key].accepted
    assert "not a valid address" in (by_key[bad.message_key].reason or "")
    assert all(by_key[m.message_key].accepted for m in good)
    assert harness.sends() == 5  # nothing was sent twice
    keys = [m["variables"]["mailers_message_key"] for m in harness.messages()]
    assert sorted(keys) == sorted(m.message_key for m in good)


def test_a_whole_call_400_rejects_that_message_only(harness: MailgunHarness) -> None:
    harness.sim.inject("mailgun", Fault(status=400))
    messages = [make_message(f"u{i}@example.com") for i in range(3)]

    results = harness.provider(concurrency=1).send_batch(messages)

    assert [r.accepted for r in results] == [False, True, True]
    assert results[0].reason == "mailgun 400: simulated 400"
    assert harness.slept == []


def test_a_503_with_retry_after_is_retried_then_the_message_goes(
    harness: MailgunHarness,
) -> None:
    harness.sim.inject("mailgun", Fault(status=503, retry_after=0.5))

    [result] = harness.provider().send_batch([make_message("retry@example.com")])

    assert result.accepted
    assert harness.slept == [0.5]
    assert harness.sends() == 2
    assert len(harness.messages()) == 1


def test_a_429_inside_a_batch_is_retried_for_that_message_alone(
    harness: MailgunHarness,
) -> None:
    harness.sim.inject("mailgun", Fault(), Fault(status=429, retry_after=2))
    messages = [make_message(f"u{i}@example.com") for i in range(3)]

    results = harness.provider(concurrency=1).send_batch(messages)

    assert all(r.accepted for r in results)
    assert harness.slept == [2.0]
    assert harness.sends() == 4
    assert len(harness.messages()) == 3


def test_an_outage_before_anything_was_accepted_fails_the_whole_batch(
    harness: MailgunHarness,
) -> None:
    harness.sim.inject("mailgun", *[Fault(status=503, retry_after=0.5)] * 3)
    messages = [make_message(f"u{i}@example.com") for i in range(3)]

    results = harness.provider(concurrency=1).send_batch(messages)

    assert "gave up after 3 attempts" in account_left_the_run(results)
    assert harness.messages() == []


def test_an_outage_mid_batch_keeps_the_accepted_and_resends_nothing(
    harness: MailgunHarness,
) -> None:
    harness.sim.inject("mailgun", Fault(), *[Fault(status=503, retry_after=0.5)] * 3)
    messages = [make_message(f"u{i}@example.com") for i in range(3)]

    results = harness.provider(concurrency=1).send_batch(messages)

    # Only the two never accepted fail over (account_unavailable); the accepted one stays
    # accepted, so nothing goes twice.
    assert [(r.accepted, r.outcome, r.account_unavailable) for r in results] == [
        (True, SendOutcome.ANSWERED, False),
        (False, SendOutcome.NOT_SENT, True),
        (False, SendOutcome.NOT_SENT, True),
    ]
    assert len(harness.messages()) == 1


def test_a_timeout_mid_batch_leaves_only_that_message_in_doubt(
    harness: MailgunHarness,
) -> None:
    harness.sim.inject("mailgun", Fault(), Fault(timeout=HELD))
    messages = [make_message(f"u{i}@example.com") for i in range(3)]

    results = harness.provider(concurrency=1).send_batch(messages)

    assert [r.message_key for r in results] == [m.message_key for m in messages]
    assert [(r.accepted, r.outcome) for r in results] == [
        (True, SendOutcome.ANSWERED),
        (False, SendOutcome.UNKNOWN),
        (True, SendOutcome.ANSWERED),
    ]
    assert harness.slept == []


def test_a_timeout_on_every_call_is_unknown_for_the_batch(harness: MailgunHarness) -> None:
    harness.sim.inject("mailgun", Fault(timeout=HELD), Fault(timeout=HELD))

    results = harness.provider(concurrency=2).send_batch(
        [make_message("a@example.com"), make_message("b@example.com")]
    )

    assert all_in_doubt(results)


def test_an_unknown_domain_takes_the_account_out(harness: MailgunHarness) -> None:
    provider = harness.provider(domain="mg.other.test")

    reason = account_left_the_run(provider.send_batch([make_message("a@example.com")]))

    assert re.search(r"404.*settings\.domain", reason)


def test_test_mode_is_passed_and_nothing_is_delivered(harness: MailgunHarness) -> None:
    harness.provider(test_mode=True).send_batch([make_message("t@example.com")])

    [stored] = harness.messages()
    assert stored["options"] == {"testmode": "yes"}
    assert harness.webhooks() == []


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"domain": "not a domain"},
        {"domain": DOMAIN, "base_url": "http://api.mailgun.net"},
        {"domain": DOMAIN, "base_url": "https://api.mailgun.net/v3"},
        {"domain": DOMAIN, "concurrency": 9},
        {"domain": DOMAIN, "poll_page_size": 301},
        {"domain": DOMAIN, "api_key": "secrets-are-credentials"},
    ],
)
def test_invalid_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate(settings)


def test_settings_defaults_and_eu_region() -> None:
    us = Settings(domain=DOMAIN)
    eu = Settings(domain=DOMAIN, base_url="https://api.eu.mailgun.net/")

    assert (us.base_url, us.timeout_seconds, us.concurrency) == ("https://api.mailgun.net", 30, 4)
    assert eu.base_url == "https://api.eu.mailgun.net"
    assert Settings(domain=DOMAIN, base_url="http://127.0.0.1:8025").base_url.startswith("http:")


def signed(event: dict[str, Any], **kwargs: Any) -> WebhookRequest:
    return mailgun_sim.webhook_request(event, CREDENTIALS, **kwargs)


def test_webhook_timestamps_too_far_ahead_are_refused() -> None:
    request = signed({"event": "delivered"}, timestamp=clock.epoch() + 900)

    with pytest.raises(WebhookRejected, match="future"):
        mailgun.verify_webhook(request, account_config(), SeenTokens())


def test_webhook_freshness_follows_mailers_clock(fixed_clock: clock.FixedClock) -> None:
    fixed_clock.set(datetime(2031, 1, 6, 8, 0, tzinfo=UTC))
    request = signed({"event": "delivered"})  # the simulator signs at Mailers' now

    mailgun.verify_webhook(request, account_config(), SeenTokens())
    fixed_clock.advance(mailgun.WEBHOOK_MAX_AGE_SECONDS + 1)
    with pytest.raises(WebhookRejected, match="too old"):
        mailgun.verify_webhook(request, account_config(), SeenTokens())


def test_webhook_freshness_uses_the_given_clock() -> None:
    request = signed({"event": "delivered"}, timestamp=1_000_000)

    mailgun.verify_webhook(request, account_config(), SeenTokens(), now=1_000_100)
    with pytest.raises(WebhookRejected, match="too old"):
        mailgun.verify_webhook(request, account_config(), SeenTokens(), now=1_000_400)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"event-data": {}}',
        b'{"signature": "x", "event-data": {}}',
        b'{"signature": {"timestamp": "12a", "token": "t", "signature": "s"}, "event-data": {}}',
        b'{"signature": {"timestamp": "1", "signature": "s"}, "event-data": {}}',
        b'{"signature": {"timestamp": "1", "token": "t", "signature": "s"}}',
    ],
)
def test_malformed_webhooks_are_refused(body: bytes) -> None:
    with pytest.raises(WebhookRejected):
        mailgun.verify_webhook(WebhookRequest(body=body), account_config(), SeenTokens())


def test_a_non_ascii_signature_is_refused_not_crashed() -> None:
    body = json.loads(signed({"event": "delivered"}).body)
    body["signature"]["signature"] = "é" * 64

    with pytest.raises(WebhookRejected, match="does not match"):
        mailgun.verify_webhook(
            WebhookRequest(body=json.dumps(body).encode()), account_config(), SeenTokens()
        )


def test_a_forged_webhook_does_not_use_up_the_genuine_token() -> None:
    genuine = signed({"event": "delivered"})
    forged = json.loads(genuine.body)
    forged["signature"]["signature"] = "0" * 64
    guard = SeenTokens()

    with pytest.raises(WebhookRejected):
        mailgun.verify_webhook(
            WebhookRequest(body=json.dumps(forged).encode()), account_config(), guard
        )
    mailgun.verify_webhook(genuine, account_config(), guard)


def test_a_subaccount_parent_signature_verifies() -> None:
    body = json.loads(signed({"event": "delivered"}).body)
    body["signature"]["parent-signature"] = body["signature"]["signature"]
    body["signature"]["signature"] = "f" * 64

    mailgun.verify_webhook(
        WebhookRequest(body=json.dumps(body).encode()), account_config(), SeenTokens()
    )


def test_an_integer_timestamp_verifies_like_a_string() -> None:
    body = json.loads(signed({"event": "delivered"}).body)
    body["signature"]["timestamp"] = int(body["signature"]["timestamp"])

    mailgun.verify_webhook(
        WebhookRequest(body=json.dumps(body).encode()), account_config(), SeenTokens()
    )


def test_the_webhook_age_limit_is_a_setting() -> None:
    request = signed({"event": "delivered"}, timestamp=1_000_000)
    relaxed = account_config(webhook_max_age_seconds=3600)

    mailgun.verify_webhook(request, relaxed, SeenTokens(), now=1_000_000 + 3000)
    with pytest.raises(WebhookRejected, match="too old"):
        mailgun.verify_webhook(request, account_config(), SeenTokens(), now=1_000_000 + 3000)
    with pytest.raises(ConfigError, match="settings are invalid"):
        mailgun.verify_webhook(request, account_config(webhook_max_age_seconds=5), SeenTokens())


def test_webhook_verification_without_a_signing_key_is_a_config_error() -> None:
    config = ProviderAccountConfig(kind="mailgun", settings={"domain": DOMAIN})

    with pytest.raises(ConfigError, match=r"credentials\.webhook_signing_key"):
        mailgun.verify_webhook(signed({"event": "delivered"}), config, SeenTokens())


def test_simulated_webhooks_verify_and_parse(harness: MailgunHarness) -> None:
    messages = [make_message(f"u{i}@example.com") for i in range(3)]
    messages.append(make_message("hard@bounce.mailers.test"))
    harness.provider().send_batch(messages)
    guard = SeenTokens()

    bodies = harness.webhooks()
    for body in bodies:
        mailgun.verify_webhook(WebhookRequest(body=body), account_config(), guard)
    events = [e for body in bodies for e in parse(body, ACCOUNT)]

    assert len({e.event_id for e in events}) == len(events)
    assert EventType.UNKNOWN not in {e.event_type for e in events}
    [bounce] = [e for e in events if e.event_type is EventType.BOUNCED]
    assert (bounce.bounce_class, bounce.recipient) == (BounceClass.HARD, "hard@bounce.mailers.test")
    assert bounce.reason and bounce.reason.startswith("550 5.1.1")


@pytest.mark.parametrize("name", sorted(FIXTURE_TYPES))
def test_recorded_fixtures_carry_the_message_its_event_and_its_mailgun_id(name: str) -> None:
    body = fixture(name)

    [event] = parse(body, ACCOUNT)

    event_data = json.loads(body)["event-data"]
    assert json.loads(event.raw_payload) == event_data
    assert event.event_id == f"mailgun:20261123:{event_data['id']}"
    assert event.message_key == FIXTURE_KEY
    assert (event.workspace, event.stream, event.campaign) == ("acme", "lifecycle", "pro_tips")
    assert event.recipient == "alice@example.com"
    assert event.provider_message_id == "20261123080000.5d3c0a1b2e4f6a7b@mg.acme.test"


def test_fixture_details_reasons_urls_and_times() -> None:
    def one(name: str) -> CanonicalEvent:
        return parse(fixture(name), ACCOUNT)[0]

    assert one("failed_permanent").reason == (
        "550 5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos or unnecessary spaces. "
        "(permanent/bounce)"
    )
    assert one("failed_temporary").reason is not None
    assert one("failed_temporary").reason.startswith("452 4.2.2")  # type: ignore[union-attr]
    assert one("failed_too_old").reason == "602 Too old (permanent/old)"
    assert one("complained").reason
    assert one("rejected").reason == (
        "Sandbox subdomains are for test purposes only: Please add your own domain or add "
        "the address to authorized recipients in Account Settings."
    )
    assert one("clicked").url == "https://acme.test/tips?utm_source=mailgun"
    assert one("opened").url is None
    assert one("delivered").occurred_at.isoformat() == "2026-11-23T08:00:01.658528"
    assert one("delivered").sending_domain == "news.acme.test"
    assert one("opened").sending_domain is None  # engagement events carry only message-id


def test_a_polled_item_parses_like_the_webhook_around_it() -> None:
    body = fixture("delivered")
    item = json.dumps(json.loads(body)["event-data"]).encode()
    compact = json.dumps(json.loads(body), separators=(",", ":")).encode()

    assert parse(item, ACCOUNT) == parse(body, ACCOUNT) == parse(compact, ACCOUNT)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"reason": "suppress-bounce"}, (EventType.BOUNCED, BounceClass.HARD)),
        ({"reason": "suppress-unsubscribe"}, (EventType.FAILED, None)),
        ({"reason": "suppress-complaint"}, (EventType.FAILED, None)),
        ({"severity": "temporary", "reason": "old"}, (EventType.BOUNCED, BounceClass.SOFT)),
        ({"severity": "temporary", "reason": "generic"}, (EventType.DEFERRED, None)),
        ({"severity": "permanent", "reason": "espblock"}, (EventType.BOUNCED, BounceClass.HARD)),
        ({"severity": None, "reason": None}, (EventType.FAILED, None)),
    ],
)
def test_failed_events_map_by_reason_then_severity(
    changes: dict[str, Any], expected: tuple[EventType, BounceClass | None]
) -> None:
    event = json.loads(fixture("failed_permanent"))["event-data"]
    event.update(changes)

    [parsed] = parse(json.dumps(event).encode(), ACCOUNT)

    assert (parsed.event_type, parsed.bounce_class) == expected


def test_parse_tolerates_sparse_events_and_list_user_variables() -> None:
    payload = b'{"event": "opened", "timestamp": 1795420980, "user-variables": []}'

    [event] = parse(payload, ACCOUNT)

    assert event.event_type is EventType.OPENED
    assert (event.message_key, event.recipient, event.provider_message_id) == (None, None, None)
    assert event.event_id == parse(payload, ACCOUNT)[0].event_id
    assert event.event_id.startswith("mailgun:")


def test_event_ids_differ_for_the_same_mailgun_id_on_other_days() -> None:
    first = b'{"event": "opened", "id": "same", "timestamp": 1795420980}'
    next_day = b'{"event": "opened", "id": "same", "timestamp": 1795507380}'

    assert parse(first, ACCOUNT)[0].event_id != parse(next_day, ACCOUNT)[0].event_id


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1, 2]", b'{"event-data": []}', b'{"event": "opened"}', b""],
)
def test_parse_garbage_raises_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse(raw, ACCOUNT)


def poll(harness: MailgunHarness, cursor: str | None, **settings: Any) -> tuple[list[bytes], str]:
    config = account_config(domain=harness.domain, base_url=harness.sim.base_url, **settings)
    payloads, next_cursor = poll_events(
        ACCOUNT, config, Settings.model_validate(config.settings), cursor
    )
    assert next_cursor is not None
    return payloads, next_cursor


def keys_of(payloads: list[bytes]) -> set[str | None]:
    return {e.message_key for p in payloads for e in parse(p, ACCOUNT)}


def test_poll_events_resumes_from_its_cursor(harness: MailgunHarness) -> None:
    provider = harness.provider()
    first = [make_message(f"first{i}@example.com") for i in range(3)]
    provider.send_batch(first)

    payloads, cursor = poll(harness, None)
    again, same = poll(harness, cursor)
    later = [make_message(f"later{i}@example.com") for i in range(2)]
    provider.send_batch(later)
    newer, moved = poll(harness, cursor)

    assert keys_of(payloads) == {m.message_key for m in first}
    assert (again, same) == ([], cursor)
    assert keys_of(newer) == {m.message_key for m in later}
    assert moved != cursor
    assert poll(harness, moved) == ([], moved)
    polled = [e for p in payloads + newer for e in parse(p, ACCOUNT)]
    assert EventType.UNKNOWN not in {e.event_type for e in polled}  # 'accepted' filtered out
    webhooks = [e for b in harness.webhooks() for e in parse(b, "x")]
    assert sorted(e.event_id for e in polled) == sorted(e.event_id for e in webhooks)


def test_polling_looks_back_from_mailers_clock(
    harness: MailgunHarness, fixed_clock: clock.FixedClock
) -> None:
    fixed_clock.set(datetime(2021, 6, 1, 12, 0, tzinfo=UTC))  # years before the system's now
    sent = [make_message(f"old{i}@example.com") for i in range(2)]
    harness.provider().send_batch(sent)

    payloads, _ = poll(harness, None)

    assert keys_of(payloads) == {m.message_key for m in sent}


def test_poll_pages_through_and_stops_at_its_page_budget(harness: MailgunHarness) -> None:
    harness.provider().send_batch([make_message(f"p{i}@example.com") for i in range(4)])
    everything, _ = poll(harness, None)

    part, cursor = poll(harness, None, poll_page_size=2, poll_max_pages=2)
    rest, end = poll(harness, cursor, poll_page_size=2, poll_max_pages=100)

    assert len(part) == 4
    assert part + rest == everything
    assert poll(harness, end) == ([], end)


def test_poll_refuses_to_send_the_key_to_another_host(harness: MailgunHarness) -> None:
    with pytest.raises(ProviderUnavailable, match="refusing to send the API key"):
        poll(harness, "https://evil.example/v3/mg.acme.test/events/abc")


def test_poll_with_refused_credentials_is_an_auth_error(
    harness: MailgunHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILGUN_TEST_API_KEY", "key-wrong")

    with pytest.raises(ProviderAuthError):
        poll(harness, None)


def test_poll_during_an_outage_is_unavailable(harness: MailgunHarness) -> None:
    harness.sim.inject("mailgun", Fault(status=502))

    with pytest.raises(ProviderUnavailable, match="502"):
        poll(harness, None)


def test_credentials_never_reach_logs_errors_or_events(
    harness: MailgunHarness, caplog: pytest.LogCaptureFixture
) -> None:
    basic = base64.b64encode(f"api:{API_KEY}".encode()).decode()
    forbidden = [API_KEY, SIGNING_KEY, basic]
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        provider = harness.provider()
        provider.send_batch([make_message(f"s{i}@example.com") for i in range(3)])
        harness.inject_timeout()
        unknown = provider.send_batch([make_message("slow@example.com")])
        refused = harness.provider(valid_credentials=False).send_batch(
            [make_message("x@example.com")]
        )
        texts += [repr(unknown), repr(refused)]
        with pytest.raises(WebhookRejected) as forged:
            harness.verify(
                harness.forged_webhook(harness.event_body("delivered", "a@b.c", "k")), SeenTokens()
            )
        payloads, _ = poll(harness, None)
        events = [e for p in payloads for e in parse(p, ACCOUNT)]
        events += [e for b in harness.webhooks() for e in parse(b, "a")]
    texts += [str(forged.value), repr(forged.value), repr(forged.value.__cause__)]
    texts += [json.dumps(e.as_row(), default=str) for e in events]
    texts += [caplog.text, repr(provider), repr(harness.settings())]
    assert events
    for text in texts:
        assert all(secret not in text for secret in forbidden), text[:200]
