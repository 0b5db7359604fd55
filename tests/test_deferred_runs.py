"""Deferred messages go out on a later run, launched by the ``deferred_due`` sensor.

A warm-up curve allows 30 messages on its one day; the rest of the window is deferred to
the next day. The send writes a note the sensor reads (never the warehouse); once the
messages are eligible the sensor asks for a run of that window, which sends them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pytest

from mailers.clock import FixedClock, use_clock
from mailers.config import Settings
from mailers.deferrals import DeferralNotes
from orchestration.defs.build import build_definitions
from orchestration.defs.runs import BACKFILL_TAG, SEND_WINDOW_TAG
from tests.conftest import query
from tests.test_run_windows import CURRENT, WEDNESDAY, failures, run


@pytest.fixture(autouse=True)
def clock() -> Iterator[FixedClock]:
    with use_clock(FixedClock(WEDNESDAY)) as fixed:
        yield fixed


@pytest.fixture
def project(core_project: Callable[..., Settings]) -> Settings:
    def mutate(config: dict[str, Any]) -> None:
        identity = config["workspaces"]["acme"]["identities"]["acme_news"]
        identity["warmup"] = {"start_date": "2026-12-02", "daily": [30]}

    return core_project(mutate)


def evaluate(settings: Settings) -> dg.SensorResult:
    sensor = build_definitions(str(settings.path)).resolve_sensor_def("deferred_due")
    result = sensor(dg.build_sensor_context())
    assert isinstance(result, dg.SensorResult)
    return result


def latest_statuses(settings: Settings) -> dict[str, int]:
    rows = query(
        settings,
        """
        select status, count(*) as n from (
            select status, row_number() over (
                partition by message_key order by recorded_at desc, ledger_id desc) as r
            from mailers.send_ledger) where r = 1 group by 1
        """,
    )
    return {row["status"]: row["n"] for row in rows}


def test_the_sensor_runs_a_window_once_its_deferred_messages_are_eligible(
    project: Settings, clock: FixedClock
) -> None:
    first = run(project, {SEND_WINDOW_TAG: CURRENT})
    assert first.success, failures(first)
    statuses = latest_statuses(project)
    deferred = statuses["deferred"]
    assert statuses.get("accepted", 0) + statuses.get("rejected", 0) == 30 and deferred > 0
    (note,) = DeferralNotes(project.data_dir).all()
    assert (note.send_window, note.eligible_at, note.messages) == (
        CURRENT,
        datetime(2026, 12, 3),
        deferred,
    )
    sends = first.asset_materializations_for_node("acme__pro_tips__sends")[0].metadata
    assert sends["deferred_waiting"].value == deferred
    assert sends["deferred_next_eligible_utc"].value == "2026-12-03T00:00:00"

    skipped = evaluate(project).skip_reason
    assert skipped is not None and skipped.skip_message == "no deferred messages are eligible yet"

    clock.set(datetime(2026, 12, 3, 0, 5, tzinfo=UTC))
    (request,) = evaluate(project).run_requests or []
    assert request.job_name == "send__acme__pro_tips"
    assert request.tags[SEND_WINDOW_TAG] == CURRENT and BACKFILL_TAG not in request.tags
    second = run(project, dict(request.tags))
    assert second.success, failures(second)

    statuses = latest_statuses(project)
    assert "deferred" not in statuses and "not_sent" not in statuses
    assert DeferralNotes(project.data_dir).all() == []
    accepted = query(
        project,
        "select message_key, count(*) as n from mailers.send_ledger "
        "where status = 'accepted' group by 1 having count(*) > 1",
    )
    assert accepted == []


def test_a_window_that_is_no_longer_current_is_sent_as_a_backfill(
    project: Settings, clock: FixedClock
) -> None:
    assert run(project, {SEND_WINDOW_TAG: CURRENT}).success

    clock.set(datetime(2026, 12, 8, 12, tzinfo=UTC))  # the next Monday's window has begun
    (request,) = evaluate(project).run_requests or []

    assert request.tags[SEND_WINDOW_TAG] == CURRENT
    assert request.tags[BACKFILL_TAG] == "true"
    assert run(project, dict(request.tags)).success
    assert "deferred" not in latest_statuses(project)
