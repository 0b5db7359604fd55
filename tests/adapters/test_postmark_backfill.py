"""Postmark's backfill against the simulator: the bounces API for a window, the message
details of open messages for their deliveries, Eastern-time bounds and retries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.providers import postmark
from adapters.providers.hooks import RetryPolicy
from adapters.providers.postmark import backfill_events, parse
from adapters.providers.postmark.backfill import webhook_time
from adapters.providers.postmark.polling import eastern_bound
from adapters.simulator import Fault, Simulator
from adapters.simulator import postmark as postmark_sim
from mailers import clock
from mailers.completeness import FINAL_EVENT_TYPES
from mailers.errors import ProviderAuthError, ProviderUnavailable
from mailers.events import CanonicalEvent, EventType
from tests.adapters.provider_contract import make_message
from tests.adapters.test_postmark import (
    ACCOUNT,
    CREDENTIALS,
    ENV,
    WRONG_ENV,
    WRONG_TOKEN,
    PostmarkHarness,
    account_config,
)

RECIPIENTS = [
    "hard@bounce.mailers.test",
    "soft@softbounce.mailers.test",
    "angry@complaint.mailers.test",
    "ann@example.com",
    "bob@example.com",
]
NO_WAIT = RetryPolicy(attempts=5, base_delay=0.25, max_delay=5.0)


@pytest.fixture
def sim() -> Iterator[Simulator]:
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


def naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def events(payloads: list[bytes]) -> list[CanonicalEvent]:
    return [event for body in payloads for event in parse(body, ACCOUNT)]


def webhook_events(sim: Simulator) -> list[CanonicalEvent]:
    return events(postmark_sim.events_as_webhooks(sim))


def calls(sim: Simulator, prefix: str) -> list[str]:
    return [path for p, _, path in sim.requests if p == "postmark" and path.startswith(prefix)]


def run(
    harness: PostmarkHarness,
    start: datetime,
    end: datetime,
    open_ids: list[str],
    slept: list[float] | None = None,
    **settings: Any,
) -> list[bytes]:
    return backfill_events(
        ACCOUNT,
        harness.config,
        harness.settings(**settings),
        naive(start),
        naive(end),
        open_ids,
        retry=NO_WAIT,
        sleep=(slept if slept is not None else []).append,
    )


def send(harness: PostmarkHarness, recipients: list[str]) -> list[str]:
    results = harness.provider().send_batch([make_message(r) for r in recipients])
    assert all(r.accepted for r in results)
    return [str(r.provider_message_id) for r in results]


def test_backfilled_final_events_have_the_webhooks_ids_and_keys(
    harness: PostmarkHarness, fixed_clock: clock.FixedClock
) -> None:
    sent_at = clock.now()
    ids = send(harness, RECIPIENTS)
    fixed_clock.advance(3600)  # every simulated outcome has happened

    payloads = run(harness, sent_at - timedelta(minutes=5), clock.now(), ids, poll_page_size=2)

    webhooks = webhook_events(harness.sim)
    finals = {e.event_id: e for e in webhooks if e.event_type in FINAL_EVENT_TYPES}
    backfilled = {e.event_id: e for e in events(payloads) if e.event_type in FINAL_EVENT_TYPES}
    assert backfilled.keys() == finals.keys()
    delivered = [e for e in backfilled.values() if e.event_type is EventType.DELIVERED]
    assert delivered, "the sandbox rule delivers some of these"
    for event in delivered:  # from the details: Metadata carries our message key
        webhook = finals[event.event_id]
        assert (event.message_key, event.occurred_at) == (webhook.message_key, webhook.occurred_at)
        assert (event.provider_message_id, event.recipient) == (
            webhook.provider_message_id,
            webhook.recipient,
        )
    # Bounces come from the bounces API: no Metadata, joined by Postmark's message id.
    bounced = [e for e in backfilled.values() if e.event_type is not EventType.DELIVERED]
    assert bounced and all(e.message_key is None and e.provider_message_id for e in bounced)
    # Details only for the open messages no bounce settled (a complaint follows a delivery).
    settled = {e.provider_message_id for e in bounced if e.event_type is EventType.BOUNCED}
    asked = {path.split("/")[3] for path in calls(harness.sim, "/messages/outbound/")}
    assert asked == set(ids) - settled


def test_only_open_messages_are_asked_about_and_unknown_ids_are_skipped(
    harness: PostmarkHarness, fixed_clock: clock.FixedClock
) -> None:
    sent_at = clock.now()
    ann, bob = send(harness, ["ann@example.com", "bob@example.com"])
    fixed_clock.advance(3600)

    payloads = run(harness, sent_at, clock.now(), [bob, "0f0e0d0c-past-retention"])

    assert [(e.recipient, e.event_type) for e in events(payloads)] == [
        ("bob@example.com", EventType.DELIVERED)
    ]
    assert sorted(calls(harness.sim, "/messages/outbound/")) == [
        "/messages/outbound/0f0e0d0c-past-retention/details",
        f"/messages/outbound/{bob}/details",
    ]
    assert ann not in " ".join(calls(harness.sim, "/"))


def test_details_calls_are_capped_per_backfill(
    harness: PostmarkHarness, fixed_clock: clock.FixedClock
) -> None:
    sent_at = clock.now()
    ids = send(harness, [f"reader{i}@example.com" for i in range(5)])
    fixed_clock.advance(3600)

    payloads = run(harness, sent_at, clock.now(), ids, backfill_max_details=3)

    assert len(calls(harness.sim, "/messages/outbound/")) == 3
    assert {e.provider_message_id for e in events(payloads)} == set(ids[:3])


def test_a_bounce_after_the_window_is_read_by_its_id(
    harness: PostmarkHarness, fixed_clock: clock.FixedClock
) -> None:
    sent_at = clock.now()
    [message_id] = send(harness, ["hard@bounce.mailers.test"])
    fixed_clock.advance(3600)

    # The window ends before the bounce (2 s after acceptance): its search lists nothing.
    payloads = run(harness, sent_at - timedelta(minutes=5), sent_at, [message_id])

    [bounce] = events(payloads)
    [webhook] = [e for e in webhook_events(harness.sim) if e.event_type is EventType.BOUNCED]
    assert bounce.event_id == webhook.event_id
    bounce_id = webhook.event_id.removeprefix("postmark:bounce:")
    assert calls(harness.sim, "/bounces/") == [f"/bounces/{bounce_id}"]


def bounce_record(bounce_id: int, bounced_at: datetime) -> dict[str, Any]:
    return {
        "RecordType": "Bounce",
        "ID": bounce_id,
        "Type": "HardBounce",
        "MessageID": f"m-{bounce_id}",
        "Email": f"r{bounce_id}@example.com",
        "MessageStream": "outbound",
        "BouncedAt": bounced_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


def test_a_window_with_more_than_10000_bounces_is_searched_again_below_the_oldest(
    harness: PostmarkHarness,
) -> None:
    start = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    bounces = [bounce_record(i, start + timedelta(seconds=i)) for i in range(10_600)]
    before = bounce_record(99_001, start - timedelta(seconds=1))
    after = bounce_record(99_002, start + timedelta(seconds=10_600))
    harness.sim.store["postmark"]["bounces"] += [before, *bounces, after]

    payloads = run(harness, start, start + timedelta(seconds=10_599), [])

    assert sorted(json.loads(p)["ID"] for p in payloads) == list(range(10_600))
    assert len(calls(harness.sim, "/bounces")) == 20 + 2  # 10,000, then 600 less one page


def test_more_than_10000_bounces_in_one_second_cannot_be_paged(harness: PostmarkHarness) -> None:
    moment = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    harness.sim.store["postmark"]["bounces"] += [bounce_record(i, moment) for i in range(10_001)]

    with pytest.raises(ProviderUnavailable, match="within one second"):
        run(harness, moment - timedelta(hours=1), moment + timedelta(hours=1), [])


@pytest.mark.parametrize(
    ("moment", "fromdate", "todate"),
    [
        # EDT (UTC-4) and EST (UTC-5), rounded down for fromdate and up for todate
        (datetime(2026, 7, 1, 16, 0, 0, 500_000), "2026-07-01T12:00:00", "2026-07-01T12:00:01"),
        (datetime(2026, 12, 1, 16, 0, 0), "2026-12-01T11:00:00", "2026-12-01T11:00:00"),
        # the repeated hour of 2026-11-01: moved a wall hour out, either way
        (datetime(2026, 11, 1, 5, 20), "2026-11-01T00:20:00", "2026-11-01T02:20:00"),
        (datetime(2026, 11, 1, 6, 40), "2026-11-01T00:40:00", "2026-11-01T02:40:00"),
        # the skipped hour of 2026-03-08: 06:59 UTC is 01:59 EST, 07:00 UTC 03:00 EDT
        (datetime(2026, 3, 8, 6, 59), "2026-03-08T01:59:00", "2026-03-08T01:59:00"),
        (datetime(2026, 3, 8, 7, 0), "2026-03-08T03:00:00", "2026-03-08T03:00:00"),
    ],
)
def test_search_bounds_are_eastern_wall_times_on_the_safe_side(
    moment: datetime, fromdate: str, todate: str
) -> None:
    aware = moment.replace(tzinfo=UTC)
    assert (eastern_bound(aware), eastern_bound(aware, upper=True)) == (fromdate, todate)


@pytest.mark.parametrize(
    ("start", "end", "inside"),
    [
        # fall back: 05:20 UTC is 01:20 EDT, 06:40 UTC is 01:40 EST (the same wall hour)
        (datetime(2026, 11, 1, 5, 20), datetime(2026, 11, 1, 6, 40), [(5, 50), (6, 10)]),
        # spring forward: 06:30 UTC is 01:30 EST, 07:30 UTC 03:30 EDT
        (datetime(2026, 3, 8, 6, 30), datetime(2026, 3, 8, 7, 30), [(6, 50), (7, 10)]),
    ],
)
def test_windows_across_a_dst_change_get_exactly_their_bounces(
    harness: PostmarkHarness, start: datetime, end: datetime, inside: list[tuple[int, int]]
) -> None:
    day = start.replace(hour=0, minute=0, tzinfo=UTC)
    times = [(4, 50), (5, 10), (5, 50), (6, 10), (6, 50), (7, 10), (7, 50)]
    records = [bounce_record(h * 100 + m, day + timedelta(hours=h, minutes=m)) for h, m in times]
    harness.sim.store["postmark"]["bounces"] += records

    payloads = run(harness, start.replace(tzinfo=UTC), end.replace(tzinfo=UTC), [])

    assert sorted(json.loads(p)["ID"] for p in payloads) == [h * 100 + m for h, m in inside]


def test_429_and_5xx_answers_are_retried(
    harness: PostmarkHarness, fixed_clock: clock.FixedClock
) -> None:
    sent_at = clock.now()
    ids = send(harness, ["ann@example.com"])
    fixed_clock.advance(3600)
    harness.sim.inject(
        "postmark",
        Fault(status=429, retry_after=2),
        Fault(status=503, retry_after=1),
        Fault(status=500),
        Fault(drop=True),
    )
    slept: list[float] = []

    payloads = run(harness, sent_at, clock.now(), ids, slept)

    assert [e.event_type for e in events(payloads)] == [EventType.DELIVERED]
    assert slept == [2.0, 1.0, 1.0, 2.0]  # Retry-After, then the policy's back-off
    assert harness.sim.faults_served["429"] == 1


def test_a_read_failing_past_the_retries_fails_the_account(harness: PostmarkHarness) -> None:
    harness.sim.inject("postmark", *[Fault(status=502)] * 5)
    moment = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    with pytest.raises(ProviderUnavailable, match="5 attempts"):
        run(harness, moment, moment + timedelta(hours=1), [])


def test_a_refused_token_is_an_auth_error_that_names_no_token(harness: PostmarkHarness) -> None:
    moment = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    with pytest.raises(ProviderAuthError) as info:
        backfill_events(
            ACCOUNT,
            account_config(token_env=WRONG_ENV),
            harness.settings(),
            naive(moment),
            naive(moment),
            [],
            retry=NO_WAIT,
            sleep=[].append,
        )
    assert WRONG_TOKEN not in f"{info.value} {info.value.__cause__!r}"


def test_the_spec_backfills_through_the_registry_seam(
    harness: PostmarkHarness, fixed_clock: clock.FixedClock
) -> None:
    sent_at = clock.now()
    ids = send(harness, ["ann@example.com"])
    fixed_clock.advance(3600)
    config = account_config(settings={"base_url": harness.sim.base_url})

    start, end = naive(sent_at), naive(clock.now())
    payloads = postmark.SPEC.backfill_events(ACCOUNT, config, start, end, ids)

    assert [e.event_type for e in events(payloads)] == [EventType.DELIVERED]


@pytest.mark.parametrize(
    ("api", "webhook"),
    [
        ("2014-02-14T11:13:10.8054242-05:00", "2014-02-14T16:13:10.8054242Z"),
        ("2026-07-01T12:00:00-04:00", "2026-07-01T16:00:00Z"),
        ("2019-11-05T16:33:54.9070259Z", "2019-11-05T16:33:54.9070259Z"),
        ("2026-12-01T11:00:00.5", "2026-12-01T16:00:00.5Z"),  # naive: US Eastern
    ],
)
def test_api_times_are_written_the_webhooks_way(api: str, webhook: str) -> None:
    assert webhook_time(api) == webhook


@pytest.mark.parametrize("value", [None, "", "yesterday", "2026-13-01T00:00:00Z", 1700000000])
def test_unreadable_times_are_none(value: object) -> None:
    assert webhook_time(value) is None
