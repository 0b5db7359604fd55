"""Sending policy on a real DuckDB file through sandbox accounts: caps, warm-up, routes.

Days are driven by a fixed clock; caps are counted from the ledger, so they hold across
reruns, across campaigns and across days, and what they hold back is ``deferred`` (never
dropped, never sent early) and goes out on a later run.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pytest

from adapters.settings import load
from mailers.clock import FixedClock
from mailers.config import Settings
from tests.conftest import query, send_window_once, write_config

WINDOW = "2026-11-23T08:00:00Z"
DAY_ONE = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)  # a Monday


def _acme(config: dict[str, Any]) -> dict[str, Any]:
    workspace: dict[str, Any] = config["workspaces"]["acme"]
    return workspace


def _identity_curve(daily: list[int], start: date | None = None, **extra: Any) -> Callable:
    def mutate(config: dict[str, Any]) -> None:
        _acme(config)["identities"]["acme_news"]["warmup"] = {
            "start_date": (start or DAY_ONE.date()).isoformat(),
            "daily": daily,
            **extra,
        }

    return mutate


def _reconfigure(settings: Settings, mutate: Callable) -> Settings:
    """The same project (and warehouse) under a changed config."""
    return load(write_config(settings.base_dir, mutate))


def _latest(settings: Settings) -> list[dict[str, Any]]:
    return query(
        settings,
        """
        select * from (
            select *, row_number() over (
                partition by message_key order by recorded_at desc, ledger_id desc) as r
            from mailers.send_ledger) where r = 1
        """,
    )


def _accepted_per_key(settings: Settings) -> Counter[str]:
    rows = query(settings, "select message_key from mailers.send_ledger where status = 'accepted'")
    return Counter(row["message_key"] for row in rows)


def _accepted_on(settings: Settings, day: date) -> int:
    rows = query(
        settings,
        f"""
        select count(*) as n from mailers.send_ledger
        where status = 'accepted' and cast(recorded_at as date) = date '{day.isoformat()}'
        """,
    )
    return int(rows[0]["n"])


def _handed_over(report: Any) -> int:
    """Messages a run handed to providers (a refused one used the day's capacity too)."""
    return int(report.counts["accepted"] + report.counts["rejected"])


def test_a_warm_up_curve_defers_the_rest_and_sends_it_on_later_days(
    core_project, fixed_clock: FixedClock
) -> None:
    fixed_clock.set(DAY_ONE)
    settings = core_project(_identity_curve([30, 40]))

    first = send_window_once(settings, "acme.pro_tips", window=WINDOW)
    assert _handed_over(first) == 30
    to_send = _handed_over(first) + first.counts["deferred"]
    assert first.counts["deferred"] > 40
    assert first.deferred == Counter({"identities.acme_news.warmup": first.counts["deferred"]})
    deferred = [row for row in _latest(settings) if row["status"] == "deferred"]
    assert len(deferred) == first.counts["deferred"]
    assert {row["eligible_at"] for row in deferred} == {datetime(2026, 12, 8)}
    assert all("warm-up curve of identity acme_news" in row["reason"] for row in deferred)
    assert all("30 of 30 on 2026-12-07" in row["reason"] for row in deferred)
    assert all(row["provider_account"] is None for row in deferred)

    # A rerun the same day sends nothing more and records nothing again.
    fixed_clock.advance(3600)
    again = send_window_once(settings, "acme.pro_tips", window=WINDOW, run_id="run-2")
    assert _handed_over(again) == again.counts["deferred"] == 0
    assert (
        len(query(settings, "select * from mailers.send_ledger where status = 'deferred'"))
        == (first.counts["deferred"])
    )

    # Day two allows 40; on day three the curve no longer limits.
    fixed_clock.set(datetime(2026, 12, 8, 0, 0, 1, tzinfo=UTC))
    second = send_window_once(settings, "acme.pro_tips", window=WINDOW, run_id="run-3")
    assert _handed_over(second) == 40
    fixed_clock.set(datetime(2026, 12, 9, 9, tzinfo=UTC))
    third = send_window_once(settings, "acme.pro_tips", window=WINDOW, run_id="run-4")
    assert third.counts["deferred"] == 0
    assert 30 + 40 + _handed_over(third) == to_send

    sent = _accepted_per_key(settings)
    assert max(sent.values()) == 1
    assert len(sent) == sum(r.counts["accepted"] for r in (first, second, third))
    assert not [row for row in _latest(settings) if row["status"] in ("deferred", "not_sent")]


def test_a_curve_that_has_not_started_holds_everything_until_its_first_day(
    core_project, fixed_clock: FixedClock
) -> None:
    fixed_clock.set(DAY_ONE)
    settings = core_project(_identity_curve([25], start=date(2026, 12, 10)))

    report = send_window_once(settings, "acme.pro_tips", window=WINDOW)

    assert _handed_over(report) == 0
    eligible = {row["eligible_at"] for row in _latest(settings) if row["status"] == "deferred"}
    assert eligible == {datetime(2026, 12, 10)}


def test_the_day_is_counted_in_the_identity_time_zone(
    core_project, fixed_clock: FixedClock
) -> None:
    def mutate(config: dict[str, Any]) -> None:
        _identity_curve([30, 30])(config)
        _acme(config)["identities"]["acme_news"]["timezone"] = "America/Los_Angeles"

    # 07:30 UTC on Dec 8 is still Dec 7 in Los Angeles: day one of the curve.
    fixed_clock.set(datetime(2026, 12, 8, 7, 30, tzinfo=UTC))
    settings = core_project(mutate)
    first = send_window_once(settings, "acme.pro_tips", window=WINDOW)
    assert _handed_over(first) == 30
    deferred = [row for row in _latest(settings) if row["status"] == "deferred"]
    assert {row["eligible_at"] for row in deferred} == {datetime(2026, 12, 8, 8, 0)}

    fixed_clock.set(datetime(2026, 12, 8, 7, 59, tzinfo=UTC))
    early = send_window_once(settings, "acme.pro_tips", window=WINDOW, run_id="r2")
    assert _handed_over(early) == 0
    fixed_clock.set(datetime(2026, 12, 8, 8, 1, tzinfo=UTC))
    on_time = send_window_once(settings, "acme.pro_tips", window=WINDOW, run_id="r3")
    assert _handed_over(on_time) == 30


def _second_campaign(config: dict[str, Any]) -> None:
    campaigns = _acme(config)["campaigns"]
    campaigns["pro_tips_again"] = {**campaigns["pro_tips"], "schedule": None}
    del campaigns["pro_tips_again"]["schedule"]


def test_a_cap_holds_across_two_campaigns_sending_at_once(
    core_project, fixed_clock: FixedClock
) -> None:
    def mutate(config: dict[str, Any]) -> None:
        _second_campaign(config)
        _acme(config)["identities"]["acme_news"]["daily_cap"] = 100

    fixed_clock.set(DAY_ONE)
    settings = core_project(mutate)
    reports: dict[str, Any] = {}
    errors: list[BaseException] = []

    def send(campaign: str, window: str) -> None:
        try:
            reports[campaign] = send_window_once(
                settings, campaign, window=window, run_id=f"run-{campaign}"
            )
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [
        threading.Thread(target=send, args=("acme.pro_tips", WINDOW)),
        threading.Thread(target=send, args=("acme.pro_tips_again", "once")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors

    assert sum(_handed_over(r) for r in reports.values()) == 100
    assert all(r.counts["deferred"] > 0 for r in reports.values())
    rows = query(
        settings,
        "select count(distinct message_key) as n from mailers.send_ledger "
        "where status in ('accepted', 'rejected') and identity = 'acme_news'",
    )
    assert rows[0]["n"] == 100


def test_an_account_over_its_curve_overflows_to_one_with_room_before_deferring(
    core_project, fixed_clock: FixedClock
) -> None:
    def mutate(config: dict[str, Any]) -> None:
        accounts = _acme(config)["provider_accounts"]
        accounts["acme_sandbox_a"]["warmup"] = {"start_date": "2026-12-07", "daily": [20]}
        accounts["acme_sandbox_b"]["pacing"] = {"daily_cap": 60}

    fixed_clock.set(DAY_ONE)
    settings = core_project(mutate)
    report = send_window_once(settings, "acme.pro_tips", window=WINDOW)

    handed = Counter(
        r["provider_account"] for r in _latest(settings) if r["status"] in ("accepted", "rejected")
    )
    assert handed == Counter({"acme_sandbox_a": 20, "acme_sandbox_b": 60})
    latest = _latest(settings)
    overflowed = [
        r
        for r in latest
        if r["provider_account"] == "acme_sandbox_b" and "passed over" in r["route"]
    ]
    assert overflowed
    assert all(
        "acme_sandbox_a is full (provider_accounts.acme_sandbox_a.warmup)" in r["route"]
        for r in overflowed
    )
    deferred = [r for r in latest if r["status"] == "deferred"]
    assert len(deferred) == report.counts["deferred"] > 0
    assert all(r["reason"].startswith("every routed account is full today") for r in deferred)
    assert {r["eligible_at"] for r in deferred} == {datetime(2026, 12, 8)}


def test_a_domain_route_sends_its_domains_through_its_account(core_project) -> None:
    def mutate(config: dict[str, Any]) -> None:
        acme = _acme(config)
        acme["mailbox_providers"] = {"corporate": ["corp.example.net"]}
        acme["streams"]["lifecycle"]["routing"]["domain_routes"] = [
            {"mailbox_provider": "corporate", "accounts": ["acme_sandbox_b"]},
            {"domains": ["mail.example.org"], "accounts": ["acme_sandbox_a"]},
        ]

    settings = core_project(mutate)
    send_window_once(settings, "acme.pro_tips", window=WINDOW)

    sent = [r for r in _latest(settings) if r["status"] == "accepted"]
    corporate = [r for r in sent if r["recipient"].endswith("@corp.example.net")]
    org = [r for r in sent if r["recipient"].endswith("@mail.example.org")]
    others = [r for r in sent if r not in corporate and r not in org]
    assert corporate and org and others
    assert {r["provider_account"] for r in corporate} == {"acme_sandbox_b"}
    assert {r["route"] for r in corporate} == {"domain route 0 for corporate (corp.example.net)"}
    assert {r["provider_account"] for r in org} == {"acme_sandbox_a"}
    assert {r["route"] for r in org} == {"domain route 1 for mail.example.org"}
    assert {r["route"] for r in others} <= {"weighted draw"}
    assert {r["provider_account"] for r in others} == {"acme_sandbox_a", "acme_sandbox_b"}


def test_a_sticky_recipient_keeps_the_account_that_first_sent_to_them(core_project) -> None:
    def weights(a: int, b: int, *, fault_a: bool = False) -> Callable:
        def mutate(config: dict[str, Any]) -> None:
            routing = _acme(config)["streams"]["lifecycle"]["routing"]
            routing["weights"] = {"acme_sandbox_a": a, "acme_sandbox_b": b}
            routing["sticky"] = True
            if fault_a:
                _acme(config)["provider_accounts"]["acme_sandbox_a"]["settings"]["fault"] = (
                    "unavailable"
                )

        return mutate

    settings = core_project(weights(70, 30))
    send_window_once(settings, "acme.pro_tips", window=WINDOW)
    first = {
        r["recipient"]: r["provider_account"]
        for r in _latest(settings)
        if r["status"] == "accepted"
    }
    assert set(first.values()) == {"acme_sandbox_a", "acme_sandbox_b"}

    # The weights now favour b almost entirely: every known recipient stays put.
    settings = _reconfigure(settings, weights(1, 99))
    later = "2026-11-30T08:00:00Z"
    send_window_once(settings, "acme.pro_tips", window=later, run_id="run-2")
    rows = query(
        settings,
        f"select recipient, provider_account, route from mailers.send_ledger "
        f"where status = 'accepted' and send_window = '{later}'",
    )
    assert rows and all(first[r["recipient"]] == r["provider_account"] for r in rows)
    assert {r["route"] for r in rows} == {
        "sticky: acme_sandbox_a first sent to them",
        "sticky: acme_sandbox_b first sent to them",
    }

    # Unless their account is down: then they fall back, and the route says so.
    settings = _reconfigure(settings, weights(70, 30, fault_a=True))
    third = "2026-12-07T08:00:00Z"
    send_window_once(settings, "acme.pro_tips", window=third, run_id="run-3")
    rows = query(
        settings,
        f"select recipient, provider_account, route from mailers.send_ledger "
        f"where status = 'accepted' and send_window = '{third}'",
    )
    moved = [r for r in rows if first.get(r["recipient"]) == "acme_sandbox_a"]
    assert moved and {r["provider_account"] for r in moved} == {"acme_sandbox_b"}
    assert all("; passed over acme_sandbox_a " in r["route"] for r in moved)


def test_a_mailbox_provider_cap_holds_only_that_provider_back(
    core_project, fixed_clock: FixedClock
) -> None:
    def mutate(config: dict[str, Any]) -> None:
        acme = _acme(config)
        acme["mailbox_providers"] = {"corporate": ["corp.example.net"]}
        acme["streams"]["lifecycle"]["policy"] = {"mailbox_provider_daily_caps": {"corporate": 7}}

    fixed_clock.set(DAY_ONE)
    settings = core_project(mutate)
    report = send_window_once(settings, "acme.pro_tips", window=WINDOW)

    latest = _latest(settings)
    corporate = [r for r in latest if (r["recipient"] or "").endswith("@corp.example.net")]
    statuses = Counter(r["status"] for r in corporate)
    assert statuses["accepted"] + statuses["rejected"] == 7
    assert statuses["deferred"] == report.counts["deferred"] > 0
    others = [r for r in latest if r not in corporate]
    assert not [r for r in others if r["status"] == "deferred"]


@pytest.mark.parametrize("level", ["workspace", "stream", "campaign"])
def test_each_scope_caps_its_own_sends(core_project, fixed_clock: FixedClock, level: str) -> None:
    def mutate(config: dict[str, Any]) -> None:
        acme = _acme(config)
        if level == "workspace":
            acme["policy"] = {"daily_cap": 33}
        elif level == "stream":
            acme["streams"]["lifecycle"]["policy"] = {"daily_cap": 33}
        else:
            acme["campaigns"]["pro_tips"]["policy"] = {"daily_cap": 33}

    fixed_clock.set(DAY_ONE)
    settings = core_project(mutate)
    report = send_window_once(settings, "acme.pro_tips", window=WINDOW)

    assert _handed_over(report) == 33
    source = {"workspace": "policy", "stream": "streams.lifecycle.policy"}.get(
        level, "campaigns.pro_tips.policy"
    )
    assert report.deferred == Counter({f"{source}.daily_cap": report.counts["deferred"]})


def _breaker_audits(settings: Settings) -> list[tuple[str, str, str]]:
    rows = query(
        settings,
        "select detail from mailers.audit_log where action = 'breaker' order by recorded_at",
    )
    details = [json.loads(row["detail"]) for row in rows]
    return [(d["account"], d["from_state"], d["to_state"]) for d in details]


def test_a_circuit_breaker_opens_routes_around_probes_and_closes_with_audit_rows(
    core_project, fixed_clock: FixedClock
) -> None:
    def breaker(*, fault: bool) -> Callable:
        def mutate(config: dict[str, Any]) -> None:
            account = _acme(config)["provider_accounts"]["acme_sandbox_a"]
            account["breaker"] = {"consecutive_failures": 1, "open_seconds": 600}
            if fault:
                account["settings"]["fault"] = "unavailable"

        return mutate

    fixed_clock.set(DAY_ONE)
    settings = core_project(breaker(fault=True))
    first = send_window_once(settings, "acme.pro_tips", window=WINDOW)
    assert first.counts["not_sent"] == 0 and first.accounts["acme_sandbox_b"] > 0
    assert _breaker_audits(settings) == [("acme_sandbox_a", "closed", "open")]
    (opened,) = query(settings, "select detail from mailers.audit_log where action = 'breaker'")
    evidence = json.loads(opened["detail"])
    assert evidence["consecutive_failures"] == 1 and evidence["last_failure"]

    # Within open_seconds the next run routes around it without trying it.
    fixed_clock.advance(300)
    second_window = "2026-11-30T08:00:00Z"
    send_window_once(settings, "acme.pro_tips", window=second_window, run_id="run-2")
    rows = query(
        settings,
        "select provider_account, route, status from mailers.send_ledger "
        f"where send_window = '{second_window}' and status = 'dispatching'",
    )
    assert rows and {r["provider_account"] for r in rows} == {"acme_sandbox_b"}
    passed = [r for r in rows if "passed over acme_sandbox_a is unavailable" in r["route"]]
    assert passed and all("circuit" in r["route"] or "open" in r["route"] for r in passed)

    # Past open_seconds, with the account healthy again: one probe, then closed.
    fixed_clock.advance(400)
    settings = _reconfigure(settings, breaker(fault=False))
    third_window = "2026-12-07T08:00:00Z"
    third = send_window_once(settings, "acme.pro_tips", window=third_window, run_id="run-3")
    assert third.accounts["acme_sandbox_a"] > 0
    assert _breaker_audits(settings) == [
        ("acme_sandbox_a", "closed", "open"),
        ("acme_sandbox_a", "open", "half_open"),
        ("acme_sandbox_a", "half_open", "closed"),
    ]


def test_a_scope_pace_spaces_the_calls_of_a_send(core_project) -> None:
    def mutate(config: dict[str, Any]) -> None:
        _acme(config)["streams"]["lifecycle"]["policy"] = {"messages_per_second": 40}
        _acme(config)["campaigns"]["pro_tips"]["policy"] = {"messages_per_second": 25}

    settings = core_project(mutate)
    started = time.monotonic()
    report = send_window_once(settings, "acme.pro_tips", window=WINDOW)
    took = time.monotonic() - started

    handed = _handed_over(report)
    assert handed > 75
    calls = query(
        settings,
        "select batch_id, count(*) as n from mailers.send_ledger "
        "where status = 'dispatching' group by 1",
    )
    # The campaign's 25/s is the tightest: calls of at most a second's worth, and no run
    # can hand over faster than that pace (beyond the first second's burst).
    assert max(call["n"] for call in calls) <= 25
    assert took >= (handed - 25) / 25
