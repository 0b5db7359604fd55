"""The mailbox pool's rules on a fixed clock, against an in-memory DuckDB ledger."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.allowance import Allowance, Reservation, UsageBook
from mailers.caps import Cap, Scope, ScopeKind, Usage
from mailers.clock import FixedClock, use_clock
from mailers.config import IdentityConfig
from mailers.ledger import LEDGER_SCHEMA, LEDGER_TABLE
from mailers.mailboxes import MailboxPool, MailboxWait, Slot, last_hand_overs, open_window
from mailers.policy_config import SendHours
from mailers.tables import ensure_tables
from mailers.warehouse import MAILERS_SCHEMA

MONDAY_10_BERLIN = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def warehouse() -> Iterator[DuckDBWarehouse]:
    with DuckDBWarehouse(":memory:") as wh:
        ensure_tables(wh)
        yield wh


@pytest.fixture
def clock() -> Iterator[FixedClock]:
    pinned = FixedClock(MONDAY_10_BERLIN)
    with use_clock(pinned):
        yield pinned


def _mailbox(name: str, **extra: Any) -> IdentityConfig:
    return IdentityConfig(
        from_address=f"{name}@outbound.example.test",
        provider_accounts=["outbound"],
        timezone="Europe/Berlin",
        **extra,
    )


def _pool(
    warehouse: DuckDBWarehouse,
    mailboxes: dict[str, IdentityConfig],
    *,
    caps: list[Cap] | None = None,
    wait: float = 300,
    last: dict[str, datetime] | None = None,
) -> MailboxPool:
    book = UsageBook(f"ws-{id(mailboxes)}", {})
    return MailboxPool(
        mailboxes,
        Allowance(warehouse, book, caps or []),
        stream="outbound",
        campaign="prospecting",
        default_timezone="UTC",
        mailbox_providers={},
        last_hand_overs=last or {},
        wait_seconds=wait,
        wait_source="campaigns.prospecting.max_mailbox_wait_seconds",
    )


def _picks(pool: MailboxPool, n: int, **columns: object) -> list[Slot | MailboxWait]:
    return [pool.pick(f"r{i}@example.test", None, columns) for i in range(n)]


def test_send_hours_skip_the_weekend_and_follow_daylight_saving_time() -> None:
    hours = SendHours(start=time(9), end=time(17))
    friday_evening = datetime(2027, 3, 26, 17, 30, tzinfo=UTC)  # 18:30 in Berlin
    opens, closes = open_window(friday_evening, hours, BERLIN)
    # Monday after the switch to summer time: 09:00 in Berlin is 07:00 UTC, not 08:00.
    assert opens == datetime(2027, 3, 29, 7, 0, tzinfo=UTC)
    assert closes == datetime(2027, 3, 29, 15, 0, tzinfo=UTC)
    inside = datetime(2027, 3, 29, 12, 0, tzinfo=UTC)
    assert open_window(inside, hours, BERLIN) == (inside, closes)
    assert open_window(inside, None, BERLIN) == (inside, None)


def test_rotation_spreads_over_the_pool_in_slots_a_gap_apart(
    warehouse: DuckDBWarehouse, clock: FixedClock
) -> None:
    pool = _pool(warehouse, {n: _mailbox(n, min_gap_seconds=100) for n in ("a", "b", "c")})

    picks = _picks(pool, 12)

    slots = [p for p in picks if isinstance(p, Slot)]
    assert [(s.identity, (s.at - MONDAY_10_BERLIN).total_seconds()) for s in slots] == [
        (name, offset) for offset in (0, 100, 200, 300) for name in ("a", "b", "c")
    ]


def test_most_room_today_wins_among_mailboxes_free_at_once(
    warehouse: DuckDBWarehouse, clock: FixedClock
) -> None:
    caps = [
        Cap(Scope(ScopeKind.IDENTITY, "a"), "Europe/Berlin", "identities.a.daily_cap", fixed=2),
        Cap(Scope(ScopeKind.IDENTITY, "b"), "Europe/Berlin", "identities.b.daily_cap", fixed=9),
    ]
    pool = _pool(warehouse, {"a": _mailbox("a"), "b": _mailbox("b")}, caps=caps)

    picks = [pool.pick("x@example.test", None, {}) for _ in range(3)]

    assert [p.identity for p in picks] == ["b", "b", "b"]


def test_a_full_mailbox_defers_its_sticky_recipient_to_its_next_open_hour(
    warehouse: DuckDBWarehouse, clock: FixedClock
) -> None:
    cap = Cap(Scope(ScopeKind.IDENTITY, "a"), "Europe/Berlin", "identities.a.daily_cap", fixed=1)
    hours = SendHours(start=time(9), end=time(17))
    mailboxes = {"a": _mailbox("a", send_hours=hours), "b": _mailbox("b")}
    pool = _pool(warehouse, mailboxes, caps=[cap])
    domain = mailboxes["a"].sending_domain
    taken = pool.allowance.take(Usage("outbound", "prospecting", "a", domain, "outbound", None))
    assert isinstance(taken, Reservation)

    wait = pool.pick("x@example.test", "a", {})
    rotated = pool.pick("y@example.test", "not_in_this_pool", {})

    assert isinstance(wait, MailboxWait) and wait.identity == "a"
    assert wait.source == "identities.a.daily_cap"
    # The cap has room again at midnight in Berlin; the mailbox opens at 09:00 (08:00 UTC).
    assert wait.eligible_at == datetime(2026, 12, 8, 8, 0)
    assert "mailbox a first wrote to this recipient" in wait.reason
    assert isinstance(rotated, Slot) and rotated.identity == "b"


def test_a_recipient_zone_that_is_not_one_falls_back_to_the_mailbox_and_is_counted(
    warehouse: DuckDBWarehouse, clock: FixedClock
) -> None:
    hours = SendHours(
        start=time(9), end=time(17), clock="recipient", recipient_timezone_column="tz"
    )
    pool = _pool(warehouse, {"a": _mailbox("a", send_hours=hours)}, wait=0)

    tokyo = pool.pick("t@example.test", None, {"tz": "Asia/Tokyo"})  # 18:00 there
    unknown = pool.pick("u@example.test", None, {"tz": "Mars/Olympus_Mons"})
    missing = pool.pick("m@example.test", None, {"tz": None})

    assert isinstance(tokyo, MailboxWait)
    assert tokyo.eligible_at == datetime(2026, 12, 8, 0, 0)  # 09:00 Tuesday in Tokyo
    assert tokyo.source == "identities.a.send_hours"
    assert isinstance(unknown, Slot) and unknown.zone == "Europe/Berlin"
    # Without a gap a slot is due now, so nothing waits (the budget is 0 s).
    assert isinstance(missing, Slot) and missing.zone == "Europe/Berlin"
    assert pool.unknown_zones == {"Mars/Olympus_Mons": 1}


def test_a_slot_whose_hours_close_before_the_mailbox_is_free_again_is_withdrawn(
    warehouse: DuckDBWarehouse, clock: FixedClock
) -> None:
    hours = SendHours(start=time(9), end=time(17))
    clock.set(datetime(2026, 12, 7, 15, 57, tzinfo=UTC))  # 16:57 in Berlin
    pool = _pool(warehouse, {"a": _mailbox("a", min_gap_seconds=120, send_hours=hours)})
    first, second = _picks(pool, 2)
    assert isinstance(first, Slot) and isinstance(second, Slot)
    assert second.at == datetime(2026, 12, 7, 15, 59, tzinfo=UTC)

    # The first call took 90 s: the mailbox is free again only at 17:01:30 in Berlin.
    clock.advance(90)
    pool.handed_over(["a"])
    start, late = pool.due([second])

    assert late == [second]
    wait = pool.withdrawn(second)
    assert wait.eligible_at == datetime(2026, 12, 8, 8, 0)
    assert wait.source == "identities.a.send_hours"
    assert start == clock.now()


def test_a_cancelled_slot_is_given_back(warehouse: DuckDBWarehouse, clock: FixedClock) -> None:
    pool = _pool(warehouse, {"a": _mailbox("a", min_gap_seconds=60)})
    first = pool.pick("x@example.test", None, {})
    assert isinstance(first, Slot)
    pool.cancel(first)
    again = pool.pick("y@example.test", None, {})
    assert isinstance(again, Slot) and again.at == first.at


def test_gaps_count_from_the_last_hand_over_in_the_ledger(
    warehouse: DuckDBWarehouse, clock: FixedClock
) -> None:
    def dispatching(identity: str, at: datetime) -> dict[str, object]:
        return {
            "ledger_id": f"{identity}-{at:%H%M%S}",
            "message_key": f"k-{identity}-{at:%H%M%S}",
            "status": "dispatching",
            "workspace": "acme",
            "stream": "outbound",
            "campaign": "other",
            "send_window": "once",
            "identity": identity,
            "run_id": "earlier",
            "recorded_at": at.replace(tzinfo=None),
        }

    rows = [
        dispatching("a", MONDAY_10_BERLIN - timedelta(seconds=500)),
        dispatching("a", MONDAY_10_BERLIN - timedelta(seconds=30)),
        dispatching("b", MONDAY_10_BERLIN - timedelta(hours=3)),
    ]
    warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, pa.Table.from_pylist(rows, LEDGER_SCHEMA))

    last = last_hand_overs(warehouse, "acme", {"a": 120, "b": 120})

    assert last == {"a": (MONDAY_10_BERLIN - timedelta(seconds=30)).replace(tzinfo=None)}
    mailboxes = {n: _mailbox(n, min_gap_seconds=120) for n in ("a", "b")}
    pool = _pool(warehouse, mailboxes, last=last)
    a_first = next(p for p in _picks(pool, 3) if isinstance(p, Slot) and p.identity == "a")
    assert a_first.at == MONDAY_10_BERLIN + timedelta(seconds=90)
