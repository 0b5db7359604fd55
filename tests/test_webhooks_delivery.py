"""Canonical webhooks out, end to end: events in a DuckDB warehouse reach a real loopback
subscriber, signed (checked with ``standardwebhooks``), exactly once in the end through
failures, timeouts and retries at the scheduled times (a fixed clock moved forward, no
sleeping); a subscriber that never recovers is dead-lettered, disabled (audit row, alert)
and skipped until enabled; replays and filters hold; a fault mix over thousands of events."""

from __future__ import annotations

import itertools
import json
import logging
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.warehouses.duckdb import DuckDBWarehouse
from adapters.webhooks_out import HttpxTransport
from mailers.clock import FixedClock, utcnow
from mailers.config import Settings
from mailers.subscribers_config import THREE_DAYS, RetryConfig
from mailers.webhooks_out import payload, schedule, state
from mailers.webhooks_out.delivery import DeliveryReport, deliver, enable, replay
from tests.webhook_receiver import (
    ENVIRON,
    SECRET_NEW,
    SECRET_OLD,
    add_events,
    always,
    event_rows,
    receiving,
    settings_with,
    subscriber,
)


class Alerts(list[tuple[int, str, Mapping[str, Any]]]):
    def __call__(self, level: int, message: str, body: Mapping[str, Any]) -> bool:
        self.append((level, message, body))
        return True


@pytest.fixture(scope="module")
def transport() -> Iterator[HttpxTransport]:
    """One client for the module (each builds an SSL context, costly on a loaded machine)."""
    client = HttpxTransport()
    yield client
    client.close()


class Hooks:
    """A test's settings, its open warehouse and the transport: runs and reads."""

    def __init__(self, settings: Settings, warehouse: DuckDBWarehouse, http: HttpxTransport):
        self.settings, self.warehouse, self.http = settings, warehouse, http

    def run(self, run_id: str = "run", alerts: Alerts | None = None) -> DeliveryReport:
        return deliver(
            self.warehouse,
            self.settings,
            self.http,
            run_id,
            alert_for=(lambda ws: alerts) if alerts is not None else None,
            environ=ENVIRON,
        )

    def rows(self, sql: str) -> list[dict[str, Any]]:
        return self.warehouse.query(sql).to_pylist()

    def insert(self, events: list[dict[str, Any]]) -> None:
        add_events(self.warehouse, events)

    def next_due(self, name: str = "crm") -> datetime | None:
        """When the subscriber's soonest open delivery is due (None: nothing open)."""
        open_ = state.open_deliveries(self.warehouse, "acme", name, utcnow()).to_pylist()
        times = [d["next_attempt_at"] or d["created_at"] for d in open_]
        return min(times) if times else None


@contextmanager
def hooks(
    tmp_path: Path, transport: HttpxTransport, subscribers: dict[str, dict[str, Any]]
) -> Iterator[Hooks]:
    settings = settings_with(tmp_path, subscribers)
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        yield Hooks(settings, warehouse, transport)


def test_events_are_delivered_signed_and_a_rotation_verifies_with_either_secret(
    tmp_path: Path, fixed_clock: FixedClock, transport: HttpxTransport
) -> None:
    rotating = {"secrets": [{"env": "HOOK_KEY"}, {"env": "HOOK_KEY_OLD"}], "batch_size": 3}
    with (
        receiving(always(200), [SECRET_OLD]) as old,
        receiving(always(200), [SECRET_NEW]) as new,
        hooks(
            tmp_path,
            transport,
            {"crm": subscriber(old.url, **rotating), "crm_new": subscriber(new.url, **rotating)},
        ) as h,
    ):
        h.insert(event_rows(7))
        report = h.run()
        assert [(s.subscriber, s.created, s.delivered) for s in report.subscribers] == [
            ("crm", 3, 3),
            ("crm_new", 3, 3),
        ]
        for receiver in (old, new):
            assert receiver.unverified == 0
            assert receiver.accepted_event_ids() == [f"ev-{n:06d}" for n in range(7)]
            first = receiver.received[0]
            assert first.document["type"] == payload.BATCH_TYPE
            assert "raw_payload" not in first.document["data"]["events"][0]["data"]
        assert old.received[0].webhook_id == payload.webhook_id(
            "acme", "crm", ["ev-000000", "ev-000001", "ev-000002"]
        )

        assert h.run().subscribers[0].created == 0  # nothing new past the mark
        fixed_clock.advance(5)
        h.insert(event_rows(2, start=7))
        assert h.run().subscribers[0].delivered == 1
        assert old.accepted_event_ids()[-2:] == ["ev-000007", "ev-000008"]
        (mark,) = h.rows(
            "select event_id from mailers.webhook_marks where subscriber = 'crm' "
            "order by recorded_at desc limit 1"
        )
        assert mark["event_id"] == "ev-000008"


def test_a_wrong_secret_is_refused_by_the_receiver(
    tmp_path: Path, fixed_clock: FixedClock, transport: HttpxTransport
) -> None:
    with (
        receiving(always(200), [SECRET_OLD]) as receiver,
        hooks(tmp_path, transport, {"crm": subscriber(receiver.url)}) as h,
    ):
        h.insert(event_rows(1))
        assert h.run().subscribers[0].retrying == 1
        assert receiver.unverified == 1 and not receiver.received


def test_a_subscriber_that_fails_times_out_and_recovers_gets_each_event_once(
    tmp_path: Path, fixed_clock: FixedClock, transport: HttpxTransport
) -> None:
    script: list[int | str] = [503, "sleep", "drop"]
    with (
        receiving(lambda hook_id, before: script.pop(0) if script else 200) as receiver,
        hooks(tmp_path, transport, {"crm": subscriber(receiver.url, batch_size=10)}) as h,
    ):
        h.insert(event_rows(3))
        start = utcnow()
        assert h.run().subscribers[0].retrying == 1  # 503
        assert h.run().subscribers[0].delivered == 0  # not due yet: nothing sent
        assert len(receiver.received) == 1
        for _ in range(3):  # the timeout, the dropped connection, then success
            due = h.next_due()
            assert due is not None
            fixed_clock.set(due)
            h.run()
        assert h.next_due() is None
        assert receiver.accepted_event_ids() == ["ev-000000", "ev-000001", "ev-000002"]
        assert len({r.webhook_id for r in receiver.received}) == 1
        assert len({r.body for r in receiver.received}) == 1  # a retry sends the same bytes

        attempts = h.rows(
            "select attempt, status, response_code, error, attempted_at, next_attempt_at, "
            "delivery_id from mailers.webhook_attempts order by attempt"
        )
        assert [(a["status"], a["response_code"]) for a in attempts] == [
            ("retrying", 503),
            ("retrying", None),
            ("retrying", None),
            ("delivered", 200),
        ]
        assert attempts[1]["error"] == "timed out after 0.5 s"
        assert attempts[2]["error"].startswith("RemoteProtocolError")
        offsets = schedule.retry_offsets(RetryConfig(), attempts[0]["delivery_id"])
        assert [(a["attempted_at"] - start).total_seconds() for a in attempts] == pytest.approx(
            offsets[:4]
        )
        for earlier, later in itertools.pairwise(attempts):
            assert later["attempted_at"] == earlier["next_attempt_at"]


def test_a_subscriber_that_never_recovers_is_dead_lettered_disabled_and_skipped(
    tmp_path: Path, fixed_clock: FixedClock, transport: HttpxTransport
) -> None:
    answer: list[int] = [500]
    with (
        receiving(lambda hook_id, before: answer[0]) as receiver,
        hooks(tmp_path, transport, {"crm": subscriber(receiver.url)}) as h,
    ):
        h.insert(event_rows(1))
        start = utcnow()
        alerts = Alerts()
        runs = 0
        while not (report := h.run(f"run-{runs}", alerts)).subscribers[0].disabled:
            runs += 1
            assert runs < 100
            if runs == 5:
                h.insert(event_rows(1, start=1))  # still open when the subscriber is disabled
            due = h.next_due()
            assert due is not None
            fixed_clock.set(due)

        assert report.subscribers[0].dead_lettered == 1
        dead = h.rows("select * from mailers.webhook_dead_letters order by dead_at")
        assert [json.loads(d["event_ids"]) for d in dead] == [["ev-000000"], ["ev-000001"]]
        offsets = schedule.retry_offsets(RetryConfig(), dead[0]["delivery_id"])
        assert offsets[-1] == THREE_DAYS
        assert dead[0]["attempts"] == len(offsets) and dead[0]["last_response_code"] == 500
        assert dead[1]["last_error"] == "subscriber disabled"
        assert (dead[0]["dead_at"] - start).total_seconds() == pytest.approx(THREE_DAYS)

        (audit,) = h.rows("select * from mailers.audit_log where action like 'webhook%'")
        assert (audit["action"], audit["scope"], audit["workspace"]) == (
            "webhook_disable",
            "webhook_subscriber:crm",
            "acme",
        )
        assert json.loads(audit["after"]) == {"enabled": False}
        ((level, line, body),) = alerts
        assert level == logging.ERROR and "acme/crm disabled" in line
        assert body["subscriber"] == "crm" and body["dead_lettered"] == 1

        answer[0] = 200
        sent = len(receiver.received)
        h.insert(event_rows(1, start=2))
        fixed_clock.advance(3600)
        skipped = h.run("run-disabled").subscribers[0]
        assert skipped.skipped and skipped.skipped.startswith("disabled since")
        assert len(receiver.received) == sent  # a disabled subscriber gets nothing

        assert enable(h.warehouse, h.settings, "crm", "cli:test", "enable-1")
        assert not enable(h.warehouse, h.settings, "crm", "cli:test", "enable-2")
        assert h.run("run-enabled").subscribers[0].delivered == 1
        assert receiver.accepted_event_ids() == ["ev-000002"]
        actions = h.rows(
            "select action from mailers.audit_log where action like 'webhook%' order by seq"
        )
        assert [a["action"] for a in actions] == ["webhook_disable", "webhook_enable"]


def test_replay_delivers_the_window_again_as_new_deliveries(
    tmp_path: Path, fixed_clock: FixedClock, transport: HttpxTransport
) -> None:
    with (
        receiving(always(200)) as receiver,
        hooks(tmp_path, transport, {"crm": subscriber(receiver.url)}) as h,
    ):
        base = utcnow()
        h.insert(
            [
                row
                for n in range(6)
                for row in event_rows(1, start=n, occurred_at=base + timedelta(hours=n))
            ]
        )
        h.run()
        report = replay(
            h.warehouse,
            h.settings,
            transport,
            "replay-1",
            "acme/crm",
            base + timedelta(hours=2),
            base + timedelta(hours=4),
            environ=ENVIRON,
        )
        assert (report.subscribers[0].created, report.subscribers[0].delivered) == (2, 2)
        assert [r.event_ids[0] for r in receiver.accepted()] == [
            *(f"ev-{n:06d}" for n in range(6)),
            "ev-000002",
            "ev-000003",
        ]
        replayed = h.rows("select delivery_id from mailers.webhook_messages where replay")
        assert sorted(r["delivery_id"][:4] for r in replayed) == ["rpl_", "rpl_"]
        (mark,) = h.rows("select event_id from mailers.webhook_marks")
        assert mark["event_id"] == "ev-000005"  # a replay leaves the mark alone


def test_event_type_and_stream_filters_hold(
    tmp_path: Path, fixed_clock: FixedClock, transport: HttpxTransport
) -> None:
    wanted = {"event_types": ["bounced", "complained"], "streams": ["lifecycle"]}
    with (
        receiving(always(200)) as receiver,
        hooks(tmp_path, transport, {"crm": subscriber(receiver.url, **wanted)}) as h,
    ):
        h.insert(
            [
                *event_rows(2, start=0, event_type="bounced"),
                *event_rows(2, start=2, event_type="delivered"),
                *event_rows(2, start=4, event_type="complained", stream="transactional"),
                *event_rows(2, start=6, event_type="complained"),
                *event_rows(2, start=8, event_type="bounced", workspace="globex"),
            ]
        )
        h.run()
        assert receiver.accepted_event_ids() == ["ev-000000", "ev-000001", "ev-000006", "ev-000007"]
        assert {r.document["type"] for r in receiver.accepted()} == {
            "email.bounced",
            "email.complained",
        }


def test_an_event_committed_after_a_later_stamped_one_is_still_delivered_once(
    tmp_path: Path, fixed_clock: FixedClock, transport: HttpxTransport
) -> None:
    """Two ingestions: one stamps its events, another stamps and commits later ones, a
    delivery run sends those and moves the mark past the first's stamp, then the first
    commits. Its events are older than the mark and must still go out, once."""
    with (
        receiving(always(200)) as receiver,
        hooks(tmp_path, transport, {"crm": subscriber(receiver.url, batch_size=1)}) as h,
    ):
        slow = event_rows(2, start=0)  # stamped now, committed below
        fixed_clock.advance(30)
        h.insert(event_rows(2, start=2))
        h.run()
        assert receiver.accepted_event_ids() == ["ev-000002", "ev-000003"]
        h.insert(slow)
        fixed_clock.advance(30)
        h.insert(event_rows(1, start=4))
        h.run()
        h.run()
        delivered = receiver.accepted_event_ids()
        assert sorted(delivered) == [f"ev-{n:06d}" for n in range(5)]  # each exactly once
        (mark,) = h.rows(
            "select event_id from mailers.webhook_marks order by recorded_at desc limit 1"
        )
        assert mark["event_id"] == "ev-000004"
        fixed_clock.advance(2 * 3600)  # past the late-commit window: old rows are not read
        h.insert(event_rows(1, start=5))
        h.run()
        assert receiver.accepted_event_ids()[len(delivered) :] == ["ev-000005"]


def test_a_mark_from_before_tracking_sends_nothing_again(
    tmp_path: Path, fixed_clock: FixedClock, transport: HttpxTransport
) -> None:
    with (
        receiving(always(200)) as receiver,
        hooks(tmp_path, transport, {"crm": subscriber(receiver.url, batch_size=1)}) as h,
    ):
        h.insert(event_rows(3))
        h.run()
        # As an older Mailers left it: the mark untracked, no sent-events rows.
        h.warehouse.execute("update mailers.webhook_marks set tracked_from = null")
        h.warehouse.execute("delete from mailers.webhook_sent_events")
        fixed_clock.advance(60)
        h.insert(event_rows(2, start=3))
        h.run()
        fixed_clock.advance(60)
        h.insert(event_rows(1, start=5))
        h.run()
        assert receiver.accepted_event_ids() == [f"ev-{n:06d}" for n in range(6)]


def test_a_fault_mix_over_thousands_of_events_delivers_every_event(
    tmp_path: Path, fixed_clock: FixedClock, transport: HttpxTransport
) -> None:
    faults = random.Random(10)
    timeouts = [2]  # a couple of timeouts: each costs the client its 0.5 s

    def decide(hook_id: str, before: int) -> int | str:
        roll = faults.random()
        if roll < 0.01 and timeouts[0]:
            timeouts[0] -= 1
            return "sleep"
        if roll < 0.05:
            return "drop"
        return faults.choice([500, 502, 503, 429, 408]) if roll < 0.3 else 200

    config = subscriber("", batch_size=25, max_events_per_run=1000)
    with receiving(decide) as receiver:
        config["url"] = receiver.url
        with hooks(tmp_path, transport, {"crm": config}) as h:
            total = 0
            for wave in range(3):  # events keep arriving while retries are under way
                h.insert(event_rows(1000, start=total))
                total += 1000
                h.run(f"wave-{wave}")
                fixed_clock.advance(10)
            runs = 0
            while (due := h.next_due()) is not None:
                runs += 1
                assert runs < 200
                fixed_clock.set(max(due, utcnow()))
                h.run(f"retry-{runs}")
            (dead,) = h.rows("select count(*) as n from mailers.webhook_dead_letters")

    assert sorted(receiver.accepted_event_ids()) == [f"ev-{n:06d}" for n in range(total)]
    bodies: dict[str, set[bytes]] = {}
    for r in receiver.received:
        bodies.setdefault(r.webhook_id, set()).add(r.body)
    assert len(bodies) == total // 25 and all(len(b) == 1 for b in bodies.values())
    assert len(receiver.received) > len(bodies)  # faults were retried
    assert dead["n"] == 0
