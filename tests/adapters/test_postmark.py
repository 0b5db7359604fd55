"""The Postmark provider against the simulator's Postmark API, plus recorded webhook bodies."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from adapters.providers import postmark
from adapters.providers.hooks import RetryPolicy
from adapters.providers.postmark import PostmarkSettings as Settings
from adapters.providers.postmark import parse, poll_events
from adapters.providers.postmark.sending import PostmarkProvider
from adapters.providers.postmark.webhooks import REPLAY_TTL_SECONDS
from adapters.simulator import Fault, Simulator
from adapters.simulator import postmark as postmark_sim
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
from mailers.messages import MESSAGE_KEY_HEADER
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

ACCOUNT = "acme_postmark"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "postmark"
CREDENTIALS = {
    "server_token": "pm-server-token-3f9a1c77",
    "webhook_username": "pm-hook-user-51d2",
    "webhook_password": "pm-hook-pass-8e0b44c1",
}
WRONG_TOKEN = "pm-wrong-token-0c2e9d18"
ENV = {
    "server_token": "MAILERS_TEST_PM_TOKEN",
    "webhook_username": "MAILERS_TEST_PM_HOOK_USER",
    "webhook_password": "MAILERS_TEST_PM_HOOK_PASS",
}
WRONG_ENV = "MAILERS_TEST_PM_WRONG_TOKEN"
FIXED_TIME = datetime(2026, 11, 23, 8, 0, 1, tzinfo=UTC)


def account_config(*, token_env: str = ENV["server_token"], **extra: Any) -> ProviderAccountConfig:
    credentials = {key: SecretRef(env=env) for key, env in ENV.items()}
    credentials["server_token"] = SecretRef(env=token_env)
    return ProviderAccountConfig(kind="postmark", credentials=credentials, **extra)


FIXTURE_TYPES = {
    "delivered": (EventType.DELIVERED, None),
    "hard_bounce": (EventType.BOUNCED, BounceClass.HARD),
    "soft_bounce": (EventType.BOUNCED, BounceClass.SOFT),
    "deferral": (EventType.DEFERRED, None),
    "complaint": (EventType.COMPLAINED, None),
    "open": (EventType.OPENED, None),
    "click": (EventType.CLICKED, None),
    "unsubscribe": (EventType.UNSUBSCRIBED, None),
    "unknown": (EventType.UNKNOWN, None),
}


class PostmarkHarness(SimulatorHarness):
    """The shared contract's view of Postmark (see provider_contract.Harness)."""

    kind = "postmark"
    spec = postmark.SPEC
    fixtures = FIXTURES
    fixture_types = FIXTURE_TYPES

    def __init__(self, sim: Simulator) -> None:
        self.secrets = [*CREDENTIALS.values(), WRONG_TOKEN]
        super().__init__(sim)
        self.config = account_config()
        self.parse = parse

    def settings(self, **overrides: Any) -> Settings:
        return Settings(base_url=self.sim.base_url, timeout_seconds=CLIENT_TIMEOUT, **overrides)

    def provider(
        self, *, valid_credentials: bool = True, config: ProviderAccountConfig | None = None
    ) -> PostmarkProvider:
        config = config or account_config(
            token_env=ENV["server_token"] if valid_credentials else WRONG_ENV
        )
        provider = postmark.build(ACCOUNT, config, self.settings(), None, sleep=self.slept.append)
        return self.track(provider)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.stored()

    def delivered_keys(self) -> dict[str, str]:
        return {m["metadata"]["mailers_message_key"]: m["recipient"] for m in self.messages}

    def signed_webhook(self, body: bytes) -> WebhookRequest:
        return postmark_sim.signed_request(body, CREDENTIALS)

    def forged_webhook(self, body: bytes) -> WebhookRequest:
        return postmark_sim.signed_request(body, {**CREDENTIALS, "webhook_password": "guess"})

    def stale_webhook(self, body: bytes) -> WebhookRequest | None:
        return None  # Postmark sends no timestamp: nothing can be stale

    def verify(self, request: WebhookRequest, guard: SeenTokens) -> None:
        postmark.verify_webhook(request, self.config, guard)

    def event_body(self, event: str, recipient: str, key: str) -> bytes:
        record = postmark_sim.webhook_record(
            event,
            message_id=f"pm-{key[:8]}-0000-0000-0000-000000000000",
            recipient=recipient,
            metadata={"mailers_message_key": key, "mailers_workspace": "acme"},
            occurred_at=FIXED_TIME,
            bounce_id=4_200_000_001,
        )
        return json.dumps(record).encode()

    def unknown_event_body(self) -> bytes:
        return json.dumps(
            {
                "RecordType": "DeliveryDelayNotice",
                "MessageID": "00000000-0000-0000-0000-000000000001",
                "Recipient": "ann@example.com",
                "NoticedAt": "2026-11-23T08:00:00Z",
            }
        ).encode()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A Postmark simulator of the test's own: no request or fault outlives its test."""
    with Simulator() as simulator:
        postmark_sim.register(simulator, credentials=CREDENTIALS)
        yield simulator


@pytest.fixture
def harness(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostmarkHarness]:
    for key, env in ENV.items():
        monkeypatch.setenv(env, CREDENTIALS[key])
    monkeypatch.setenv(WRONG_ENV, WRONG_TOKEN)
    harness = PostmarkHarness(sim)
    yield harness
    harness.close()


class TestContract(ProviderContract):
    """Every shared provider test, against the Postmark simulator."""


def batch_calls(sim: Simulator) -> int:
    return sum(1 for p, m, path in sim.requests if p == "postmark" and path == "/email/batch")


def test_a_batch_larger_than_the_limit_goes_out_in_several_calls(
    harness: PostmarkHarness, sim: Simulator
) -> None:
    messages = [make_message(f"user{i}@example.com") for i in range(postmark.MAX_BATCH_SIZE + 1)]

    results = harness.provider().send_batch(messages)

    assert batch_calls(sim) == 2
    assert [r.message_key for r in results] == [m.message_key for m in messages]
    assert all(r.accepted for r in results)


def test_the_configured_batch_size_cuts_calls_and_never_exceeds_the_limit(
    harness: PostmarkHarness, sim: Simulator
) -> None:
    provider = harness.provider(config=account_config(batch_size=3))
    assert harness.provider(config=account_config(batch_size=10_000)).max_batch_size == 500

    results = provider.send_batch([make_message(f"u{i}@example.com") for i in range(7)])

    assert batch_calls(sim) == 3
    assert all(r.accepted for r in results)


def test_the_simulator_refuses_more_than_500_messages_as_postmark_does(
    harness: PostmarkHarness, sim: Simulator
) -> None:
    body = [{"From": "a@b.test", "To": "c@d.test", "TextBody": "x"}] * 501
    response = httpx.post(
        f"{sim.base_url}/email/batch",
        json=body,
        headers={"X-Postmark-Server-Token": CREDENTIALS["server_token"]},
    )

    assert response.status_code == 422
    assert response.json()["ErrorCode"] == 410


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("POST", "/email/batch", {"json": [], "headers": {}}, 401, 10),
        ("POST", "/email/batch", {"content": b"[{", "headers": None}, 422, 402),
        ("POST", "/email/batch", {"json": {"To": "a@b.test"}, "headers": None}, 422, 403),
        ("POST", "/email/batch", {"json": [{"Metadata": ["x"]}], "headers": None}, 422, 403),
        ("GET", "/bounces", {"params": {"count": 501, "offset": 0}, "headers": None}, 422, 300),
        ("GET", "/bounces", {"params": {"count": 500, "offset": 9600}, "headers": None}, 422, 300),
    ],
)
def test_the_simulator_answers_malformed_calls_like_postmark(
    sim: Simulator, method: str, path: str, kwargs: dict[str, Any], status: int, code: int
) -> None:
    if kwargs["headers"] is None:
        kwargs["headers"] = {"X-Postmark-Server-Token": CREDENTIALS["server_token"]}

    response = httpx.request(method, f"{sim.base_url}{path}", **kwargs)

    assert (response.status_code, response.json()["ErrorCode"]) == (status, code)


def test_a_whole_batch_refused_for_one_bad_entry_is_split_and_the_rest_go(
    harness: PostmarkHarness, sim: Simulator
) -> None:
    messages = [make_message(f"ok{i}@example.com") for i in range(8)]
    bad = replace(messages[5], subject="broken \ud800 subject")
    messages[5] = bad

    results = harness.provider().send_batch(messages)

    by_key = {r.message_key: r for r in results}
    assert not by_key[bad.message_key].accepted
    assert "ErrorCode 402" in (by_key[bad.message_key].reason or "")
    assert sum(r.accepted for r in results) == 7
    # 8 → 4+4 → (2+2) → (1+1): the bad half is halved down to the single bad message.
    assert batch_calls(sim) == 1 + 2 + 2 + 2
    assert {m["recipient"] for m in harness.messages} == {
        m.recipient for m in messages if m is not bad
    }


def test_our_message_key_reaches_postmark_in_metadata_and_header(
    harness: PostmarkHarness,
) -> None:
    message = make_message("ann@example.com")

    [result] = harness.provider().send_batch([message])

    [received] = harness.messages
    assert received["message_id"] == result.provider_message_id
    assert received["metadata"]["mailers_message_key"] == message.message_key
    assert received["metadata"]["mailers_workspace"] == "acme"
    assert received["metadata"]["mailers_campaign"] == "pro_tips"
    assert received["metadata"]["mailers_stream"] == "lifecycle"
    assert received["headers"][MESSAGE_KEY_HEADER] == message.message_key
    assert received["headers"]["List-Unsubscribe"] == "<https://u.test/x>"


def test_the_message_carries_postmark_fields_and_settings(harness: PostmarkHarness) -> None:
    message = replace(make_message("ann@example.com"), reply_to="help@acme.test")
    captured: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        captured.extend(json.loads(request.content))
        assert request.headers["X-Postmark-Server-Token"] == CREDENTIALS["server_token"]
        return httpx.Response(200, json=[{"ErrorCode": 0, "Message": "OK", "MessageID": "m-1"}])

    provider = PostmarkProvider(
        ACCOUNT,
        harness.settings(message_stream="broadcast", track_opens=True, track_links="HtmlOnly"),
        CREDENTIALS["server_token"],
        transport=httpx.MockTransport(handler),
    )
    provider.send_batch([message])

    [sent] = captured
    assert sent["From"] == "Acme <news@news.acme.test>"
    assert sent["To"] == "ann@example.com"
    assert sent["ReplyTo"] == "help@acme.test"
    assert sent["Subject"] == message.subject
    assert (sent["HtmlBody"], sent["TextBody"]) == (message.html, message.text)
    assert sent["MessageStream"] == "broadcast"
    assert sent["TrackOpens"] is True
    assert sent["TrackLinks"] == "HtmlOnly"
    assert sent["Tag"] == "pro_tips"
    assert {"Name": MESSAGE_KEY_HEADER, "Value": message.message_key} in sent["Headers"]
    assert sent["Metadata"] == {**message.metadata, "mailers_domain": "news.acme.test"}
    assert all(len(key) <= 20 for key in sent["Metadata"])  # Postmark's key-name limit


def test_a_503_with_retry_after_then_success_is_retried(
    harness: PostmarkHarness, sim: Simulator
) -> None:
    sim.inject("postmark", Fault(status=503, retry_after=0.5))

    [result] = harness.provider().send_batch([make_message("ann@example.com")])

    assert result.accepted
    assert harness.slept == [0.5]
    assert batch_calls(sim) == 2


def test_server_errors_past_the_retry_policy_make_the_account_unavailable(
    harness: PostmarkHarness, sim: Simulator
) -> None:
    sim.inject("postmark", *[Fault(status=503, retry_after=0.5)] * 3)

    results = harness.provider().send_batch([make_message("ann@example.com")])

    assert "gave up after 3 attempts" in account_left_the_run(results)
    assert harness.messages == []


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_server_error_after_sending_is_in_doubt_not_retried(
    harness: PostmarkHarness, sim: Simulator, status: int
) -> None:
    sim.inject("postmark", Fault(status=status))

    results = harness.provider().send_batch([make_message("ann@example.com")])

    assert all_in_doubt(results)
    assert batch_calls(sim) == 1


def test_a_dropped_connection_after_sending_is_unknown(
    harness: PostmarkHarness, sim: Simulator
) -> None:
    sim.inject("postmark", Fault(drop=True))

    results = harness.provider().send_batch([make_message("ann@example.com")])

    assert all_in_doubt(results)
    assert harness.slept == []


def mocked_provider(answer: Callable[[httpx.Request], httpx.Response]) -> PostmarkProvider:
    return PostmarkProvider(
        ACCOUNT,
        Settings(),
        CREDENTIALS["server_token"],
        retry=RetryPolicy(attempts=1),
        sleep=lambda _: None,
        transport=httpx.MockTransport(answer),
    )


def test_errorcode_10_is_an_auth_failure_that_names_no_token() -> None:
    provider = mocked_provider(
        lambda _: httpx.Response(
            422, json={"ErrorCode": 10, "Message": "Bad token " + CREDENTIALS["server_token"]}
        )
    )

    reason = account_left_the_run(provider.send_batch([make_message("ann@example.com")]))

    assert "ErrorCode 10" in reason
    assert CREDENTIALS["server_token"] not in reason


def test_every_message_refused_for_an_account_reason_takes_the_account_out() -> None:
    refusal = {"ErrorCode": 405, "Message": "You have run out of credits."}
    provider = mocked_provider(lambda _: httpx.Response(200, json=[refusal, refusal]))

    results = provider.send_batch([make_message("a@example.com"), make_message("b@example.com")])

    assert "not allowed to send" in account_left_the_run(results)


def test_a_mismatched_answer_is_an_unknown_outcome() -> None:
    provider = mocked_provider(lambda _: httpx.Response(200, json=[{"ErrorCode": 0}]))

    results = provider.send_batch([make_message("a@example.com"), make_message("b@example.com")])

    assert all_in_doubt(results)


def test_a_payload_too_large_is_split() -> None:
    calls: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)
        calls.append(len(items))
        if len(items) > 1:
            return httpx.Response(413, text="Payload Too Large")
        return httpx.Response(200, json=[{"ErrorCode": 0, "MessageID": f"m{len(calls)}"}])

    results = mocked_provider(answer).send_batch(
        [make_message(f"u{i}@example.com") for i in range(4)]
    )

    assert all(r.accepted for r in results)
    assert calls == [4, 2, 1, 1, 2, 1, 1]


def test_build_needs_a_server_token_credential() -> None:
    config = ProviderAccountConfig(kind="postmark")

    with pytest.raises(ConfigError, match=r"credentials\.server_token"):
        postmark.build(ACCOUNT, config, Settings())


def test_a_missing_token_variable_is_named_without_a_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MAILERS_TEST_PM_UNSET", raising=False)

    with pytest.raises(SecretMissing, match="MAILERS_TEST_PM_UNSET") as info:
        postmark.build(ACCOUNT, account_config(token_env="MAILERS_TEST_PM_UNSET"), Settings())

    assert ACCOUNT in str(info.value)


@pytest.mark.parametrize(
    "settings",
    [{"api_key": "x"}, {"track_links": "Always"}, {"timeout_seconds": 0}, {"poll_page_size": 501}],
)
def test_invalid_settings_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate(settings)


def test_default_settings_point_at_the_real_api() -> None:
    settings = Settings()

    assert settings.base_url == "https://api.postmarkapp.com"
    assert settings.message_stream == "outbound"


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def test_recorded_fixtures_carry_a_message_id_and_recipient() -> None:
    for name in FIXTURE_TYPES:
        [event] = parse(fixture(name), ACCOUNT)
        assert event.provider_message_id, name
        assert event.recipient, name


def test_fixture_fields_are_carried() -> None:
    [delivered] = parse(fixture("delivered"), ACCOUNT)
    assert delivered.message_key == "5f0c8d2b9a1e4c7d8e6f3a2b1c0d9e8f"
    assert (delivered.workspace, delivered.stream, delivered.campaign) == (
        "acme",
        "lifecycle",
        "pro_tips",
    )
    assert delivered.sending_domain == "news.acme.test"
    assert delivered.occurred_at.isoformat() == "2019-11-05T16:33:54.907025"

    [hard] = parse(fixture("hard_bounce"), ACCOUNT)
    assert hard.event_id == "postmark:bounce:4323372036854775807"
    assert hard.reason == "Hard bounce: Test bounce details"
    assert hard.sending_domain == "example.com"  # from the bounce's From, no metadata key

    [soft] = parse(fixture("soft_bounce"), ACCOUNT)
    assert soft.occurred_at.isoformat() == "2019-11-05T16:33:54.907025"  # -05:00 → UTC
    assert soft.reason and "452 4.2.2" in soft.reason

    [click] = parse(fixture("click"), ACCOUNT)
    assert click.url == "https://example.com"

    [complaint] = parse(fixture("complaint"), ACCOUNT)
    assert complaint.reason == "Spam complaint: Test spam complaint details"
    assert complaint.message_key is None  # the documented example's metadata is not ours

    [unsubscribe] = parse(fixture("unsubscribe"), ACCOUNT)
    assert unsubscribe.reason == "ManualSuppression (origin: Recipient)"


def record(**fields: object) -> bytes:
    base: dict[str, object] = {
        "RecordType": "SubscriptionChange",
        "MessageID": "m-1",
        "Recipient": "ann@example.com",
        "ChangedAt": "2026-11-23T08:00:00Z",
        "SuppressSending": True,
        "SuppressionReason": "ManualSuppression",
    }
    base.update(fields)
    return json.dumps(base).encode()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"SuppressionReason": "SpamComplaint"}, (EventType.COMPLAINED, None)),
        ({"SuppressionReason": "HardBounce"}, (EventType.BOUNCED, BounceClass.HARD)),
        ({"SuppressSending": False}, (EventType.UNKNOWN, None)),
        ({"RecordType": "Bounce", "Type": "DnsError", "ID": 7}, (EventType.BOUNCED, "soft")),
        ({"RecordType": "Bounce", "Type": "BadEmailAddress", "ID": 8}, (EventType.BOUNCED, "hard")),
        ({"RecordType": "Bounce", "Type": "SpamComplaint", "ID": 9}, (EventType.COMPLAINED, None)),
        ({"RecordType": "Bounce", "Type": "SMTPApiError", "ID": 10}, (EventType.FAILED, None)),
        ({"RecordType": "Inbound"}, (EventType.UNKNOWN, None)),
    ],
)
def test_record_and_bounce_types_map_by_the_tables(
    fields: dict[str, object], expected: tuple[EventType, str | None]
) -> None:
    fields.setdefault("BouncedAt", "2026-11-23T08:00:00Z")
    [event] = parse(record(**fields), ACCOUNT)

    assert (event.event_type, event.bounce_class) == expected


def test_a_record_without_any_timestamp_is_still_unknown_and_stable() -> None:
    body = json.dumps({"Something": "else"}).encode()

    [first], [second] = parse(body, ACCOUNT), parse(body, ACCOUNT)

    assert first.event_type is EventType.UNKNOWN
    assert first.event_id == second.event_id


def test_a_record_without_any_timestamp_is_dated_by_mailers_clock(
    fixed_clock: clock.FixedClock,
) -> None:
    fixed_clock.set(datetime(2031, 1, 6, 8, 0, tzinfo=UTC))

    [event] = parse(json.dumps({"Something": "else"}).encode(), ACCOUNT)

    assert event.occurred_at == datetime(2031, 1, 6, 8, 0)


def test_derived_event_ids_tell_events_apart() -> None:
    opens = [
        record(RecordType="Open", ReceivedAt=f"2026-11-23T08:00:0{i}Z", Recipient="a@x.test")
        for i in range(3)
    ]
    clicks = [
        record(RecordType="Click", ReceivedAt="2026-11-23T08:00:00Z", OriginalLink=link)
        for link in ("https://a.test", "https://b.test")
    ]

    ids = {parse(body, ACCOUNT)[0].event_id for body in [*opens, *clicks]}

    assert len(ids) == 5


@pytest.mark.parametrize("raw", [b"not json", b'{"RecordType": "Open"', b"[1, 2]", b""])
def test_garbage_raises_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse(raw, ACCOUNT)


def test_a_known_record_without_its_timestamp_raises_value_error() -> None:
    with pytest.raises(ValueError):
        parse(json.dumps({"RecordType": "Delivery", "MessageID": "m"}).encode(), ACCOUNT)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer abc",
        "Basic not-base64!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        basic("someone", CREDENTIALS["webhook_password"]),
        basic(CREDENTIALS["webhook_username"], ""),
    ],
)
def test_webhooks_without_the_right_credentials_are_refused(
    harness: PostmarkHarness, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    request = WebhookRequest(body=fixture("delivered"), headers=headers)

    with pytest.raises(WebhookRejected) as info:
        harness.verify(request, SeenTokens())

    assert all(secret not in str(info.value) for secret in harness.secrets)


def test_malformed_bodies_and_methods_are_refused(harness: PostmarkHarness) -> None:
    good = harness.signed_webhook(fixture("delivered"))
    for request in (
        replace(good, body=b"not json"),
        replace(good, body=b"[1, 2]"),
        replace(good, method="GET"),
    ):
        with pytest.raises(WebhookRejected):
            harness.verify(request, SeenTokens())


def test_a_replay_is_accepted_again_after_the_ttl(harness: PostmarkHarness) -> None:
    clock = [1000.0]
    guard = SeenTokens(now=lambda: clock[0])
    request = harness.signed_webhook(fixture("hard_bounce"))

    harness.verify(request, guard)
    with pytest.raises(WebhookRejected, match="replayed"):
        harness.verify(request, guard)
    clock[0] += REPLAY_TTL_SECONDS + 1
    harness.verify(request, guard)


def test_different_bodies_are_not_replays(harness: PostmarkHarness) -> None:
    guard = SeenTokens()
    for name in FIXTURE_TYPES:
        harness.verify(harness.signed_webhook(fixture(name)), guard)


def test_verification_needs_the_webhook_credentials_configured(
    harness: PostmarkHarness,
) -> None:
    config = ProviderAccountConfig(
        kind="postmark", credentials={"server_token": SecretRef(env=ENV["server_token"])}
    )

    with pytest.raises(ConfigError, match="webhook_username"):
        postmark.verify_webhook(harness.signed_webhook(b"{}"), config, SeenTokens())


def test_simulated_events_verify_and_follow_the_outcome_rule(harness: PostmarkHarness) -> None:
    recipients = {
        "ann@example.com": None,
        "hard@bounce.mailers.test": [(EventType.BOUNCED, BounceClass.HARD)],
        "soft@softbounce.mailers.test": [
            (EventType.DEFERRED, None),
            (EventType.BOUNCED, BounceClass.SOFT),
        ],
        "angry@complaint.mailers.test": [(EventType.DELIVERED, None), (EventType.COMPLAINED, None)],
    }
    messages = [make_message(r) for r in recipients]
    results = harness.provider().send_batch(messages)
    ids = {r.message_key: r.provider_message_id for r in results}

    guard = SeenTokens()
    seen: dict[str, list[tuple[EventType, BounceClass | None]]] = {}
    for body in postmark_sim.events_as_webhooks(harness.sim):
        harness.verify(postmark_sim.signed_request(body, CREDENTIALS), guard)
        [event] = parse(body, ACCOUNT)
        assert event.message_key is not None
        assert event.provider_message_id == ids[event.message_key]
        assert event.sending_domain == "news.acme.test"
        seen.setdefault(event.recipient or "", []).append((event.event_type, event.bounce_class))

    for recipient, expected in recipients.items():
        if expected is not None:
            assert seen[recipient] == expected
    assert seen["ann@example.com"][0] == (EventType.DELIVERED, None)


BOUNCING = [
    "hard@bounce.mailers.test",
    "soft@softbounce.mailers.test",
    "angry@complaint.mailers.test",
    "fine@example.com",
]


def polled(events: list[bytes]) -> list[CanonicalEvent]:
    return [event for body in events for event in parse(body, ACCOUNT)]


def test_poll_events_reads_bounces_and_resumes_from_its_cursor(harness: PostmarkHarness) -> None:
    harness.provider().send_batch([make_message(r) for r in BOUNCING])
    settings = harness.settings(poll_page_size=2)

    first, cursor = poll_events(ACCOUNT, harness.config, settings, None)

    kinds = sorted((e.recipient, e.event_type, e.bounce_class) for e in polled(first))
    assert kinds == sorted(
        [
            ("hard@bounce.mailers.test", EventType.BOUNCED, BounceClass.HARD),
            ("soft@softbounce.mailers.test", EventType.DEFERRED, None),
            ("soft@softbounce.mailers.test", EventType.BOUNCED, BounceClass.SOFT),
            ("angry@complaint.mailers.test", EventType.COMPLAINED, None),
        ]
    )
    times = [e.occurred_at for e in polled(first)]
    assert times == sorted(times)
    assert cursor is not None

    again, same = poll_events(ACCOUNT, harness.config, settings, cursor)
    assert again == []
    assert same == cursor

    harness.provider().send_batch([make_message("late@bounce.mailers.test", window="w2")])
    later, newer = poll_events(ACCOUNT, harness.config, settings, cursor)
    assert [e.recipient for e in polled(later)] == ["late@bounce.mailers.test"]
    assert newer != cursor
    assert poll_events(ACCOUNT, harness.config, settings, newer) == ([], newer)


def test_polled_and_webhook_bounces_share_event_ids(harness: PostmarkHarness) -> None:
    harness.provider().send_batch([make_message("hard@bounce.mailers.test")])

    payloads, _ = poll_events(ACCOUNT, harness.config, harness.settings(), None)
    [webhook] = [
        e
        for body in postmark_sim.events_as_webhooks(harness.sim)
        for e in parse(body, ACCOUNT)
        if e.event_type is EventType.BOUNCED
    ]

    [from_poll] = polled(payloads)
    assert from_poll.event_id == webhook.event_id
    assert from_poll.provider_message_id == webhook.provider_message_id
    assert from_poll.message_key is None  # the bounces API returns no Metadata


def test_poll_events_on_an_empty_server_keeps_no_cursor(harness: PostmarkHarness) -> None:
    assert poll_events(ACCOUNT, harness.config, harness.settings(), None) == ([], None)


def test_late_listed_bounces_in_the_look_back_window_are_read_once(
    harness: PostmarkHarness,
) -> None:
    state = harness.sim.store["postmark"]
    bounce = json.loads(fixture("hard_bounce"))
    bounce.pop("Metadata")
    bounce["BouncedAt"] = "2026-11-23T08:00:01.5000000Z"
    state["bounces"].append(bounce)
    settings = harness.settings(poll_lookback_seconds=60)

    first, cursor = poll_events(ACCOUNT, harness.config, settings, None)
    late = [
        {**bounce, "ID": 1, "BouncedAt": "2026-11-23T08:00:01.2500000Z"},  # same second
        {**bounce, "ID": 2, "BouncedAt": "2026-11-23T07:59:30.0000000Z"},  # in the window
        {**bounce, "ID": 3, "BouncedAt": "2026-11-23T07:58:00.0000000Z"},  # before it
        {**bounce, "ID": 4, "BouncedAt": "2026-11-23T08:00:01.5000000Z"},  # at the cursor
    ]
    state["bounces"].extend(late)
    second, cursor2 = poll_events(ACCOUNT, harness.config, settings, cursor)
    third, cursor3 = poll_events(ACCOUNT, harness.config, settings, cursor2)

    assert len(first) == 1
    assert [json.loads(p)["ID"] for p in second] == [2, 1, 4]
    assert (third, cursor3) == ([], cursor2)


def test_polling_with_a_refused_token_is_an_auth_error(harness: PostmarkHarness) -> None:
    config = account_config(token_env=WRONG_ENV)

    with pytest.raises(ProviderAuthError) as info:
        poll_events(ACCOUNT, config, harness.settings(), None)

    assert WRONG_TOKEN not in f"{info.value} {info.value.__cause__!r}"


def test_polling_a_failing_api_is_unavailable(harness: PostmarkHarness, sim: Simulator) -> None:
    sim.inject("postmark", Fault(status=503))

    with pytest.raises(ProviderUnavailable):
        poll_events(ACCOUNT, harness.config, harness.settings(), None)


def test_a_foreign_cursor_is_refused(harness: PostmarkHarness) -> None:
    with pytest.raises(ProviderUnavailable, match="cursor"):
        poll_events(ACCOUNT, harness.config, harness.settings(), "page-2")


def test_credentials_never_appear_in_logs_errors_or_events(
    harness: PostmarkHarness, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    messages = [make_message(r) for r in [*BOUNCING, "nobody@reject.mailers.test"]]
    harness.provider().send_batch(messages)
    sim.inject("postmark", Fault(status=500))
    for results in (
        harness.provider().send_batch(messages[:1]),
        harness.provider(valid_credentials=False).send_batch(messages[:1]),
    ):
        assert not results[0].accepted
        texts.append(repr(results))
    for attempt in (
        lambda: harness.verify(harness.forged_webhook(b"{}"), SeenTokens()),
        lambda: poll_events(ACCOUNT, account_config(token_env=WRONG_ENV), harness.settings(), None),
    ):
        with pytest.raises(Exception) as info:
            attempt()
        texts.append(f"{info.value!s} {info.value!r} {info.value.__cause__!r}")
    payloads, cursor = poll_events(ACCOUNT, harness.config, harness.settings(), None)
    events = polled([*payloads, *postmark_sim.events_as_webhooks(sim)])
    texts.extend(json.dumps(e.as_row(), default=str) for e in events)
    texts.append(caplog.text)
    texts.append(cursor or "")

    assert events
    leaked = [s for s in harness.secrets for text in texts if s in text]
    assert leaked == []
