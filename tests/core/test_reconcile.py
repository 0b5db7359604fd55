"""Reconciling messages in doubt, on a real ledger (DuckDB and Postgres).

The provider side here is a record of accepted keys behind the ``MessageLookup`` protocol;
the adapters' own lookups are tested against the simulator in tests/adapters.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from adapters.warehouses import OpenWarehouse, connect
from mailers.clock import FixedClock, use_clock
from mailers.config import WarehouseConfig
from mailers.events import EVENTS_SCHEMA, EVENTS_TABLE, EventType
from mailers.ledger import LedgerContext, LedgerEntry, LedgerStatus, LedgerWriter, latest_rows_sql
from mailers.reconcile import InDoubt, Sighting, reconcile, window_filter
from mailers.tables import ensure_tables
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

WINDOW = "2027-01-04T08:00:00Z"
DISPATCHED = datetime(2027, 1, 4, 8, 0, 5)
CONTEXT = LedgerContext("acme", "lifecycle", "pro_tips", WINDOW, "run-1")


class ProviderRecords:
    """What a provider accepted, searchable by key (the protocol's test double)."""

    def __init__(self, accepted: dict[str, str], absent_after: float = 300) -> None:
        self.accepted = accepted
        self.absent_after = timedelta(seconds=absent_after)
        self.asked: list[str] = []
        self.fail: Exception | None = None

    def lookup(self, messages: Sequence[InDoubt]) -> list[Sighting]:
        if self.fail is not None:
            raise self.fail
        self.asked += [m.message_key for m in messages]
        return [
            Sighting(
                m.message_key, m.message_key in self.accepted, self.accepted.get(m.message_key)
            )
            for m in messages
        ]


@pytest.fixture
def clock() -> Iterator[FixedClock]:
    with use_clock(FixedClock(DISPATCHED)) as fixed:
        yield fixed  # type: ignore[misc]


@pytest.fixture
def warehouse(
    tmp_path: Path, clock: FixedClock, engine_config: WarehouseConfig
) -> Iterator[OpenWarehouse]:
    with connect(engine_config, tmp_path) as warehouse:
        ensure_tables(warehouse)
        yield warehouse


def in_doubt(
    warehouse: Warehouse, *keys: str, account: str = "acct", context: LedgerContext = CONTEXT
) -> None:
    """Ledger rows of messages handed to ``account`` and left without an answer."""
    writer = LedgerWriter(warehouse, context)
    for status in (LedgerStatus.DISPATCHING, LedgerStatus.UNKNOWN):
        writer.record(
            [
                LedgerEntry(key, status, recipient=f"{key}@example.com", provider_account=account)
                for key in keys
            ]
        )


def land_event(
    warehouse: Warehouse,
    key: str,
    event_type: EventType,
    pmid: str,
    *,
    account: str = "acct",
    carries_key: bool = True,
) -> None:
    row = {name: None for name in EVENTS_SCHEMA.names}
    row.update(
        event_id=f"{key}-{event_type}",
        event_type=str(event_type),
        occurred_at=DISPATCHED,
        provider="postmark",
        provider_account=account,
        provider_message_id=pmid,
        message_key=key if carries_key else None,
        raw_payload="{}",
        ingested_at=DISPATCHED,
    )
    warehouse.append(MAILERS_SCHEMA, EVENTS_TABLE, pa.Table.from_pylist([row], EVENTS_SCHEMA))


def latest(warehouse: Warehouse) -> dict[str, tuple[str, str | None]]:
    rows = warehouse.query(latest_rows_sql(warehouse)).to_pylist()
    return {r["message_key"]: (r["status"], r["provider_message_id"]) for r in rows}


def test_a_landed_event_proves_acceptance_and_a_rejection_is_not_read_as_one(
    warehouse: Warehouse,
) -> None:
    in_doubt(warehouse, "delivered", "refused", "silent")
    land_event(warehouse, "delivered", EventType.DELIVERED, "pm-1")
    land_event(warehouse, "refused", EventType.DELIVERED, "pm-2")
    land_event(warehouse, "refused", EventType.REJECTED, "pm-2")

    report = reconcile(warehouse, {}, run_id="rec")

    assert latest(warehouse) == {
        "delivered": ("accepted", "pm-1"),
        "refused": ("rejected", "pm-2"),
        "silent": ("unknown", None),
    }
    assert report.from_events == 2
    assert report.still_unknown == {"acct": 1}


def test_an_event_without_our_key_settles_the_message_whose_rows_carry_its_id(
    warehouse: Warehouse,
) -> None:
    writer = LedgerWriter(warehouse, CONTEXT)
    for status in (LedgerStatus.DISPATCHING, LedgerStatus.UNKNOWN):
        writer.record(
            [
                LedgerEntry(
                    key,
                    status,
                    provider="postmark",
                    provider_account="acct",
                    provider_message_id=f"pm-{key}",
                )
                for key in ("ours", "theirs")
            ]
        )
    land_event(warehouse, "ours", EventType.DELIVERED, "pm-ours", carries_key=False)
    land_event(
        warehouse, "theirs", EventType.DELIVERED, "pm-theirs", account="other", carries_key=False
    )

    report = reconcile(warehouse, {}, run_id="rec")

    assert latest(warehouse) == {
        "ours": ("accepted", "pm-ours"),
        "theirs": ("unknown", "pm-theirs"),
    }
    assert report.from_events == 1


def test_the_providers_records_settle_found_and_absent_messages(
    warehouse: Warehouse, clock: FixedClock
) -> None:
    in_doubt(warehouse, "took", "never")
    records = ProviderRecords({"took": "pm-9"}, absent_after=300)
    clock.advance(301)

    report = reconcile(warehouse, {"acct": records}, run_id="rec")

    assert latest(warehouse) == {"took": ("accepted", "pm-9"), "never": ("not_sent", None)}
    assert (report.accepted, report.never_handed_over, sum(report.still_unknown.values())) == (
        1,
        1,
        0,
    )
    reasons = warehouse.query(
        "select reason, run_id from mailers.send_ledger where run_id = 'rec' order by reason"
    ).to_pylist()
    assert all(r["reason"].startswith("reconciled:") for r in reasons)


def test_no_record_right_after_the_hand_over_proves_nothing(
    warehouse: Warehouse, clock: FixedClock
) -> None:
    in_doubt(warehouse, "recent")
    clock.advance(10)

    report = reconcile(warehouse, {"acct": ProviderRecords({}, absent_after=300)}, run_id="rec")

    assert latest(warehouse) == {"recent": ("unknown", None)}
    assert report.still_unknown == {"acct": 1}


def test_a_failing_lookup_leaves_the_doubt_and_says_why(warehouse: Warehouse) -> None:
    in_doubt(warehouse, "a", "b")
    records = ProviderRecords({"a": "pm-1"})
    records.fail = ConnectionError("provider search is down")

    report = reconcile(warehouse, {"acct": records}, run_id="rec")

    assert {status for status, _ in latest(warehouse).values()} == {"unknown"}
    assert report.lookup_errors == {"acct": "ConnectionError: provider search is down"}
    assert report.still_unknown == {"acct": 2}


def test_only_the_window_asked_for_is_reconciled_and_a_second_pass_does_nothing(
    warehouse: Warehouse, clock: FixedClock
) -> None:
    other = LedgerContext("acme", "lifecycle", "pro_tips", "2027-01-11T08:00:00Z", "run-2")
    in_doubt(warehouse, "this-window")
    in_doubt(warehouse, "next-window", context=other)
    records = ProviderRecords({"this-window": "pm-1", "next-window": "pm-2"})

    scope = window_filter("acme", "pro_tips", WINDOW)
    first = reconcile(warehouse, {"acct": records}, run_id="rec", where=scope)
    again = reconcile(warehouse, {"acct": records}, run_id="rec-2", where=scope)

    assert latest(warehouse)["this-window"] == ("accepted", "pm-1")
    assert latest(warehouse)["next-window"] == ("unknown", None)
    assert records.asked == ["this-window"]
    assert (first.settled, again.settled) == (1, 0)
    settled = warehouse.query(
        "select send_window from mailers.send_ledger where run_id = 'rec'"
    ).to_pylist()
    assert settled == [{"send_window": WINDOW}]
