"""Outbound mailbox pools on a real DuckDB file through a sandbox account.

An outbound campaign sends from three mailboxes with daily caps, a minimum gap between two
sends and business hours. Days and the waits between slots are driven by a fixed clock
(the sender's sleep advances it), so every ``dispatching`` row's ``recorded_at`` is the
moment the mailbox handed that message over, and the rules are checked on those rows.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from adapters.settings import load
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.clock import FixedClock
from mailers.config import Settings
from mailers.sending import SendReport
from tests.conftest import query, send_window_once, write_config

WINDOW = "2026-12-10T08:00:00Z"
LATER_WINDOW = "2026-12-21T08:00:00Z"
CAMPAIGN = "acme.prospecting"
MAILBOXES = {"sdr_ada": "Europe/Berlin", "sdr_ben": "Europe/Berlin", "sdr_cho": "America/New_York"}
GAP = 120
CAP = 10


def _outbound(
    *,
    caps: dict[str, int] | None = None,
    clock: str = "mailbox",
    wait: float | None = 3600,
    second_campaign: bool = False,
) -> Callable[[dict[str, Any]], None]:
    """Add an outbound stream on its own sandbox account and a campaign on a pool of three."""

    def mutate(config: dict[str, Any]) -> None:
        acme = config["workspaces"]["acme"]
        acme["provider_accounts"]["acme_outbound"] = {
            "kind": "sandbox",
            "settings": {"open_rate": 0.4, "click_rate": 0.1, "seed": "acme-outbound"},
        }
        for name, zone in MAILBOXES.items():
            acme["identities"][name] = {
                "from_address": f"{name.removeprefix('sdr_')}@outbound.acme.test",
                "from_name": name.removeprefix("sdr_").title(),
                "provider_accounts": ["acme_outbound"],
                "timezone": zone,
                "daily_cap": (caps or {}).get(name, CAP),
                "min_gap_seconds": GAP,
                "send_hours": {
                    "start": "09:00",
                    "end": "17:00",
                    "days": ["mon", "tue", "wed", "thu", "fri"],
                    "clock": clock,
                    "recipient_timezone_column": "timezone",
                },
            }
        acme["streams"]["outbound"] = {
            "routing": {"strategy": "failover", "accounts": ["acme_outbound"]}
        }
        campaign: dict[str, Any] = {
            "stream": "outbound",
            "segment": "seg_acme_active_pro",
            "template": "pro_tips",
            "identity_pool": list(MAILBOXES),
        }
        if wait is not None:
            campaign["max_mailbox_wait_seconds"] = wait
        acme["campaigns"]["prospecting"] = campaign
        if second_campaign:
            acme["campaigns"]["prospecting_again"] = dict(campaign)

    return mutate


def _send(settings: Settings, clock: FixedClock, run: str, **kwargs: Any) -> SendReport:
    options: dict[str, Any] = {"window": WINDOW, **kwargs}
    return send_window_once(settings, CAMPAIGN, run_id=run, sleep=clock.advance, **options)


def _latest(settings: Settings, campaign: str = "prospecting") -> list[dict[str, Any]]:
    return query(
        settings,
        f"""
        select * from (
            select *, row_number() over (
                partition by message_key order by recorded_at desc, ledger_id desc) as r
            from mailers.send_ledger where campaign = '{campaign}') where r = 1
        """,
    )


def _hand_overs(settings: Settings) -> list[dict[str, Any]]:
    """Each message's first ``dispatching`` row: when its mailbox handed it over."""
    return query(
        settings,
        """
        select message_key, recipient, identity, send_window, min(recorded_at) as handed_at
        from mailers.send_ledger where stream = 'outbound' and status = 'dispatching'
        group by all order by handed_at
        """,
    )


def _run_until_nothing_is_deferred(
    settings: Settings, clock: FixedClock, window: str, first_run: int
) -> list[SendReport]:
    """Rerun the window at each next ``eligible_at`` (a rerun in between sends nothing)."""
    reports: list[SendReport] = []
    for run in range(first_run, first_run + 40):
        deferred = [
            r for r in _latest(settings) if r["status"] == "deferred" and r["send_window"] == window
        ]
        if not deferred:
            return reports
        soonest = min(r["eligible_at"] for r in deferred).replace(tzinfo=UTC)
        early = send_window_once(
            settings, CAMPAIGN, window=window, run_id=f"early-{run}", sleep=clock.advance
        )
        assert early.counts["accepted"] + early.counts["rejected"] == 0
        clock.set(max(soonest, clock.now()))
        reports.append(_send(settings, clock, f"run-{run}", window=window))
    raise AssertionError("the window still has deferred messages after 40 runs")


def _assert_mailbox_rules(settings: Settings, zone_of: Callable[[dict[str, Any]], str]) -> None:
    """No mailbox over its cap on a day of its own, gaps kept, nothing outside hours."""
    sends = _hand_overs(settings)
    assert sends
    per_day: Counter[tuple[str, Any]] = Counter()
    last: dict[str, datetime] = {}
    for row in sends:
        identity, at = row["identity"], row["handed_at"].replace(tzinfo=UTC)
        per_day[(identity, at.astimezone(ZoneInfo(MAILBOXES[identity])).date())] += 1
        if identity in last:
            assert (at - last[identity]).total_seconds() >= GAP, row
        last[identity] = at
        local = at.astimezone(ZoneInfo(zone_of(row)))
        assert local.weekday() < 5 and time(9) <= local.time() < time(17), (row, local)
    assert max(per_day.values()) <= CAP, per_day


def _assert_each_sent_once(settings: Settings) -> None:
    latest = _latest(settings)
    assert not [r for r in latest if r["status"] in ("deferred", "not_sent", "dispatching")]
    handed = Counter(r["message_key"] for r in _hand_overs(settings))
    assert max(handed.values()) == 1
    outcome = {r["message_key"]: r["status"] for r in latest}
    assert {outcome[key] for key in handed} <= {"accepted", "rejected"}
    audience = query(
        settings,
        "select count(*) as n from mailers_work.audience__acme__prospecting "
        "where mailers_disposition in ('send', 'settled') and mailers_skip_reason is null",
    )
    assert len(handed) == audience[0]["n"]


def test_a_pool_keeps_caps_gaps_and_hours_and_rotates_across_its_mailboxes(
    core_project, fixed_clock: FixedClock
) -> None:
    # Thursday 06:00 UTC: 07:00 in Berlin, 01:00 in New York. Every mailbox is closed for
    # longer than the run may wait (3600 s).
    fixed_clock.set(datetime(2026, 12, 10, 6, 0, tzinfo=UTC))
    settings = core_project(_outbound())

    closed = _send(settings, fixed_clock, "run-0")
    assert closed.counts["accepted"] + closed.counts["rejected"] == 0
    deferred = [r for r in _latest(settings) if r["status"] == "deferred"]
    assert len(deferred) == closed.counts["deferred"] > 3 * CAP * 3
    assert {r["eligible_at"] for r in deferred} == {datetime(2026, 12, 10, 8, 0)}
    assert all("outside its send hours" in r["reason"] for r in deferred)

    reports = _run_until_nothing_is_deferred(settings, fixed_clock, WINDOW, 1)

    # Berlin opens first and sends its day (the caps), New York six hours later.
    berlin, new_york = reports[0], reports[1]
    assert berlin.counts["accepted"] + berlin.counts["rejected"] == 2 * CAP
    assert new_york.counts["accepted"] + new_york.counts["rejected"] == CAP
    # What Berlin cannot send waits for New York's hours, the mailbox free soonest.
    assert berlin.deferred == Counter({"identities.sdr_cho.send_hours": berlin.counts["deferred"]})
    _assert_mailbox_rules(settings, lambda row: MAILBOXES[row["identity"]])
    _assert_each_sent_once(settings)
    # The audience needs more than two weekdays: the weekend is skipped, not sent on.
    days = {r["handed_at"].date() for r in _hand_overs(settings)}
    assert {datetime(2026, 12, 12).date(), datetime(2026, 12, 13).date()}.isdisjoint(days)
    assert datetime(2026, 12, 14).date() in days
    per_mailbox = Counter(r["identity"] for r in _hand_overs(settings))
    assert set(per_mailbox) == set(MAILBOXES)
    assert max(per_mailbox.values()) - min(per_mailbox.values()) <= CAP


def test_a_recipient_keeps_the_mailbox_that_first_wrote_even_when_it_is_full(
    core_project, fixed_clock: FixedClock
) -> None:
    fixed_clock.set(datetime(2026, 12, 10, 8, 0, tzinfo=UTC))
    settings = core_project(_outbound())
    _send(settings, fixed_clock, "run-0")
    _run_until_nothing_is_deferred(settings, fixed_clock, WINDOW, 1)
    first = {
        r["recipient"]: r["identity"]
        for r in _latest(settings)
        if r["status"] == "accepted" and r["send_window"] == WINDOW
    }
    assert set(first.values()) == set(MAILBOXES)

    # A later window, with sdr_ada allowed far fewer messages a day than the others.
    settings = load(write_config(settings.base_dir, _outbound(caps={"sdr_ada": 2})))
    fixed_clock.set(datetime(2026, 12, 21, 8, 0, tzinfo=UTC))  # Monday, Berlin opens
    monday = _send(settings, fixed_clock, "later-1", window=LATER_WINDOW)
    later = [r for r in _latest(settings) if r["send_window"] == LATER_WINDOW]
    sent = [r for r in later if r["status"] in ("accepted", "rejected")]
    assert Counter(r["identity"] for r in sent)["sdr_ada"] == 2
    waiting = [
        r for r in later if r["status"] == "deferred" and first.get(r["recipient"]) == "sdr_ada"
    ]
    assert waiting and all(r["identity"] == "sdr_ada" for r in waiting)
    assert all("mailbox sdr_ada first wrote to this recipient" in r["reason"] for r in waiting)
    assert all(r["eligible_at"] == datetime(2026, 12, 22, 8, 0) for r in waiting)
    assert monday.deferred["identities.sdr_ada.daily_cap"] == len(waiting)

    _run_until_nothing_is_deferred(settings, fixed_clock, LATER_WINDOW, 100)
    again = {
        r["recipient"]: r["identity"]
        for r in _latest(settings)
        if r["status"] in ("accepted", "rejected") and r["send_window"] == LATER_WINDOW
    }
    assert {r: again[r] for r in first if r in again} == {r: first[r] for r in first if r in again}
    assert set(first) <= set(again)
    by_day: Counter[tuple[str, Any]] = Counter(
        (r["identity"], r["handed_at"].date())
        for r in _hand_overs(settings)
        if r["send_window"] == LATER_WINDOW
    )
    assert max(n for (identity, _), n in by_day.items() if identity == "sdr_ada") == 2


def test_a_run_waits_for_its_budget_and_defers_the_rest_to_the_exact_next_slot(
    core_project, fixed_clock: FixedClock
) -> None:
    start = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # Monday, 10:00 in Berlin
    settings = core_project(_outbound(wait=None, second_campaign=True))
    fixed_clock.set(start)

    report = _send(settings, fixed_clock, "run-1")

    berlin = [name for name, zone in MAILBOXES.items() if zone == "Europe/Berlin"]
    # The default budget (300 s) holds three slots of a 120 s gap per open mailbox.
    assert report.counts["accepted"] + report.counts["rejected"] == 3 * len(berlin)
    # To the second: a ledger stamp is a microsecond after the one before it.
    moments = sorted({r["handed_at"].replace(microsecond=0) for r in _hand_overs(settings)})
    assert moments == [start.replace(tzinfo=None) + timedelta(seconds=s) for s in (0, 120, 240)]
    assert fixed_clock.now().replace(microsecond=0) == start + timedelta(seconds=240)
    deferred = [r for r in _latest(settings) if r["status"] == "deferred"]
    assert {r["eligible_at"] for r in deferred} == {datetime(2026, 12, 7, 9, 6)}
    assert all(
        "min_gap_seconds: 120s), beyond this run's wait budget" in r["reason"] for r in deferred
    )

    # Another campaign on the same mailbox a minute later waits for the gap from the ledger.
    fixed_clock.advance(60)
    other = send_window_once(
        settings, "acme.prospecting_again", window="once", run_id="other", sleep=fixed_clock.advance
    )
    # 09:05 plus its own 300 s: slots at 09:06, 09:08 and 09:10.
    assert other.counts["accepted"] + other.counts["rejected"] == 3 * len(berlin)
    others = [r for r in _hand_overs(settings) if r["send_window"] == "once"]
    assert min(r["handed_at"] for r in others).replace(microsecond=0) == datetime(2026, 12, 7, 9, 6)
    _assert_mailbox_rules(settings, lambda row: MAILBOXES[row["identity"]])


_ZONES = {
    "DE": "Europe/Berlin",
    "FR": "Europe/Paris",
    "US": "America/Los_Angeles",
    "JP": "Asia/Tokyo",
    "BR": "Mars/Olympus_Mons",
}


def _with_recipient_zones(settings: Settings) -> None:
    """The segment with a ``timezone`` column (and a zone name that is none for Brazil)."""
    cases = " ".join(f"when '{country}' then '{zone}'" for country, zone in _ZONES.items())
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        warehouse.execute(
            "create table segments.acme_active_pro_rows as "
            "select * from segments.seg_acme_active_pro"
        )
        warehouse.execute(
            "create or replace view segments.seg_acme_active_pro as select *, "
            f"case country {cases} end as timezone from segments.acme_active_pro_rows"
        )


def test_recipient_clocks_hold_the_hours_of_each_recipient(
    core_project, fixed_clock: FixedClock
) -> None:
    settings = core_project(_outbound(clock="recipient"))
    _with_recipient_zones(settings)
    # Monday 08:30 UTC: 09:30 in Berlin and Paris, 17:30 in Tokyo, 00:30 in Los Angeles.
    fixed_clock.set(datetime(2026, 12, 7, 8, 30, tzinfo=UTC))

    first = _send(settings, fixed_clock, "run-0")

    unknown = query(
        settings,
        "select count(*) as n from mailers_work.audience__acme__prospecting "
        f"where mailers_disposition = 'send' and timezone = '{_ZONES['BR']}'",
    )
    assert first.counts["recipient_timezone_unknown"] == unknown[0]["n"] > 0
    _run_until_nothing_is_deferred(settings, fixed_clock, WINDOW, 1)
    segment = {
        r["email"].strip().lower(): r["timezone"]
        for r in query(settings, "select email, timezone from segments.seg_acme_active_pro")
        if r["email"]
    }

    def zone_of(row: dict[str, Any]) -> str:
        zone = segment.get(row["recipient"].lower())
        known = isinstance(zone, str) and zone in _ZONES.values() and zone != _ZONES["BR"]
        return str(zone) if known else MAILBOXES[row["identity"]]

    _assert_mailbox_rules(settings, zone_of)
    _assert_each_sent_once(settings)
    zones_sent = defaultdict(set)
    for row in _hand_overs(settings):
        zones_sent[segment.get(row["recipient"].lower())].add(row["handed_at"].hour)
    # Tokyo's hours are 00:00-08:00 UTC and Los Angeles' 17:00-01:00: nothing else.
    assert zones_sent["Asia/Tokyo"] and max(zones_sent["Asia/Tokyo"]) < 8
    assert zones_sent["America/Los_Angeles"] and min(zones_sent["America/Los_Angeles"]) >= 17
