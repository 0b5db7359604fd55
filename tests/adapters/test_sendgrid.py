"""The SendGrid adapter against the SendGrid simulator: sending, webhooks, parsing."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from pydantic import ValidationError

from adapters.providers import sendgrid
from adapters.providers.hooks import RetryPolicy
from adapters.providers.sendgrid import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SendGridProvider,
    parse,
    verify_webhook,
)
from adapters.providers.sendgrid import SendGridSettings as Settings
from adapters.simulator import Fault, Simulator
from adapters.simulator import sendgrid as sendgrid_sim
from mailers import clock
from mailers.config import ProviderAccountConfig
from mailers.errors import (
    ConfigError,
    SecretMissing,
    WebhookRejected,
)
from mailers.events import BounceClass, CanonicalEvent, EventType
from mailers.messages import MESSAGE_KEY_HEADER, OutboundMessage, SendOutcome
from mailers.secrets import SecretRef
from mailers.webhooks import SeenTokens, WebhookRequest
from tests.adapters.provider_contract import (
    CLIENT_TIMEOUT,
    ProviderContract,
    SimulatorHarness,
    account_left_the_run,
    all_in_doubt,
    make_message,
)

ACCOUNT = "acme_sendgrid"
API_KEY = "SG.sim-api-key.7f3a9c1d2e4b6a8f0c1e3d5b7a9f2c4e"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sendgrid"
FIXTURE_KEY = "5b0f2c1e9a7d4e3f8c6b1a0d2e4f6a8c"
PUBLIC_KEY_ENV = "MAILERS_TEST_SENDGRID_WEBHOOK_KEY"
API_KEY_ENV = "MAILERS_TEST_SENDGRID_API_KEY"

FIXTURE_TYPES = {
    "processed": (EventType.UNKNOWN, None),
    "delivered": (EventType.DELIVERED, None),
    "deferred": (EventType.DEFERRED, None),
    "bounce_hard": (EventType.BOUNCED, BounceClass.HARD),
    "bounce_blocked": (EventType.BOUNCED, BounceClass.SOFT),
    "dropped": (EventType.REJECTED, None),
    "spamreport": (EventType.COMPLAINED, None),
    "open": (EventType.OPENED, None),
    "click": (EventType.CLICKED, None),
    "unsubscribe": (EventType.UNSUBSCRIBED, None),
    "group_unsubscribe": (EventType.UNSUBSCRIBED, None),
    "group_resubscribe": (EventType.UNKNOWN, None),
    "unknown_account_status_change": (EventType.UNKNOWN, None),
}


@pytest.fixture(scope="session")
def webhook_keys() -> tuple[str, str]:
    """A real ECDSA P-256 key pair: (private PEM, public base64 DER)."""
    return sendgrid_sim.generate_webhook_keys()


class SendGridHarness(SimulatorHarness):
    """The shared contract's harness for SendGrid (see ``provider_contract.Harness``)."""

    kind = "sendgrid"
    spec = sendgrid.SPEC
    fixtures = FIXTURES
    fixture_types = FIXTURE_TYPES
    parse = staticmethod(parse)

    def __init__(self, sim: Simulator, keys: tuple[str, str]) -> None:
        super().__init__(sim)
        self.credentials = {"api_key": API_KEY, "webhook_private_key": keys[0]}
        self.public_key = keys[1]
        self.secrets = [API_KEY, keys[0], keys[1]]
        self.config = ProviderAccountConfig(
            kind="sendgrid",
            credentials={
                "api_key": SecretRef(env=API_KEY_ENV),
                "webhook_public_key": SecretRef(env=PUBLIC_KEY_ENV),
            },
        )

    def provider(
        self, *, valid_credentials: bool = True, max_batch_size: int = sendgrid.MAX_BATCH_SIZE
    ) -> SendGridProvider:
        provider = SendGridProvider(
            ACCOUNT,
            Settings(base_url=self.sim.base_url, timeout_seconds=CLIENT_TIMEOUT),
            api_key=API_KEY if valid_credentials else "SG.wrong-key",
            max_batch_size=max_batch_size,
            retry=RetryPolicy(attempts=3, base_delay=0.5),
            sleep=self.slept.append,
        )
        return self.track(provider)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.stored()

    def delivered_keys(self) -> dict[str, str]:
        return {m["custom_args"]["mailers_message_key"]: m["recipient"] for m in self.messages}

    def signed_webhook(self, body: bytes) -> WebhookRequest:
        return sendgrid_sim.webhook_request(body, self.credentials)

    def forged_webhook(self, body: bytes) -> WebhookRequest:
        other_private, _ = sendgrid_sim.generate_webhook_keys()
        return sendgrid_sim.webhook_request(body, {"webhook_private_key": other_private})

    def stale_webhook(self, body: bytes) -> WebhookRequest:
        return sendgrid_sim.webhook_request(body, self.credentials, timestamp=clock.epoch() - 3600)

    def verify(self, request: WebhookRequest, guard: SeenTokens) -> None:
        verify_webhook(request, self.config, guard)

    def event_body(self, event: str, recipient: str, key: str) -> bytes:
        x_message_id = hashlib.sha256(key.encode()).hexdigest()[:22]
        element = sendgrid_sim.sendgrid_event(
            event,
            recipient=recipient,
            sg_message_id=f"{x_message_id}.filter0001.16648.5515E0B88.0",
            custom_args={"mailers_message_key": key, "mailers_workspace": "acme"},
            occurred_at=datetime(2026, 11, 23, 8, 0, 1, tzinfo=UTC),
        )
        return json.dumps([element]).encode()

    def unknown_event_body(self) -> bytes:
        return (FIXTURES / "unknown_account_status_change.json").read_bytes()


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """A SendGrid simulator of the test's own: no request or fault outlives its test."""
    with Simulator() as sim:
        sendgrid_sim.register(sim, credentials={"api_key": API_KEY})
        yield sim


@pytest.fixture
def harness(
    simulator: Simulator, webhook_keys: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[SendGridHarness]:
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    monkeypatch.setenv(PUBLIC_KEY_ENV, webhook_keys[1])
    h = SendGridHarness(simulator, webhook_keys)
    yield h
    h.close()


class TestContract(ProviderContract):
    """Every shared provider test, run against the SendGrid simulator."""


def same_content(
    messages: list[OutboundMessage], html: str = "<p>Tips</p>"
) -> list[OutboundMessage]:
    return [dataclasses.replace(m, html=html, text="Tips") for m in messages]


def send_requests(h: SendGridHarness) -> int:
    return sum(1 for provider, method, _ in h.sim.requests if provider == "sendgrid")


def test_identical_contents_share_one_request_with_a_personalization_each(
    harness: SendGridHarness,
) -> None:
    messages = same_content([make_message(f"u{i}@example.com") for i in range(5)])

    results = harness.provider().send_batch(messages)

    assert send_requests(harness) == 1
    stored = harness.messages
    [x_message_id] = {m["x_message_id"] for m in stored}
    assert [r.provider_message_id for r in results] == [
        f"{x_message_id}:{m.message_key}" for m in messages
    ]
    assert [(m["recipient"], m["subject"]) for m in stored] == [
        (m.recipient, m.subject) for m in messages
    ]


def test_different_contents_go_in_separate_requests_in_input_order(
    harness: SendGridHarness,
) -> None:
    plain = same_content([make_message(f"a{i}@example.com") for i in range(3)], "<p>A</p>")
    other = same_content([make_message(f"b{i}@example.com") for i in range(3)], "<p>B</p>")
    messages = [plain[0], other[0], plain[1], other[1], plain[2], other[2]]

    results = harness.provider().send_batch(messages)

    assert send_requests(harness) == 2
    assert [r.message_key for r in results] == [m.message_key for m in messages]
    assert all(r.accepted for r in results)
    by_request: dict[str, set[str]] = {}
    for stored in harness.messages:
        by_request.setdefault(stored["x_message_id"], set()).add(stored["recipient"][0])
    assert sorted(by_request.values(), key=sorted) == [{"a"}, {"b"}]


def test_a_repeated_address_goes_in_the_next_request(harness: SendGridHarness) -> None:
    first, second = same_content([make_message("x@example.com", w) for w in ("w1", "w2")])

    results = harness.provider().send_batch([first, second])

    assert [r.accepted for r in results] == [True, True]
    assert send_requests(harness) == 2


def test_a_batch_over_the_limit_goes_out_in_several_requests(harness: SendGridHarness) -> None:
    messages = same_content([make_message(f"bulk{i}@example.com") for i in range(2050)])

    results = harness.provider().send_batch(messages)

    assert len(results) == 2050 and all(r.accepted for r in results)
    sizes: dict[str, int] = {}
    for stored in harness.messages:
        sizes[stored["x_message_id"]] = sizes.get(stored["x_message_id"], 0) + 1
    assert sorted(sizes.values()) == [50, 1000, 1000]


def test_a_configured_batch_size_splits_calls(harness: SendGridHarness) -> None:
    messages = same_content([make_message(f"s{i}@example.com") for i in range(7)])

    harness.provider(max_batch_size=3).send_batch(messages)

    assert send_requests(harness) == 3


def test_the_simulator_enforces_the_documented_personalization_limit(
    harness: SendGridHarness,
) -> None:
    body = {
        "personalizations": [
            {"to": [{"email": f"p{i}@example.com"}], "subject": "s"} for i in range(1001)
        ],
        "from": {"email": "news@news.acme.test"},
        "content": [{"type": "text/plain", "value": "x"}],
    }
    response = httpx.post(
        f"{harness.sim.base_url}/v3/mail/send",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["field"] == "personalizations"
    assert "limited to 1000 personalizations" in error["message"]


def test_one_bad_entry_in_a_shared_request_is_split_out(harness: SendGridHarness) -> None:
    good = same_content([make_message(f"g{i}@example.com") for i in range(5)])
    [bad] = same_content([make_message("nobody@reject.mailers.test")])
    messages = [*good[:2], bad, *good[2:]]

    results = harness.provider().send_batch(messages)

    by_key = {r.message_key: r for r in results}
    assert all(by_key[m.message_key].accepted for m in good)
    rejected = by_key[bad.message_key]
    assert not rejected.accepted and rejected.provider_message_id is None
    assert rejected.reason is not None
    assert "personalizations.0.to.0.email: Does not contain a valid address." in rejected.reason
    assert send_requests(harness) > 1
    assert set(harness.delivered_keys()) == {m.message_key for m in good}


def test_the_provider_side_gets_the_key_in_custom_args_and_headers(
    harness: SendGridHarness,
) -> None:
    message = make_message("keys@example.com")

    harness.provider().send_batch([message])

    [stored] = harness.messages
    assert stored["custom_args"] == message.metadata
    assert stored["custom_args"]["mailers_message_key"] == message.message_key
    assert stored["headers"][MESSAGE_KEY_HEADER] == message.message_key
    assert stored["headers"]["List-Unsubscribe"] == message.headers["List-Unsubscribe"]


def test_the_key_header_is_added_when_a_message_lacks_it(harness: SendGridHarness) -> None:
    message = dataclasses.replace(make_message("bare@example.com"), headers={})

    harness.provider().send_batch([message])

    assert harness.messages[0]["headers"] == {MESSAGE_KEY_HEADER: message.message_key}


def test_a_503_with_retry_after_then_success_is_retried(harness: SendGridHarness) -> None:
    harness.sim.inject("sendgrid", Fault(status=503, retry_after=0.5))

    [result] = harness.provider().send_batch([make_message("retry@example.com")])

    assert result.accepted
    assert harness.slept == [0.5]
    assert send_requests(harness) == 2


def test_an_unavailable_first_request_fails_the_batch_over(harness: SendGridHarness) -> None:
    harness.sim.inject("sendgrid", *[Fault(status=503, retry_after=0.5)] * 3)

    results = harness.provider().send_batch([make_message("down@example.com")])

    assert "gave up after 3 attempts" in account_left_the_run(results)


@pytest.mark.parametrize("status", [500, 502, 504, 503])
def test_a_server_error_after_sending_is_in_doubt_not_retried(
    harness: SendGridHarness, status: int
) -> None:
    # Only a 503 that says when to come back proves nothing was processed.
    harness.sim.inject("sendgrid", Fault(status=status))

    results = harness.provider().send_batch([make_message("doubt@example.com")])

    assert all_in_doubt(results)
    assert str(status) in (results[0].reason or "")
    assert send_requests(harness) == 1


def test_a_failure_after_accepted_requests_answers_for_those_only(
    harness: SendGridHarness,
) -> None:
    first = same_content([make_message(f"f{i}@example.com") for i in range(2)], "<p>1</p>")
    later = same_content([make_message(f"l{i}@example.com") for i in range(2)], "<p>2</p>")
    provider = harness.provider()
    harness.sim.inject("sendgrid", Fault(latency=0.01), *[Fault(status=503, retry_after=0.5)] * 3)

    results = provider.send_batch([*first, *later])

    # The accepted two stay accepted; the two refused with 503s were provably not sent,
    # so the core fails them over (account_unavailable) and nothing goes twice.
    assert [r.message_key for r in results] == [m.message_key for m in [*first, *later]]
    assert [(r.accepted, r.outcome, r.account_unavailable) for r in results] == [
        (True, SendOutcome.ANSWERED, False),
        (True, SendOutcome.ANSWERED, False),
        (False, SendOutcome.NOT_SENT, True),
        (False, SendOutcome.NOT_SENT, True),
    ]


def test_an_unexpected_status_takes_the_account_out(harness: SendGridHarness) -> None:
    provider = SendGridProvider(
        ACCOUNT,
        Settings(base_url=f"{harness.sim.base_url}/wrong", timeout_seconds=CLIENT_TIMEOUT),
        api_key=API_KEY,
    )
    try:
        results = provider.send_batch([make_message("nowhere@example.com")])
    finally:
        provider.close()
    assert "404" in account_left_the_run(results)


def test_request_body_carries_settings_and_leaves_out_empty_parts(
    harness: SendGridHarness,
) -> None:
    provider = SendGridProvider(
        ACCOUNT,
        Settings(ip_pool_name="warm", open_tracking=False, click_tracking=True),
        api_key=API_KEY,
    )
    message = dataclasses.replace(make_message("body@example.com"), text="", reply_to=None)
    try:
        body = provider._request_body([message])
    finally:
        provider.close()

    assert body["ip_pool_name"] == "warm"
    assert body["tracking_settings"] == {
        "open_tracking": {"enable": False},
        "click_tracking": {"enable": True},
    }
    assert body["content"] == [{"type": "text/html", "value": message.html}]
    assert body["from"] == {"email": "news@news.acme.test", "name": "Acme"}
    assert "reply_to" not in body


def test_credentials_never_reach_logs_errors_or_events(
    harness: SendGridHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    harness.provider().send_batch([make_message("c1@example.com")])
    refused = harness.provider(valid_credentials=False).send_batch([make_message("c2@example.com")])
    texts.append(account_left_the_run(refused))
    for forged in (harness.forged_webhook(b"[]"), harness.stale_webhook(b"[]")):
        with pytest.raises(WebhookRejected) as rejected:
            harness.verify(forged, SeenTokens())
        texts.append(str(rejected.value))
    events = [e for body in sendgrid_sim.events_as_webhooks(harness.sim) for e in parse(body, "a")]
    texts += [repr(e) for e in events]

    assert events
    for secret in harness.secrets:
        assert secret not in caplog.text
        assert all(secret not in text for text in texts)


def test_two_accounts_share_the_simulator_and_keep_their_own_webhooks() -> None:
    other_key = "SG.second-account-key"
    with Simulator() as sim:
        sendgrid_sim.register(sim, credentials={"api_key": API_KEY})
        sendgrid_sim.register(sim, credentials={"api_key": other_key})
        for key, recipient in ((API_KEY, "one@example.com"), (other_key, "two@example.com")):
            provider = SendGridProvider(ACCOUNT, Settings(base_url=sim.base_url), api_key=key)
            try:
                assert provider.send_batch([make_message(recipient)])[0].accepted
            finally:
                provider.close()

        def recipients(key: str) -> set[str | None]:
            bodies = sendgrid_sim.events_as_webhooks(sim, api_key=key)
            return {e.recipient for body in bodies for e in parse(body, "a")}

        assert recipients(API_KEY) == {"one@example.com"}
        assert recipients(other_key) == {"two@example.com"}
        assert len(sendgrid_sim.events_as_webhooks(sim)) == 1
        assert all(API_KEY not in repr(m) for m in sim.store["sendgrid"]["messages"])


def test_build_resolves_the_api_key_from_the_environment(
    harness: SendGridHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(base_url=harness.sim.base_url)
    provider = sendgrid.build(ACCOUNT, harness.config, settings, app=None)
    try:
        [result] = provider.send_batch([make_message("built@example.com")])
    finally:
        provider.close()
    assert result.accepted

    monkeypatch.delenv(API_KEY_ENV)
    with pytest.raises(SecretMissing, match=API_KEY_ENV) as missing:
        sendgrid.build(ACCOUNT, harness.config, settings, app=None)
    assert "credentials.api_key" in str(missing.value)


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (ProviderAccountConfig(kind="sendgrid"), "credentials.api_key is required"),
        (
            ProviderAccountConfig(
                kind="sendgrid", credentials={"api_key": SecretRef(env="X")}, batch_size=1001
            ),
            "exceeds SendGrid's 1000",
        ),
    ],
)
def test_build_refuses_incomplete_config(config: ProviderAccountConfig, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        sendgrid.build(ACCOUNT, config, Settings(), app=None)


@pytest.mark.parametrize(
    "settings", [{"api_key": "x"}, {"timeout_seconds": 0}, {"open_tracking": "sometimes"}]
)
def test_invalid_settings_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate(settings)


def fixture_events(name: str) -> list[CanonicalEvent]:
    return parse((FIXTURES / f"{name}.json").read_bytes(), ACCOUNT)


@pytest.mark.parametrize("name", sorted(FIXTURE_TYPES))
def test_recorded_fixtures_keep_their_element_sendgrid_id_and_time(name: str) -> None:
    [event] = fixture_events(name)

    element = json.loads((FIXTURES / f"{name}.json").read_text())[0]
    assert json.loads(event.raw_payload) == element
    assert event.event_id == f"sendgrid:{element['sg_event_id']}"
    assert event.occurred_at == datetime.fromtimestamp(element["timestamp"], UTC).replace(
        tzinfo=None
    )


def test_fixture_events_carry_our_metadata_and_provider_id() -> None:
    [event] = fixture_events("delivered")

    assert event.message_key == FIXTURE_KEY
    assert (event.workspace, event.stream, event.campaign) == ("acme", "lifecycle", "pro_tips")
    assert event.recipient == "ann@example.com"
    assert event.provider == "sendgrid" and event.provider_account == ACCOUNT
    assert event.provider_message_id == f"14c5d75ce93:{FIXTURE_KEY}"
    assert event.occurred_at.isoformat() == "2017-12-15T00:59:29"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bounce_hard", "500 unknown recipient (Invalid Address)"),
        ("bounce_blocked", "421 4.7.0 Try again later, closing connection. (EHLO) (Mailbox"),
        ("deferred", "400 try again later"),
        ("dropped", "Bounced Address"),
        ("spamreport", "SendGrid spamreport"),
    ],
)
def test_fixture_reasons(name: str, reason: str) -> None:
    [event] = fixture_events(name)

    assert event.reason is not None and event.reason.startswith(reason)


def test_click_keeps_its_url_and_an_unknown_event_has_no_message() -> None:
    [click] = fixture_events("click")
    [unknown] = fixture_events("unknown_account_status_change")

    assert click.url == "http://www.sendgrid.com/"
    assert (unknown.message_key, unknown.recipient, unknown.provider_message_id) == (
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("bounce_type", "classification", "expected"),
    [
        ("bounce", None, BounceClass.HARD),
        ("blocked", None, BounceClass.SOFT),
        (None, None, BounceClass.HARD),
        ("blocked", "Invalid Address", BounceClass.HARD),
        ("bounce", "Reputation", BounceClass.SOFT),
        ("bounce", "Content", BounceClass.SOFT),
        ("bounce", "Frequency or Volume Too High", BounceClass.SOFT),
        ("bounce", "Technical Failure", BounceClass.SOFT),
        ("bounce", "Mailbox Unavailable", BounceClass.HARD),
        ("blocked", "Unclassified", BounceClass.SOFT),
    ],
)
def test_bounce_class_follows_type_and_classification(
    bounce_type: str | None, classification: str | None, expected: BounceClass
) -> None:
    element: dict[str, object] = {"event": "bounce", "sg_event_id": "b", "timestamp": 1}
    if bounce_type:
        element["type"] = bounce_type
    if classification:
        element["bounce_classification"] = classification

    [event] = parse(json.dumps([element]).encode(), ACCOUNT)

    assert (event.event_type, event.bounce_class) == (EventType.BOUNCED, expected)


def test_one_body_gives_one_event_per_element_and_odd_elements_stay_unknown() -> None:
    body = json.dumps(
        [
            {"event": "delivered", "sg_event_id": "d1", "timestamp": 1700000000},
            "not an event",
            {"event": "open", "timestamp": "1700000100"},
        ]
    ).encode()

    events = parse(body, ACCOUNT)

    assert [e.event_type for e in events] == [
        EventType.DELIVERED,
        EventType.UNKNOWN,
        EventType.OPENED,
    ]
    assert events[1].raw_payload == '"not an event"'
    assert events[2].occurred_at.isoformat() == "2023-11-14T22:15:00"
    assert events[2].event_id.startswith("sendgrid:")
    assert [e.event_id for e in parse(body, ACCOUNT)] == [e.event_id for e in events]


def test_a_single_event_object_and_missing_fields_are_tolerated() -> None:
    [event] = parse(b'{"event": "spamreport"}', ACCOUNT)

    assert event.event_type is EventType.COMPLAINED
    assert event.occurred_at.tzinfo is None
    assert (event.message_key, event.recipient, event.provider_message_id) == (None, None, None)


@pytest.mark.parametrize("raw", [b"not json", b'[{"event": "open"', b"", b"42"])
def test_parse_garbage_raises_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse(raw, ACCOUNT)


def test_simulated_events_follow_the_outcome_rule_and_match_the_send(
    harness: SendGridHarness,
) -> None:
    messages = [
        make_message("ann@example.com"),
        make_message("hard@bounce.mailers.test"),
        make_message("soft@softbounce.mailers.test"),
        make_message("angry@complaint.mailers.test"),
    ]
    results = harness.provider().send_batch(messages)
    ids = {r.message_key: r.provider_message_id for r in results}

    # The simulator is shared by the module's tests (some of which sent to the same keys,
    # or finish a timed-out request late): look at the events of this send only.
    events = [
        e
        for body in sendgrid_sim.events_as_webhooks(harness.sim)
        for e in parse(body, "a")
        if e.provider_message_id in ids.values()
    ]

    by_recipient: dict[str, list[tuple[EventType, BounceClass | None]]] = {}
    for event in events:
        assert event.message_key in ids
        assert event.provider_message_id == ids[event.message_key]
        assert event.recipient is not None
        by_recipient.setdefault(event.recipient, []).append((event.event_type, event.bounce_class))
    assert by_recipient["hard@bounce.mailers.test"] == [(EventType.BOUNCED, BounceClass.HARD)]
    assert by_recipient["soft@softbounce.mailers.test"] == [
        (EventType.DEFERRED, None),
        (EventType.BOUNCED, BounceClass.SOFT),
    ]
    assert by_recipient["angry@complaint.mailers.test"] == [
        (EventType.DELIVERED, None),
        (EventType.COMPLAINED, None),
    ]
    assert by_recipient["ann@example.com"][0] == (EventType.DELIVERED, None)


def fixture_body() -> bytes:
    return (FIXTURES / "delivered.json").read_bytes()


def with_headers(request: WebhookRequest, **changes: str | None) -> WebhookRequest:
    headers = {k: v for k, v in request.headers.items() if k not in changes}
    headers.update({k: v for k, v in changes.items() if v is not None})
    return dataclasses.replace(request, headers=headers)


def test_a_signed_fixture_verifies_with_a_pem_key_too(
    harness: SendGridHarness, webhook_keys: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = (
        serialization.load_pem_private_key(webhook_keys[0].encode(), password=None)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    monkeypatch.setenv(PUBLIC_KEY_ENV, pem)

    harness.verify(harness.signed_webhook(fixture_body()), SeenTokens())


def test_a_tampered_body_is_refused(harness: SendGridHarness) -> None:
    request = harness.signed_webhook(fixture_body())
    tampered = dataclasses.replace(request, body=request.body.replace(b"delivered", b"bounce"))

    with pytest.raises(WebhookRejected, match="signature does not match"):
        harness.verify(tampered, SeenTokens())


def test_a_forged_signature_is_refused(harness: SendGridHarness) -> None:
    request = harness.signed_webhook(fixture_body())
    forged = base64.b64encode(encode_dss_signature(12345, 67890)).decode()

    with pytest.raises(WebhookRejected, match="signature does not match"):
        harness.verify(with_headers(request, **{SIGNATURE_HEADER: forged}), SeenTokens())


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({SIGNATURE_HEADER: None}, "missing"),
        ({TIMESTAMP_HEADER: None}, "missing"),
        ({TIMESTAMP_HEADER: "yesterday"}, "not a Unix timestamp"),
        ({SIGNATURE_HEADER: "%%%not base64%%%"}, "not a base64 DER signature"),
        ({SIGNATURE_HEADER: base64.b64encode(b"not der").decode()}, "not a base64 DER"),
    ],
)
def test_malformed_requests_are_refused(
    harness: SendGridHarness, changes: dict[str, str | None], why: str
) -> None:
    request = with_headers(harness.signed_webhook(fixture_body()), **changes)

    with pytest.raises(WebhookRejected, match=why):
        harness.verify(request, SeenTokens())


def test_a_timestamp_from_the_future_is_refused(harness: SendGridHarness) -> None:
    request = sendgrid_sim.webhook_request(
        fixture_body(), harness.credentials, timestamp=clock.epoch() + 3600
    )

    with pytest.raises(WebhookRejected, match="stale"):
        harness.verify(request, SeenTokens())


def test_webhook_freshness_follows_mailers_clock(
    harness: SendGridHarness, fixed_clock: clock.FixedClock
) -> None:
    fixed_clock.set(datetime(2031, 1, 6, 8, 0, tzinfo=UTC))
    request = sendgrid_sim.webhook_request(fixture_body(), harness.credentials)  # signed now

    verify_webhook(request, harness.config, SeenTokens())
    fixed_clock.advance(sendgrid.WEBHOOK_TOLERANCE_SECONDS + 1)
    with pytest.raises(WebhookRejected, match="stale"):
        verify_webhook(request, harness.config, SeenTokens())


def test_a_request_inside_the_window_verifies_at_a_given_now(harness: SendGridHarness) -> None:
    request = sendgrid_sim.webhook_request(fixture_body(), harness.credentials, timestamp=1000)

    verify_webhook(request, harness.config, SeenTokens(), now=1000 + 299)
    with pytest.raises(WebhookRejected, match="stale"):
        verify_webhook(request, harness.config, SeenTokens(), now=1000 + 301)


def test_a_re_encoded_signature_is_still_a_replay(harness: SendGridHarness) -> None:
    request = harness.signed_webhook(fixture_body())
    r, s = decode_dss_signature(base64.b64decode(request.headers[SIGNATURE_HEADER]))
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    twin = base64.b64encode(encode_dss_signature(r, order - s)).decode()
    twin_request = with_headers(request, **{SIGNATURE_HEADER: twin})
    guard = SeenTokens()

    harness.verify(request, guard)
    with pytest.raises(WebhookRejected, match="replayed"):
        harness.verify(twin_request, guard)


def test_a_forged_request_does_not_use_up_the_guard(harness: SendGridHarness) -> None:
    body = fixture_body()
    guard = SeenTokens()
    with pytest.raises(WebhookRejected):
        harness.verify(harness.forged_webhook(body), guard)

    harness.verify(harness.signed_webhook(body), guard)


def test_an_unusable_verification_key_is_a_config_error(
    harness: SendGridHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = harness.signed_webhook(fixture_body())
    rsa_like = base64.b64encode(
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).decode()

    for value, problem in (("not a key", "not a public key"), (rsa_like, "not an ECDSA P-256")):
        monkeypatch.setenv(PUBLIC_KEY_ENV, value)
        with pytest.raises(ConfigError, match=problem) as info:
            harness.verify(request, SeenTokens())
        assert value not in str(info.value)

    no_key = ProviderAccountConfig(kind="sendgrid")
    with pytest.raises(ConfigError, match="webhook_public_key is required"):
        verify_webhook(request, no_key, SeenTokens())
