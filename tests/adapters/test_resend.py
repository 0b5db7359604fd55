"""The Resend provider against the simulator's Resend API, plus recorded webhook bodies."""

from __future__ import annotations

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

from adapters.providers import resend
from adapters.providers.hooks import RetryPolicy
from adapters.providers.resend import ResendProvider, ResendSettings, parse
from adapters.providers.resend.sending import IDEMPOTENCY_HEADER, idempotency_key
from adapters.providers.resend.webhooks import REPLAY_TTL_SECONDS, WEBHOOK_TOLERANCE_SECONDS
from adapters.simulator import Fault, Simulator
from adapters.simulator import resend as resend_sim
from mailers import clock
from mailers.config import ProviderAccountConfig
from mailers.errors import ConfigError, WebhookRejected
from mailers.events import BounceClass, EventType
from mailers.messages import MESSAGE_KEY_HEADER, OutboundMessage, SendOutcome
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

ACCOUNT = "globex_resend"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "resend"
CREDENTIALS = {
    "api_key": "re_test_5Vq8wLx2Nk3Pz7Rt",
    "webhook_secret": "whsec_c2ltdWxhdGVkLXJlc2VuZC1zZWNyZXQtNGY5YQ==",
}
WRONG_KEY = "re_wrong_0c2e9d18Aa"
ENV = {"api_key": "MAILERS_TEST_RESEND_KEY", "webhook_secret": "MAILERS_TEST_RESEND_SECRET"}
WRONG_ENV = "MAILERS_TEST_RESEND_WRONG_KEY"
FIXED_TIME = datetime(2026, 11, 23, 8, 0, 1, tzinfo=UTC)

# The published Svix / Standard Webhooks test vector (svix-webhooks' "sign function works"
# tests; Resend's verify page shows the same headers).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

FIXTURE_TYPES = {
    "sent": (EventType.UNKNOWN, None),
    "delivered": (EventType.DELIVERED, None),
    "delivery_delayed": (EventType.DEFERRED, None),
    "bounced_permanent": (EventType.BOUNCED, BounceClass.HARD),
    "bounced_transient": (EventType.BOUNCED, BounceClass.SOFT),
    "complained": (EventType.COMPLAINED, None),
    "opened": (EventType.OPENED, None),
    "clicked": (EventType.CLICKED, None),
    "failed": (EventType.FAILED, None),
    "suppressed": (EventType.REJECTED, None),
    "unknown": (EventType.UNKNOWN, None),
}


def account_config(*, key_env: str = ENV["api_key"], **extra: Any) -> ProviderAccountConfig:
    credentials = {key: SecretRef(env=env) for key, env in ENV.items()}
    credentials["api_key"] = SecretRef(env=key_env)
    return ProviderAccountConfig(kind="resend", credentials=credentials, **extra)


class ResendHarness(SimulatorHarness):
    """The shared contract's view of Resend (see provider_contract.Harness)."""

    kind = "resend"
    spec = resend.SPEC
    fixtures = FIXTURES
    fixture_types = FIXTURE_TYPES

    def __init__(self, sim: Simulator) -> None:
        self.secrets = [*CREDENTIALS.values(), CREDENTIALS["webhook_secret"][6:], WRONG_KEY]
        super().__init__(sim)
        self.config = account_config()
        self.parse = parse

    def settings(self) -> ResendSettings:
        return ResendSettings(base_url=self.sim.base_url, timeout_seconds=CLIENT_TIMEOUT)

    def provider(
        self, *, valid_credentials: bool = True, config: ProviderAccountConfig | None = None
    ) -> ResendProvider:
        config = config or account_config(
            key_env=ENV["api_key"] if valid_credentials else WRONG_ENV
        )
        provider = resend.build(ACCOUNT, config, self.settings(), None, sleep=self.slept.append)
        return self.track(provider)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.stored()

    def delivered_keys(self) -> dict[str, str]:
        return {m["tags"]["mailers_message_key"]: m["recipient"] for m in self.messages}

    def signed_webhook(self, body: bytes) -> WebhookRequest:
        return resend_sim.signed_request(body, CREDENTIALS["webhook_secret"])

    def forged_webhook(self, body: bytes) -> WebhookRequest:
        return resend_sim.signed_request(body, resend_sim.generate_webhook_secret())

    def stale_webhook(self, body: bytes) -> WebhookRequest:
        stale = clock.epoch() - WEBHOOK_TOLERANCE_SECONDS - 60
        return resend_sim.signed_request(body, CREDENTIALS["webhook_secret"], timestamp=stale)

    def verify(self, request: WebhookRequest, guard: SeenTokens) -> None:
        resend.verify_webhook(request, self.config, guard)

    def event_body(self, event: str, recipient: str, key: str) -> bytes:
        payload = resend_sim.webhook_event(
            event,
            email_id=f"{key[:8]}-0000-4000-8000-000000000000",
            recipient=recipient,
            tags={"mailers_message_key": key, "mailers_workspace": "acme"},
            occurred_at=FIXED_TIME,
        )
        return json.dumps(payload).encode()

    def unknown_event_body(self) -> bytes:
        return fixture("unknown")


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A Resend simulator of the test's own: no request or fault outlives its test."""
    with Simulator() as simulator:
        resend_sim.register(simulator, credentials=CREDENTIALS)
        yield simulator


@pytest.fixture
def harness(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[ResendHarness]:
    for key, env in ENV.items():
        monkeypatch.setenv(env, CREDENTIALS[key])
    monkeypatch.setenv(WRONG_ENV, WRONG_KEY)
    harness = ResendHarness(sim)
    yield harness
    harness.close()


class TestResendContract(ProviderContract):
    """Every shared provider test, against the Resend simulator."""


def batch_calls(sim: Simulator) -> int:
    return sum(1 for p, _, path in sim.requests if p == "resend" and path == "/emails/batch")


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def post_batch(sim: Simulator, body: Any, **headers: str) -> httpx.Response:
    sent = {"Authorization": f"Bearer {CREDENTIALS['api_key']}", **headers}
    return httpx.post(f"{sim.base_url}/emails/batch", json=body, headers=sent)


# sending


def test_a_batch_larger_than_the_limit_goes_out_in_several_calls(
    harness: ResendHarness, sim: Simulator
) -> None:
    messages = [make_message(f"user{i}@example.com") for i in range(resend.MAX_BATCH_SIZE + 1)]

    results = harness.provider().send_batch(messages)

    assert batch_calls(sim) == 2
    assert all(r.accepted for r in results)
    assert harness.provider(config=account_config(batch_size=1000)).max_batch_size == 100


def test_a_whole_batch_refused_for_one_bad_entry_is_split_and_the_rest_go(
    harness: ResendHarness, sim: Simulator
) -> None:
    messages = [make_message(f"ok{i}@example.com") for i in range(8)]
    bad = make_message("nobody@reject.mailers.test")
    messages[5] = bad

    results = harness.provider().send_batch(messages)

    by_key = {r.message_key: r for r in results}
    assert by_key[bad.message_key].outcome == SendOutcome.ANSWERED
    assert "422 validation_error: Invalid `to` field" in (by_key[bad.message_key].reason or "")
    assert sum(r.accepted for r in results) == 7
    # 8 → 4+4 → (2+2) → (1+1): the bad half is halved down to the single bad message.
    assert batch_calls(sim) == 1 + 2 + 2 + 2
    assert {m["recipient"] for m in harness.messages} == {
        m.recipient for m in messages if m is not bad
    }


def test_the_message_carries_resend_fields_tags_headers_and_its_key(
    harness: ResendHarness,
) -> None:
    messages = [replace(make_message("ann@example.com"), reply_to="help@acme.test")]
    captured: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        captured.append(request)
        return httpx.Response(200, json={"data": [{"id": "e-1"}]})

    provider = ResendProvider(
        ACCOUNT,
        harness.settings(),
        CREDENTIALS["api_key"],
        transport=httpx.MockTransport(handler),
    )
    [result] = provider.send_batch(messages)

    [request] = captured
    [sent] = json.loads(request.content)
    message = messages[0]
    assert result.provider_message_id == "e-1"
    assert request.headers["Authorization"] == f"Bearer {CREDENTIALS['api_key']}"
    assert request.headers["User-Agent"]  # Resend answers 403 without one
    assert request.headers[IDEMPOTENCY_HEADER] == idempotency_key(messages)
    assert sent["from"] == "Acme <news@news.acme.test>"
    assert sent["to"] == ["ann@example.com"]
    assert sent["reply_to"] == "help@acme.test"
    assert (sent["subject"], sent["html"], sent["text"]) == (
        message.subject,
        message.html,
        message.text,
    )
    assert sent["headers"][MESSAGE_KEY_HEADER] == message.message_key
    assert {t["name"]: t["value"] for t in sent["tags"]} == message.metadata
    assert all(
        resend_sim.TAG_PATTERN.match(t["name"]) and resend_sim.TAG_PATTERN.match(t["value"])
        for t in sent["tags"]
    )


def test_idempotency_keys_follow_the_messages_of_the_call() -> None:
    first = [make_message(f"k{i}@example.com") for i in range(3)]

    key = idempotency_key(first)

    assert key == idempotency_key(list(first))
    assert key != idempotency_key(first[:2])
    assert key != idempotency_key(list(reversed(first)))
    assert key.startswith("mailers-") and len(key) <= 256


# idempotency


@pytest.mark.parametrize("after_processing", [True, False])
def test_a_500_is_made_again_under_its_key_and_accepted_once(
    harness: ResendHarness, sim: Simulator, after_processing: bool
) -> None:
    sim.inject("resend", Fault(status=500, after_processing=after_processing))
    messages = [make_message(f"idem{i}@example.com") for i in range(3)]
    journal = RecordingJournal()

    results = harness.provider().send_batch(messages, journal)

    assert all(r.accepted for r in results)
    assert batch_calls(sim) == 2
    assert all(sim.accepted[m.message_key] == 1 for m in messages)
    assert len(harness.messages) == 3
    first, second = journal.idempotency_keys
    assert first == second == {m.message_key: idempotency_key(messages) for m in messages}
    assert [r.provider_message_id for r in results] == [m["email_id"] for m in harness.messages]


def test_a_retry_refused_for_a_bad_entry_is_halved_and_leaves_no_doubt(
    harness: ResendHarness, sim: Simulator
) -> None:
    sim.inject("resend", Fault(status=500, after_processing=True))  # the 422 is lost
    messages = [make_message("ok@example.com"), make_message("nobody@reject.mailers.test")]

    good, bad = harness.provider().send_batch(messages)

    assert good.accepted and sim.accepted[messages[0].message_key] == 1
    assert not bad.accepted and bad.outcome == SendOutcome.ANSWERED
    assert batch_calls(sim) == 4  # the call, its retry, then each half


def test_a_read_timeout_then_the_retry_is_accepted_once(
    harness: ResendHarness, sim: Simulator
) -> None:
    harness.inject_timeout()
    message = make_message("slow@example.com")

    [result] = harness.provider().send_batch([message])

    assert result.accepted
    assert sim.accepted[message.message_key] == 1
    assert batch_calls(sim) == 2


def test_a_retry_that_meets_429_stays_in_doubt_never_not_sent(
    harness: ResendHarness, sim: Simulator
) -> None:
    sim.inject(
        "resend",
        Fault(timeout=HELD),
        Fault(status=429, retry_after=0.1),
        Fault(status=429, retry_after=0.1),
    )

    results = harness.provider().send_batch([make_message("a@example.com")])

    assert all_in_doubt(results)
    assert not any(r.account_unavailable for r in results)
    assert harness.slept == [0.5, 0.1]


def test_the_same_messages_again_get_the_stored_answer_and_are_not_sent_twice(
    harness: ResendHarness, sim: Simulator
) -> None:
    message = make_message("twice@example.com")

    [first] = harness.provider().send_batch([message])
    [second] = harness.provider().send_batch([message])

    assert first.accepted and second.accepted
    assert second.provider_message_id == first.provider_message_id
    assert sim.accepted[message.message_key] == 1


def test_the_same_key_with_another_body_is_in_doubt(harness: ResendHarness, sim: Simulator) -> None:
    message = make_message("changed@example.com")
    harness.provider().send_batch([message])

    results = harness.provider().send_batch([replace(message, subject="Another subject")])

    assert all_in_doubt(results)
    assert "invalid_idempotent_request" in (results[0].reason or "")
    assert sim.accepted[message.message_key] == 1


def test_the_simulator_forgets_a_key_after_24_hours(
    harness: ResendHarness, sim: Simulator, fixed_clock: clock.FixedClock
) -> None:
    message = make_message("later@example.com")
    harness.provider().send_batch([message])

    fixed_clock.advance(24 * 3600 + 1)
    [again] = harness.provider().send_batch([message])

    assert again.accepted
    assert sim.accepted[message.message_key] == 2


# answers


def mocked_provider(answer: Callable[[httpx.Request], httpx.Response]) -> ResendProvider:
    return ResendProvider(
        ACCOUNT,
        ResendSettings(),
        CREDENTIALS["api_key"],
        retry=RetryPolicy(attempts=2),
        sleep=lambda _: None,
        transport=httpx.MockTransport(answer),
    )


def resend_error(status: int, name: str, message: str = "", **headers: str) -> httpx.Response:
    body = {"name": name, "statusCode": status, "message": message}
    return httpx.Response(status, json=body, headers=headers)


def scripted(*answers: httpx.Response) -> Callable[[httpx.Request], httpx.Response]:
    """Answer each call with the next response; after them, accept every email."""
    queue = list(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        if queue:
            return queue.pop(0)
        emails = json.loads(request.content)
        return httpx.Response(200, json={"data": [{"id": f"e{i}"} for i in range(len(emails))]})

    return answer


@pytest.mark.parametrize("name", ["daily_quota_exceeded", "monthly_quota_exceeded"])
def test_a_used_up_quota_takes_the_account_out_without_retrying(name: str) -> None:
    calls: list[int] = []
    quota = resend_error(429, name, "You have reached your quota.", **{"Retry-After": "1"})

    def answer(_: httpx.Request) -> httpx.Response:
        calls.append(1)
        return quota

    results = mocked_provider(answer).send_batch([make_message("q@example.com")])

    assert name in account_left_the_run(results)
    assert calls == [1]


def test_the_simulated_daily_quota_takes_the_account_out(harness: ResendHarness) -> None:
    with Simulator() as quota_sim:
        resend_sim.register(quota_sim, credentials=CREDENTIALS, daily_quota=3)
        harness.sim = quota_sim
        provider = harness.provider()
        first = provider.send_batch([make_message(f"q{i}@example.com") for i in range(2)])
        second = provider.send_batch([make_message(f"r{i}@example.com") for i in range(2)])

        assert all(r.accepted for r in first)
        assert "daily_quota_exceeded" in account_left_the_run(second)
        assert harness.slept == []
        assert batch_calls(quota_sim) == 2


def test_a_rate_limit_waits_for_retry_after() -> None:
    slept: list[float] = []
    provider = ResendProvider(
        ACCOUNT,
        ResendSettings(),
        CREDENTIALS["api_key"],
        sleep=slept.append,
        transport=httpx.MockTransport(
            scripted(
                resend_error(
                    429, "rate_limit_exceeded", "Too many requests", **{"Retry-After": "2"}
                )
            )
        ),
    )

    [result] = provider.send_batch([make_message("rl@example.com")])

    assert result.accepted and slept == [2.0]


def test_a_concurrent_request_under_the_key_is_tried_again() -> None:
    busy = resend_error(409, "concurrent_idempotent_requests", "another request in progress")

    [result] = mocked_provider(scripted(busy)).send_batch([make_message("c@example.com")])

    assert result.accepted


def test_a_key_busy_through_every_retry_stays_in_doubt_and_never_fails_over() -> None:
    busy = resend_error(409, "concurrent_idempotent_requests", "another request in progress")

    [result] = mocked_provider(scripted(busy, busy, busy)).send_batch([make_message("c@x.com")])

    assert result.outcome == SendOutcome.UNKNOWN and not result.account_unavailable


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            resend_error(403, "validation_error", "The `globex.test` domain is not verified."),
            "not verified",
        ),
        (
            resend_error(400, "invalid_idempotency_key", "The key must be between 1-256 chars."),
            "idempotency key",
        ),
        (httpx.Response(404, json={"name": "not_found"}), "check settings.base_url"),
        (resend_error(401, "missing_api_key", "Missing API key"), "credentials refused (401)"),
    ],
)
def test_account_level_refusals_take_the_account_out(answer: httpx.Response, expected: str) -> None:
    results = mocked_provider(lambda _: answer).send_batch(
        [make_message("a@example.com"), make_message("b@example.com")]
    )

    assert expected in account_left_the_run(results)


def test_an_answer_with_too_few_ids_is_in_doubt() -> None:
    provider = mocked_provider(lambda _: httpx.Response(200, json={"data": [{"id": "e1"}]}))

    results = provider.send_batch([make_message("a@example.com"), make_message("b@example.com")])

    assert all_in_doubt(results)


def test_an_entry_without_an_id_is_in_doubt_alone() -> None:
    provider = mocked_provider(
        lambda _: httpx.Response(200, json={"data": [{"id": "e1"}, {"id": None}]})
    )

    first, second = provider.send_batch(
        [make_message("a@example.com"), make_message("b@example.com")]
    )

    assert first.accepted and first.provider_message_id == "e1"
    assert second.outcome == SendOutcome.UNKNOWN


EMAIL = {"from": "a@b.test", "to": "c@d.test", "subject": "s"}


@pytest.mark.parametrize(
    ("body", "headers", "status", "name"),
    [
        ([], {"Authorization": ""}, 401, "missing_api_key"),
        ([], {"Authorization": f"Bearer {WRONG_KEY}"}, 403, "invalid_api_key"),
        (EMAIL, {}, 422, "validation_error"),
        ([EMAIL] * 101, {}, 422, "validation_error"),
        ([{**EMAIL, "subject": ""}], {}, 422, "missing_required_field"),
        ([{**EMAIL, "attachments": []}], {}, 422, "validation_error"),
        ([{**EMAIL, "to": ["c@d.test"] * 51}], {}, 422, "validation_error"),
        ([{**EMAIL, "from": "nope"}], {}, 422, "validation_error"),
        ([{**EMAIL, "headers": {"X-Count": 1}}], {}, 422, "validation_error"),
        ([{**EMAIL, "tags": [{"name": "a b", "value": "x"}]}], {}, 422, "validation_error"),
        ([EMAIL], {"Idempotency-Key": "k" * 257}, 400, "invalid_idempotency_key"),
    ],
)
def test_the_simulator_answers_malformed_calls_like_resend(
    sim: Simulator, body: Any, headers: dict[str, str], status: int, name: str
) -> None:
    response = post_batch(sim, body, **headers)

    error = response.json()
    assert (response.status_code, error["name"], error["statusCode"]) == (status, name, status)
    assert error["message"]
    assert sim.accepted == {}


def test_the_simulator_refuses_a_request_without_a_user_agent(sim: Simulator) -> None:
    with httpx.Client(headers={"User-Agent": ""}) as client:
        client.headers.pop("User-Agent")
        response = client.post(
            f"{sim.base_url}/emails/batch",
            json=[],
            headers={"Authorization": f"Bearer {CREDENTIALS['api_key']}"},
        )

    assert response.status_code == 403
    assert "1010" in response.text


# build and settings


def test_build_needs_an_api_key_credential() -> None:
    with pytest.raises(ConfigError, match=r"credentials\.api_key"):
        resend.build(ACCOUNT, ProviderAccountConfig(kind="resend"), ResendSettings())


def test_the_spec_reads_only_its_credentials_and_settings() -> None:
    config = ProviderAccountConfig(
        kind="resend",
        credentials={"api_key": SecretRef(env="X"), "server_token": SecretRef(env="Y")},
        settings={"base_url": "http://api.resend.com", "domain": "x"},
    )

    problems = resend.SPEC.problems(config)

    assert any("credentials.server_token: unknown key" in p for p in problems)
    assert any(p.startswith("settings.base_url") for p in problems)
    assert "settings.domain: unknown key" in problems
    assert resend.SPEC.poll is None and resend.SPEC.lookup is None and resend.SPEC.idempotent


def test_default_settings_point_at_the_real_api() -> None:
    assert ResendSettings().base_url == "https://api.resend.com"
    with pytest.raises(ValidationError):
        ResendSettings.model_validate({"timeout_seconds": 0})


# parsing


def test_fixture_fields_are_carried() -> None:
    [delivered] = parse(fixture("delivered"), ACCOUNT)
    assert delivered.message_key == "9c1f4e2a7b3d4c5e8f6a0b1c2d3e4f5a"
    assert (delivered.workspace, delivered.stream, delivered.campaign) == (
        "globex",
        "lifecycle",
        "launch_newsletter",
    )
    assert delivered.provider_message_id == "4ef9a417-02e9-4d39-ad75-9611e0fcc33c"
    assert delivered.recipient == "ann@example.com"
    assert delivered.sending_domain == "mail.globex.test"
    assert delivered.occurred_at.isoformat() == "2026-11-22T23:41:13.508000"

    [clicked] = parse(fixture("clicked"), ACCOUNT)
    assert clicked.url == "https://globex.test/launch"
    assert clicked.occurred_at.isoformat() == "2026-11-24T05:00:57.163000"  # the click's time

    [hard] = parse(fixture("bounced_permanent"), ACCOUNT)
    assert hard.reason and hard.reason.startswith("Permanent/Suppressed: The recipient's")
    assert hard.message_key is None  # the documented example's tags are not ours

    [soft] = parse(fixture("bounced_transient"), ACCOUNT)
    assert soft.reason and "452 4.2.2" in soft.reason

    [suppressed] = parse(fixture("suppressed"), ACCOUNT)
    assert suppressed.reason and suppressed.reason.startswith("OnAccountSuppressionList: ")
    [failed] = parse(fixture("failed"), ACCOUNT)
    assert failed.reason == "reached_daily_quota"


def test_recorded_email_fixtures_carry_an_email_id_and_recipient() -> None:
    for name in FIXTURE_TYPES.keys() - {"unknown"}:
        [event] = parse(fixture(name), ACCOUNT)
        assert event.provider_message_id, name
        assert event.recipient, name


def test_tags_as_a_list_are_read_too() -> None:
    body = json.loads(fixture("delivered"))
    tags = body["data"]["tags"]
    body["data"]["tags"] = [{"name": k, "value": v} for k, v in tags.items()]

    [event] = parse(json.dumps(body).encode(), ACCOUNT)

    assert event.message_key == tags["mailers_message_key"]


def test_an_event_for_several_recipients_is_one_event_each() -> None:
    body = json.loads(fixture("bounced_transient"))
    body["data"]["to"] = ["a@example.com", "B <b@example.com>"]

    events = parse(json.dumps(body).encode(), ACCOUNT)

    assert [e.recipient for e in events] == ["a@example.com", "b@example.com"]
    assert len({e.event_id for e in events}) == 2


def test_derived_event_ids_tell_events_apart() -> None:
    bodies = [fixture(name) for name in FIXTURE_TYPES]
    click = json.loads(fixture("clicked"))
    click["data"]["click"]["link"] = "https://globex.test/other"
    bodies.append(json.dumps(click).encode())

    ids = {parse(body, ACCOUNT)[0].event_id for body in bodies}

    assert len(ids) == len(bodies)


@pytest.mark.parametrize(
    ("bounce", "expected"),
    [
        ({"type": "Undetermined", "subType": "Undetermined"}, BounceClass.SOFT),
        ({"type": "Temporary"}, BounceClass.SOFT),
        ({}, BounceClass.HARD),
    ],
)
def test_bounce_types_map_by_the_table(bounce: dict[str, str], expected: BounceClass) -> None:
    body = json.loads(fixture("bounced_permanent"))
    body["data"]["bounce"] = bounce

    [event] = parse(json.dumps(body).encode(), ACCOUNT)

    assert (event.event_type, event.bounce_class) == (EventType.BOUNCED, expected)


def test_a_payload_without_times_is_dated_by_mailers_clock(fixed_clock: clock.FixedClock) -> None:
    fixed_clock.set(datetime(2031, 1, 6, 8, 0, tzinfo=UTC))

    [event] = parse(b'{"type": "email.scheduled", "data": {}}', ACCOUNT)

    assert event.event_type is EventType.UNKNOWN
    assert event.occurred_at == datetime(2031, 1, 6, 8, 0)


@pytest.mark.parametrize("raw", [b"not json", b'{"type": "email.sent"', b"[1, 2]", b""])
def test_garbage_raises_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse(raw, ACCOUNT)


# webhooks


def vector_config() -> ProviderAccountConfig:
    return ProviderAccountConfig(
        kind="resend", credentials={"webhook_secret": SecretRef(env="MAILERS_TEST_RESEND_VECTOR")}
    )


def vector_request(signature: str = VECTOR_SIGNATURE, **headers: str) -> WebhookRequest:
    sent = {
        "svix-id": VECTOR_ID,
        "svix-timestamp": str(VECTOR_TIMESTAMP),
        "svix-signature": signature,
        **headers,
    }
    return WebhookRequest(body=VECTOR_BODY, headers={k: v for k, v in sent.items() if v})


@pytest.fixture
def vector_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILERS_TEST_RESEND_VECTOR", VECTOR_SECRET)


@pytest.mark.usefixtures("vector_secret")
@pytest.mark.parametrize(
    "signature",
    [
        VECTOR_SIGNATURE,
        f"v1,bm90IGl0 {VECTOR_SIGNATURE}",  # rotation: one old, one current
        f"v1a,c2lnbmVk {VECTOR_SIGNATURE} v1,b3RoZXI=",  # other schemes are skipped
    ],
)
def test_the_published_vector_verifies_with_any_listed_signature(signature: str) -> None:
    resend.verify_webhook(
        vector_request(signature), vector_config(), SeenTokens(), now=VECTOR_TIMESTAMP
    )


@pytest.mark.usefixtures("vector_secret")
@pytest.mark.parametrize(
    "request_",
    [
        vector_request("v1,bm90IGl0"),
        vector_request(VECTOR_SIGNATURE.replace("v1,", "v2,")),
        vector_request(VECTOR_SIGNATURE.removeprefix("v1,")),
        vector_request(**{"svix-id": ""}),
        vector_request(**{"svix-timestamp": ""}),
        vector_request(""),
        vector_request(**{"svix-timestamp": "yesterday"}),
        vector_request(**{"svix-id": "msg_other"}),
        replace(vector_request(), body=b'{"test": 2432232315}'),
    ],
)
def test_a_request_that_does_not_match_its_signature_is_refused(request_: WebhookRequest) -> None:
    with pytest.raises(WebhookRejected):
        resend.verify_webhook(request_, vector_config(), SeenTokens(), now=VECTOR_TIMESTAMP)


@pytest.mark.usefixtures("vector_secret")
@pytest.mark.parametrize("offset", [-WEBHOOK_TOLERANCE_SECONDS - 1, WEBHOOK_TOLERANCE_SECONDS + 1])
def test_stale_and_future_timestamps_are_refused(offset: int) -> None:
    with pytest.raises(WebhookRejected, match=r"old|future"):
        resend.verify_webhook(
            vector_request(), vector_config(), SeenTokens(), now=VECTOR_TIMESTAMP - offset
        )


@pytest.mark.usefixtures("vector_secret")
@pytest.mark.parametrize("offset", [-WEBHOOK_TOLERANCE_SECONDS, WEBHOOK_TOLERANCE_SECONDS])
def test_timestamps_within_the_tolerance_either_way_are_accepted(offset: int) -> None:
    resend.verify_webhook(
        vector_request(), vector_config(), SeenTokens(), now=VECTOR_TIMESTAMP - offset
    )


@pytest.mark.usefixtures("vector_secret")
def test_standard_webhooks_header_names_are_accepted() -> None:
    request = WebhookRequest(
        body=VECTOR_BODY,
        headers={
            "webhook-id": VECTOR_ID,
            "webhook-timestamp": str(VECTOR_TIMESTAMP),
            "webhook-signature": VECTOR_SIGNATURE,
        },
    )

    resend.verify_webhook(request, vector_config(), SeenTokens(), now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize("secret", [VECTOR_SECRET.removeprefix("whsec_"), f" {VECTOR_SECRET} "])
def test_the_secret_prefix_is_optional(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    monkeypatch.setenv("MAILERS_TEST_RESEND_VECTOR", secret)

    resend.verify_webhook(vector_request(), vector_config(), SeenTokens(), now=VECTOR_TIMESTAMP)


def test_a_secret_that_is_not_base64_is_a_config_error_that_names_no_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAILERS_TEST_RESEND_VECTOR", "whsec_not*base64!")

    with pytest.raises(ConfigError, match="webhook_secret") as info:
        resend.verify_webhook(vector_request(), vector_config(), SeenTokens(), now=VECTOR_TIMESTAMP)

    assert "not*base64" not in f"{info.value} {info.value.__cause__!r}"


def test_verification_needs_the_webhook_secret_configured(harness: ResendHarness) -> None:
    config = ProviderAccountConfig(
        kind="resend", credentials={"api_key": SecretRef(env=ENV["api_key"])}
    )

    with pytest.raises(ConfigError, match="webhook_secret"):
        resend.verify_webhook(harness.signed_webhook(b"{}"), config, SeenTokens())


def test_a_genuine_retry_is_accepted_and_a_copy_is_refused(harness: ResendHarness) -> None:
    guard = SeenTokens()
    body = fixture("delivered")
    first = resend_sim.signed_request(body, CREDENTIALS["webhook_secret"], message_id="msg_a")

    harness.verify(first, guard)
    with pytest.raises(WebhookRejected, match="already accepted"):
        harness.verify(first, guard)
    # Resend's retry after a failed landing: the same svix-id, a new timestamp and signature.
    retry = resend_sim.signed_request(
        body, CREDENTIALS["webhook_secret"], message_id="msg_a", timestamp=clock.epoch() + 5
    )
    harness.verify(retry, guard)


@pytest.mark.usefixtures("vector_secret")
def test_a_copy_is_stale_by_the_time_the_guard_forgets_it() -> None:
    moment = [float(VECTOR_TIMESTAMP - WEBHOOK_TOLERANCE_SECONDS)]  # accepted at the earliest
    guard = SeenTokens(now=lambda: moment[0])
    resend.verify_webhook(vector_request(), vector_config(), guard, now=moment[0])

    moment[0] += REPLAY_TTL_SECONDS + 1

    with pytest.raises(WebhookRejected, match="old"):
        resend.verify_webhook(vector_request(), vector_config(), guard, now=moment[0])


def test_malformed_bodies_are_refused(harness: ResendHarness) -> None:
    for body in (b"not json", b"[1, 2]"):
        with pytest.raises(WebhookRejected):
            harness.verify(harness.signed_webhook(body), SeenTokens())


def test_webhooks_signed_with_the_webhook_header_names_verify(harness: ResendHarness) -> None:
    request = resend_sim.signed_request(
        fixture("opened"), CREDENTIALS["webhook_secret"], prefix="webhook"
    )

    harness.verify(request, SeenTokens())


def test_simulated_events_verify_and_follow_the_outcome_rule(harness: ResendHarness) -> None:
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
    for body in resend_sim.events_as_webhooks(harness.sim):
        harness.verify(harness.signed_webhook(body), guard)
        [event] = parse(body, ACCOUNT)
        assert event.message_key is not None
        assert event.provider_message_id == ids[event.message_key]
        assert event.sending_domain == "news.acme.test"
        if event.event_type is not EventType.UNKNOWN:  # email.sent
            seen.setdefault(event.recipient or "", []).append(
                (event.event_type, event.bounce_class)
            )

    for recipient, expected in recipients.items():
        if expected is not None:
            assert seen[recipient] == expected
    assert seen["ann@example.com"][0] == (EventType.DELIVERED, None)


# secrets


def test_credentials_never_appear_in_logs_errors_or_events(
    harness: ResendHarness, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    messages: list[OutboundMessage] = [
        make_message(r)
        for r in ("a@example.com", "hard@bounce.mailers.test", "nobody@reject.mailers.test")
    ]
    texts.append(repr(harness.provider().send_batch(messages)))
    sim.inject("resend", *[Fault(status=500)] * 3)
    texts.append(repr(harness.provider().send_batch([make_message("b@example.com")])))
    texts.append(repr(harness.provider(valid_credentials=False).send_batch(messages[:1])))
    for attempt in (
        lambda: harness.verify(harness.forged_webhook(b"{}"), SeenTokens()),
        lambda: harness.verify(harness.stale_webhook(b"{}"), SeenTokens()),
    ):
        with pytest.raises(WebhookRejected) as info:
            attempt()
        texts.append(f"{info.value!s} {info.value!r} {info.value.__cause__!r}")
    events = [e for body in resend_sim.events_as_webhooks(sim) for e in parse(body, ACCOUNT)]
    texts.extend(json.dumps(e.as_row(), default=str) for e in events)
    texts.append(caplog.text)

    assert events
    leaked = [s for s in harness.secrets for text in texts if s in text]
    assert leaked == []
