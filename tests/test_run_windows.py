"""Send windows as Dagster runs see them: checked at the start of the audience and sends
assets, and claimed by one run at a time.

Each test materializes one campaign's audience and sends in-process on a copy of the
seeded warehouse, with the clock fixed on a Wednesday: the current window of
``acme.pro_tips`` (Mondays 09:00 Berlin) is then ``2026-11-30T08:00:00Z``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pytest

from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.claims import CLAIM_TTL_SECONDS, WindowClaim
from mailers.clock import FixedClock, use_clock
from mailers.config import Settings
from mailers.ledger import LedgerContext
from mailers.warehouse import WORK_SCHEMA
from orchestration.defs.build import build_definitions
from orchestration.defs.campaigns import audience_key, sends_key
from orchestration.defs.runs import ACTOR_TAG, BACKFILL_TAG, SEND_WINDOW_TAG
from tests.conftest import eml_files, query

WEDNESDAY = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
CURRENT = "2026-11-30T08:00:00Z"
PREVIOUS = "2026-11-23T08:00:00Z"


@pytest.fixture(autouse=True)
def clock() -> Iterator[FixedClock]:
    with use_clock(FixedClock(WEDNESDAY)) as fixed:
        yield fixed


@pytest.fixture
def project(core_project: Callable[..., Settings]) -> Settings:
    return core_project()


def run(
    settings: Settings,
    tags: dict[str, str],
    campaign: str = "acme.pro_tips",
    *,
    assets: tuple[str, ...] = ("audience", "sends"),
) -> dg.ExecuteInProcessResult:
    ref = settings.campaign(campaign)
    keys = {"audience": audience_key(ref), "sends": sends_key(ref)}
    return (
        build_definitions(str(settings.path))
        .resolve_job_def("mailers_pipeline")
        .execute_in_process(
            instance=dg.DagsterInstance.ephemeral(),
            asset_selection=[keys[name] for name in assets],
            raise_on_error=False,
            tags=tags,
        )
    )


def failures(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(
        str(event.step_failure_data.error) for event in result.all_events if event.is_step_failure
    )


def failed_steps(result: dg.ExecuteInProcessResult) -> list[str]:
    return [str(event.step_key) for event in result.all_events if event.is_step_failure]


def send_audits(settings: Settings) -> list[dict[str, Any]]:
    rows = query(
        settings,
        "select run_id, actor, send_window, counts, detail from mailers.audit_log "
        "where action = 'send' order by recorded_at",
    )
    return [
        {**row, "counts": json.loads(row["counts"]), "detail": json.loads(row["detail"])}
        for row in rows
    ]


def ledger_rows(settings: Settings) -> int:
    return query(settings, "select count(*) as n from mailers.send_ledger")[0]["n"]


def audience_resolved(settings: Settings) -> bool:
    with DuckDBWarehouse(settings.warehouse_path, read_only=True) as warehouse:
        return warehouse.columns(WORK_SCHEMA, "audience__acme__pro_tips") is not None


def test_a_window_spelled_without_its_z_is_the_same_window(project: Settings) -> None:
    first = run(project, {SEND_WINDOW_TAG: CURRENT})
    assert first.success, failures(first)
    sent = eml_files(project)
    assert sent

    again = run(project, {SEND_WINDOW_TAG: "2026-11-30T08:00:00"})

    assert again.success, failures(again)
    assert eml_files(project) == sent
    windows = query(project, "select distinct send_window as w from mailers.send_ledger")
    assert windows == [{"w": CURRENT}]
    audits = send_audits(project)
    assert [a["send_window"] for a in audits] == [CURRENT, CURRENT]
    assert audits[1]["counts"].get("accepted", 0) == 0
    assert [a["detail"]["backfill"] for a in audits] == [False, False]


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("yesterday", "nearest ticks are 2026-11-30T08:00:00Z and 2026-12-07T08:00:00Z"),
        ("2026-11-30T08:30:00Z", "is not a tick of its schedule '0 9 * * 1' (Europe/Berlin)"),
        ("2026-12-07T08:00:00Z", "has not begun yet; the current window is 2026-11-30T08:00:00Z"),
        ("", "send window '' is not a tick"),
    ],
)
def test_a_window_the_campaign_does_not_have_fails_before_anything_is_read(
    project: Settings, value: str, said: str
) -> None:
    result = run(project, {SEND_WINDOW_TAG: value})

    assert not result.success
    assert failed_steps(result) == ["acme__pro_tips__audience"]
    assert "campaign acme.pro_tips" in failures(result) and said in failures(result)
    assert not audience_resolved(project)
    assert ledger_rows(project) == 0 and eml_files(project) == []


def test_a_one_off_campaign_refuses_a_cron_style_window(project: Settings) -> None:
    result = run(project, {SEND_WINDOW_TAG: "0 9 * * 1"}, "globex.launch_newsletter")

    assert not result.success
    assert "campaign globex.launch_newsletter is a one-off campaign" in failures(result)
    assert ledger_rows(project) == 0


def test_the_sends_asset_checks_the_window_too(project: Settings) -> None:
    result = run(project, {SEND_WINDOW_TAG: "2026-11-30T08:30:00Z"}, assets=("sends",))

    assert failed_steps(result) == ["acme__pro_tips__sends"]
    assert "is not a tick of its schedule" in failures(result)
    assert "has not been resolved yet" not in failures(result)


def test_a_past_window_needs_the_backfill_tag_and_the_audit_says_who_asked(
    project: Settings,
) -> None:
    refused = run(project, {SEND_WINDOW_TAG: "2026-11-23T09:00:00+01:00"})
    assert not refused.success
    message = failures(refused)
    assert f"send window {PREVIOUS} is not the current one ({CURRENT})" in message
    assert f"run it with the tags {SEND_WINDOW_TAG}={PREVIOUS} {BACKFILL_TAG}=true" in message
    assert ledger_rows(project) == 0

    backfill = run(
        project,
        {SEND_WINDOW_TAG: PREVIOUS, BACKFILL_TAG: "true", ACTOR_TAG: "cli:test:alice"},
    )

    assert backfill.success, failures(backfill)
    (audit,) = send_audits(project)
    assert audit["send_window"] == PREVIOUS
    assert audit["actor"] == "cli:test:alice"
    assert audit["detail"]["backfill"] is True
    assert audit["detail"]["backfill_requested_by"] == "cli:test:alice"
    assert audit["counts"]["accepted"] > 0
    sends = backfill.asset_materializations_for_node("acme__pro_tips__sends")
    assert sends[0].metadata["backfill"].value is True


def test_a_backfill_tag_that_is_not_true_or_false_is_refused(project: Settings) -> None:
    result = run(project, {SEND_WINDOW_TAG: PREVIOUS, BACKFILL_TAG: "yes"})

    assert not result.success
    assert f"run tag {BACKFILL_TAG}='yes' must be 'true' or 'false'" in failures(result)
    assert ledger_rows(project) == 0


def hold_window(settings: Settings, run_id: str, window: str = CURRENT) -> None:
    """Claim a window as another sender would (a CLI call, a worker), and keep it."""
    ref = settings.campaign("acme.pro_tips")
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        WindowClaim.acquire(warehouse, LedgerContext.of(ref, window, run_id))


def claim_rows(settings: Settings) -> list[tuple[int, str, str]]:
    rows = query(
        settings,
        "select generation, event, run_id from mailers.send_claims order by generation, beat",
    )
    return [(row["generation"], row["event"], row["run_id"]) for row in rows]


def test_a_run_claims_the_window_while_it_sends_and_releases_it(project: Settings) -> None:
    result = run(project, {SEND_WINDOW_TAG: CURRENT})

    assert result.success, failures(result)
    assert claim_rows(project) == [(1, "acquired", result.run_id), (1, "released", result.run_id)]


def test_a_run_of_a_window_another_sender_holds_fails_naming_it(project: Settings) -> None:
    hold_window(project, "cli-send-4242")

    result = run(project, {SEND_WINDOW_TAG: CURRENT})

    assert failed_steps(result) == ["acme__pro_tips__sends"]
    message = failures(result)
    assert f"send window {CURRENT} of acme.pro_tips is being sent by run cli-send-4242" in message
    assert "its lease expires at 2026-12-02T10:10:00Z" in message
    assert ledger_rows(project) == 0 and eml_files(project) == []
    assert claim_rows(project) == [(1, "acquired", "cli-send-4242")]


def test_a_run_takes_over_a_dead_senders_window_once_its_lease_lapsed(
    project: Settings, clock: FixedClock
) -> None:
    hold_window(project, "killed-run")
    clock.advance(CLAIM_TTL_SECONDS)

    result = run(project, {SEND_WINDOW_TAG: CURRENT})

    assert result.success, failures(result)
    assert eml_files(project)
    assert claim_rows(project) == [
        (1, "acquired", "killed-run"),
        (2, "acquired", result.run_id),
        (2, "released", result.run_id),
    ]
    (audit,) = send_audits(project)
    assert audit["detail"]["took_over_window_from"] == "killed-run"


def test_another_window_of_the_campaign_is_not_held_up(project: Settings) -> None:
    hold_window(project, "cli-send-4242", window=PREVIOUS)

    result = run(project, {SEND_WINDOW_TAG: CURRENT})

    assert result.success, failures(result)
    assert eml_files(project)
