"""``mailers.planning.plan`` on a real DuckDB file: a dry run that tells settled from in doubt."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.audience import AudienceSpec, resolve
from mailers.clock import FixedClock
from mailers.config import Settings
from mailers.ledger import LedgerContext, LedgerEntry, LedgerStatus, LedgerWriter
from mailers.planning import plan
from mailers.tables import ensure_tables
from tests.conftest import send_window_once

WINDOW = "2026-11-23T08:00:00Z"


def _send_keys(warehouse: DuckDBWarehouse, settings: Settings, count: int) -> list[str]:
    ref = settings.campaign("acme.pro_tips")
    ledger = LedgerWriter(warehouse, LedgerContext.of(ref, WINDOW, "probe"))
    table = resolve(warehouse, AudienceSpec.of(ref, WINDOW), ledger.settled_keys_sql())
    keys = warehouse.query(
        f"select mailers_message_key as k from {table} where mailers_disposition = 'send' "
        f"order by k limit {count}"
    )["k"].to_pylist()
    warehouse.execute(f"drop table {table}")
    return keys


def test_in_doubt_messages_are_counted_apart_from_settled_ones(
    core_project: Callable[..., Settings],
) -> None:
    settings = core_project()
    ref = settings.campaign("acme.pro_tips")
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
        before = plan(warehouse, settings, ref, WINDOW)
        keys = _send_keys(warehouse, settings, 9)
        killed = LedgerWriter(warehouse, LedgerContext.of(ref, WINDOW, "run-killed"))
        killed.record([LedgerEntry(k, LedgerStatus.DISPATCHING) for k in keys])
        # Of the nine handed over: four answered, three timed out; two stay dispatching.
        killed.record([LedgerEntry(k, LedgerStatus.ACCEPTED) for k in keys[:4]])
        killed.record([LedgerEntry(k, LedgerStatus.UNKNOWN) for k in keys[4:7]])

        after = plan(warehouse, settings, ref, WINDOW)

    assert "in_doubt" not in before.counts
    assert after.counts["in_doubt"] == 5
    assert after.counts["already_settled"] == before.counts.get("already_settled", 0) + 4
    assert after.to_send == before.to_send - 9
    assert sum(after.by_account.values()) == after.to_send


def test_a_plan_of_another_window_sees_no_doubt_of_this_one(
    core_project: Callable[..., Settings],
) -> None:
    settings = core_project()
    ref = settings.campaign("acme.pro_tips")
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
        keys = _send_keys(warehouse, settings, 3)
        writer = LedgerWriter(warehouse, LedgerContext.of(ref, WINDOW, "run-1"))
        writer.record([LedgerEntry(k, LedgerStatus.UNKNOWN) for k in keys])

        other = plan(warehouse, settings, ref, "2026-11-30T08:00:00Z")

    assert "in_doubt" not in other.counts


def test_a_plan_shows_each_cap_with_what_is_used_planned_and_deferred(
    core_project: Callable[..., Settings], fixed_clock: FixedClock
) -> None:
    def mutate(config: dict[str, Any]) -> None:
        acme = config["workspaces"]["acme"]
        acme["identities"]["acme_news"]["warmup"] = {
            "ramp": {"start": 30, "growth": 2, "ceiling": 500}
        }
        acme["provider_accounts"]["acme_sandbox_b"]["pacing"] = {"daily_cap": 10}

    fixed_clock.set(datetime(2026, 12, 7, 10, tzinfo=UTC))
    settings = core_project(mutate)
    ref = settings.campaign("acme.pro_tips")
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
        before = plan(warehouse, settings, ref, WINDOW)
    report = send_window_once(settings, "acme.pro_tips", window=WINDOW)
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        after = plan(warehouse, settings, ref, WINDOW)
        started = warehouse.query("select * from mailers.warmup_starts").to_pylist()

    curve = {c.source: c for c in before.caps}["identities.acme_news.warmup"]
    assert (curve.limit, curve.used, curve.planned, curve.days_to_full) == (30, 0, 30, 5)
    assert curve.deferred == before.counts["deferred_by_caps"] > 0
    account = {c.source: c for c in before.caps}[
        "provider_accounts.acme_sandbox_b.pacing.daily_cap"
    ]
    assert (account.limit, account.used, account.deferred) == (10, 0, 0)
    assert account.planned == before.by_account["acme_sandbox_b"] <= 10
    assert sum(before.by_account.values()) == 30
    # The plan predicted the send, and reserved nothing the send could not use.
    assert report.counts["deferred"] == before.counts["deferred_by_caps"]
    assert report.counts["accepted"] + report.counts["rejected"] == 30
    # A plan never starts a curve; the send did, on its day.
    assert [(r["owner_kind"], r["owner"], r["started_on"]) for r in started] == [
        ("identity", "acme_news", date(2026, 12, 7))
    ]
    after_curve = {c.source: c for c in after.caps}["identities.acme_news.warmup"]
    assert (after_curve.used, after_curve.planned) == (30, 0)
    assert after.counts["waiting_deferred"] == report.counts["deferred"]
    assert after.to_send == 0
