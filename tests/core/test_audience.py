"""Audience resolution in the warehouse: normalize, skip, de-duplicate, settle, send.

Every test runs on each engine (DuckDB, and Postgres on the session's server)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from adapters.warehouses import OpenWarehouse, connect
from mailers.addresses import is_valid, normalize
from mailers.audience import AudienceSpec, disposition_counts, resolve
from mailers.clock import FixedClock, use_clock
from mailers.config import WarehouseConfig
from mailers.errors import SegmentError
from mailers.keys import message_key
from mailers.ledger import LedgerContext, LedgerEntry, LedgerStatus, LedgerWriter
from mailers.suppression import SUPPRESSIONS_SCHEMA, SUPPRESSIONS_TABLE
from mailers.tables import ensure_tables
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

WINDOW = "2026-11-23T08:00:00Z"
SPEC = AudienceSpec(
    workspace="acme",
    campaign="pro_tips",
    stream="lifecycle",
    send_window=WINDOW,
    segment="seg_test",
)

SEGMENT_ROWS: list[tuple[str | None, str]] = [
    ("ann@example.com", "clean"),
    ("  Bob@EXAMPLE.com ", "needs normalizing"),
    ("Carol@example.com", "case variant a"),
    ("carol@EXAMPLE.COM", "case variant b"),
    ("not-an-address", "invalid"),
    ("dave@@example.com", "invalid two ats"),
    (None, "null"),
    ("", "empty"),
    ("   ", "blank"),
    ("Global@Example.com", "globally suppressed"),
    ("ws@example.com", "workspace suppressed here"),
    ("otherws@example.com", "workspace suppressed elsewhere"),
    ("stream@example.com", "stream suppressed here"),
    ("otherstream@example.com", "stream suppressed for another stream"),
    ("wsstream@example.com", "stream suppressed in another workspace"),
]

SUPPRESSIONS = [
    ("global@example.com", "global", None, None),
    ("ws@example.com", "workspace", "acme", None),
    ("otherws@example.com", "workspace", "globex", None),
    ("stream@example.com", "stream", "acme", "lifecycle"),
    ("otherstream@example.com", "stream", "acme", "transactional"),
    ("wsstream@example.com", "stream", "globex", "lifecycle"),
]


class SteppingClock:
    """A clock that advances one millisecond per reading, so ledger rows have an order."""

    def __init__(self) -> None:
        self.at = datetime(2026, 11, 23, 8, 0, 0, tzinfo=UTC)

    def now(self) -> datetime:
        self.at += timedelta(milliseconds=1)
        return self.at


@pytest.fixture
def clock() -> Iterator[SteppingClock]:
    with use_clock(SteppingClock()) as stepping:
        yield stepping  # type: ignore[misc]


@pytest.fixture
def warehouse(tmp_path: Path, engine_config: WarehouseConfig) -> Iterator[OpenWarehouse]:
    with connect(engine_config, tmp_path) as wh:
        ensure_tables(wh)
        wh.execute("create schema segments")
        wh.execute("create table segments.seg_test (email varchar, first_name varchar)")
        emails, names = zip(*SEGMENT_ROWS, strict=True)
        wh.append(
            "segments",
            "seg_test",
            pa.table({"email": pa.array(emails, pa.string()), "first_name": list(names)}),
        )
        suppress(wh, SUPPRESSIONS)
        yield wh


def suppress(warehouse: Warehouse, entries: list[tuple[str, str, str | None, str | None]]) -> None:
    rows = [
        {
            "suppression_id": f"s{i}",
            "address": address,
            "scope": scope,
            "workspace": workspace,
            "stream": stream,
            "source": "manual",
            "reason": None,
            "event_id": None,
            "created_at": datetime(2026, 1, 1),
        }
        for i, (address, scope, workspace, stream) in enumerate(entries)
    ]
    warehouse.append(
        MAILERS_SCHEMA, SUPPRESSIONS_TABLE, pa.Table.from_pylist(rows, schema=SUPPRESSIONS_SCHEMA)
    )


def writer(warehouse: Warehouse, run_id: str = "run-1", **changes: str) -> LedgerWriter:
    context = {
        "workspace": SPEC.workspace,
        "stream": SPEC.stream,
        "campaign": SPEC.campaign,
        "send_window": SPEC.send_window,
        "run_id": run_id,
        **changes,
    }
    return LedgerWriter(warehouse, LedgerContext(**context))


def audience(warehouse: Warehouse, spec: AudienceSpec = SPEC) -> dict[str, dict[str, Any]]:
    """Resolve and return the audience rows keyed by the segment's first_name label."""
    table = resolve(warehouse, spec, writer(warehouse).settled_keys_sql())
    rows = warehouse.query(f"select * from {table}").to_pylist()
    return {row["first_name"]: row for row in rows}


def key_of(recipient: str) -> str:
    return message_key(SPEC.workspace, SPEC.campaign, recipient, SPEC.send_window)


def outcome(row: dict[str, Any]) -> tuple[str, str | None, str | None]:
    return row["mailers_disposition"], row["mailers_skip_reason"], row["mailers_recipient"]


def test_each_row_gets_its_disposition(warehouse: Warehouse) -> None:
    rows = audience(warehouse)

    assert outcome(rows["clean"]) == ("send", None, "ann@example.com")
    assert outcome(rows["needs normalizing"]) == ("send", None, "Bob@example.com")
    assert outcome(rows["invalid"]) == ("skip", "invalid_address", "not-an-address")
    assert outcome(rows["invalid two ats"])[:2] == ("skip", "invalid_address")
    assert outcome(rows["globally suppressed"]) == ("skip", "suppressed", "Global@example.com")
    assert outcome(rows["workspace suppressed here"]) == ("skip", "suppressed", "ws@example.com")
    assert outcome(rows["stream suppressed here"]) == ("skip", "suppressed", "stream@example.com")
    # Suppressions of another workspace or another stream do not apply.
    assert outcome(rows["workspace suppressed elsewhere"]) == (
        "send",
        None,
        "otherws@example.com",
    )
    assert outcome(rows["stream suppressed for another stream"]) == (
        "send",
        None,
        "otherstream@example.com",
    )
    assert outcome(rows["stream suppressed in another workspace"]) == (
        "send",
        None,
        "wsstream@example.com",
    )


def test_case_variants_are_one_message(warehouse: Warehouse) -> None:
    rows = audience(warehouse)
    a, b = rows["case variant a"], rows["case variant b"]

    assert a["mailers_message_key"] == b["mailers_message_key"] == key_of("carol@example.com")
    assert {a["mailers_disposition"], b["mailers_disposition"]} == {"send", "duplicate"}
    # Normalization lower-cases only the domain.
    assert a["mailers_recipient"] == "Carol@example.com"
    assert b["mailers_recipient"] == "carol@example.com"


def test_rows_without_an_address_collapse_to_one_skip(warehouse: Warehouse) -> None:
    rows = audience(warehouse)
    empty = [rows["null"], rows["empty"], rows["blank"]]

    assert all(row["mailers_recipient"] is None for row in empty)
    assert all(row["mailers_skip_reason"] == "missing_address" for row in empty)
    assert sorted(row["mailers_disposition"] for row in empty) == [
        "duplicate",
        "duplicate",
        "skip",
    ]


def test_message_keys_match_python(warehouse: Warehouse) -> None:
    rows = audience(warehouse)

    for label in ("clean", "needs normalizing", "globally suppressed", "invalid"):
        row = rows[label]
        assert row["mailers_message_key"] == key_of(row["mailers_recipient"]), label
    assert rows["needs normalizing"]["mailers_message_key"] == key_of("bob@example.com")


def test_segment_columns_are_kept_and_window_stamped(warehouse: Warehouse) -> None:
    table = resolve(warehouse, SPEC, writer(warehouse).settled_keys_sql())

    columns = warehouse.columns("mailers_work", "audience__acme__pro_tips")
    assert table == warehouse.relation("mailers_work", "audience__acme__pro_tips")
    assert columns is not None
    assert columns[:2] == ["email", "first_name"]
    assert "mailers_trimmed" not in columns and "mailers_rank" not in columns
    assert set(columns[2:]) == {
        "mailers_recipient",
        "mailers_message_key",
        "mailers_skip_reason",
        "mailers_send_window",
        "mailers_disposition",
        "mailers_sticky_account",
        "mailers_sticky_identity",
    }
    windows = warehouse.query(f"select distinct mailers_send_window as w from {table}")
    assert windows["w"].to_pylist() == [WINDOW]
    raw = warehouse.query(f"select email from {table} where first_name = 'needs normalizing'")
    assert raw["email"].to_pylist() == ["  Bob@EXAMPLE.com "]


def test_disposition_counts(warehouse: Warehouse) -> None:
    table = resolve(warehouse, SPEC, writer(warehouse).settled_keys_sql())

    assert disposition_counts(warehouse, table) == {
        "segment_rows": 15,
        "to_send": 6,
        "duplicates": 3,
        "skipped_invalid_address": 2,
        "skipped_missing_address": 1,
        "skipped_suppressed": 3,
    }


def test_plan_purpose_builds_its_own_table(warehouse: Warehouse) -> None:
    audience_table = resolve(warehouse, SPEC, writer(warehouse).settled_keys_sql())
    warehouse.execute("insert into segments.seg_test values ('new@example.com', 'added')")

    plan_table = resolve(warehouse, SPEC, writer(warehouse).settled_keys_sql(), purpose="plan")

    assert plan_table == warehouse.relation("mailers_work", "plan__acme__pro_tips")
    assert disposition_counts(warehouse, plan_table)["to_send"] == 7
    # A dry run never disturbs the audience a pending send will read.
    assert disposition_counts(warehouse, audience_table)["to_send"] == 6


def test_segment_may_be_a_view(warehouse: Warehouse) -> None:
    warehouse.execute("create view segments.seg_view as select * from segments.seg_test")
    spec = AudienceSpec("acme", "pro_tips", "lifecycle", WINDOW, "seg_view")

    table = resolve(warehouse, spec, writer(warehouse).settled_keys_sql())

    assert disposition_counts(warehouse, table)["segment_rows"] == len(SEGMENT_ROWS)


@pytest.mark.parametrize("raw", ["dan@example.com\r", "\tdan@example.com", "dan@example.com\n"])
def test_sql_normalization_agrees_with_python(warehouse: Warehouse, raw: str) -> None:
    warehouse.execute("insert into segments.seg_test values (?, 'whitespace')", [raw])

    row = audience(warehouse)["whitespace"]

    assert is_valid(normalize(raw))
    assert outcome(row) == ("send", None, normalize(raw))


def test_segment_without_email_column(warehouse: Warehouse) -> None:
    warehouse.execute("create table segments.seg_no_email (address varchar, first_name varchar)")
    spec = AudienceSpec("acme", "pro_tips", "lifecycle", WINDOW, "seg_no_email")

    with pytest.raises(SegmentError) as info:
        resolve(warehouse, spec, writer(warehouse).settled_keys_sql())

    message = str(info.value)
    assert "seg_no_email" in message
    assert "'email'" in message
    assert "address, first_name" in message


def test_segment_that_is_not_built(warehouse: Warehouse) -> None:
    spec = AudienceSpec("acme", "pro_tips", "lifecycle", WINDOW, "seg_never_built")

    with pytest.raises(SegmentError, match="seg_never_built"):
        resolve(warehouse, spec, writer(warehouse).settled_keys_sql())


def test_segment_with_reserved_column_is_refused(warehouse: Warehouse) -> None:
    warehouse.execute("create table segments.seg_reserved (email varchar, mailers_x varchar)")
    spec = AudienceSpec("acme", "pro_tips", "lifecycle", WINDOW, "seg_reserved")

    with pytest.raises(SegmentError) as info:
        resolve(warehouse, spec, writer(warehouse).settled_keys_sql())

    assert "seg_reserved" in str(info.value)
    assert "mailers_x" in str(info.value)


def record(
    warehouse: Warehouse, recipient: str, *statuses: LedgerStatus, run_id: str = "run-1"
) -> None:
    ledger = writer(warehouse, run_id)
    for status in statuses:
        ledger.record([LedgerEntry(key_of(recipient), status, recipient=recipient)])


def disposition_of(warehouse: Warehouse, label: str) -> str:
    return audience(warehouse)[label]["mailers_disposition"]


@pytest.mark.usefixtures("clock")
def test_accepted_message_is_settled_on_re_resolve(warehouse: Warehouse) -> None:
    assert disposition_of(warehouse, "clean") == "send"

    record(warehouse, "ann@example.com", LedgerStatus.DISPATCHING, LedgerStatus.ACCEPTED)

    rows = audience(warehouse)
    assert rows["clean"]["mailers_disposition"] == "settled"
    assert rows["needs normalizing"]["mailers_disposition"] == "send"


@pytest.mark.usefixtures("clock")
@pytest.mark.parametrize("retryable", [LedgerStatus.NOT_SENT, LedgerStatus.RENDER_FAILED])
def test_retryable_latest_status_leaves_message_eligible(
    warehouse: Warehouse, retryable: LedgerStatus
) -> None:
    record(warehouse, "ann@example.com", LedgerStatus.DISPATCHING, retryable)

    assert disposition_of(warehouse, "clean") == "send"


@pytest.mark.usefixtures("clock")
@pytest.mark.parametrize(
    "final",
    [
        LedgerStatus.DISPATCHING,
        LedgerStatus.ACCEPTED,
        LedgerStatus.REJECTED,
        LedgerStatus.UNKNOWN,
        LedgerStatus.SKIPPED,
    ],
)
def test_non_retryable_latest_status_settles(warehouse: Warehouse, final: LedgerStatus) -> None:
    record(warehouse, "ann@example.com", LedgerStatus.NOT_SENT, final)

    assert disposition_of(warehouse, "clean") == "settled"


@pytest.mark.usefixtures("clock")
def test_ledger_of_another_window_or_campaign_does_not_settle(
    warehouse: Warehouse,
) -> None:
    key = key_of("ann@example.com")
    writer(warehouse, send_window="2026-11-16T08:00:00Z").record(
        [LedgerEntry(key, LedgerStatus.ACCEPTED)]
    )
    writer(warehouse, campaign="other_campaign").record([LedgerEntry(key, LedgerStatus.ACCEPTED)])

    assert disposition_of(warehouse, "clean") == "send"


def test_same_instant_outcome_outranks_dispatching(warehouse: Warehouse) -> None:
    # Two processes (two hosts' clocks) stamping the same instant: the outcome counts as
    # later. One process never stamps two rows alike (the next test).
    ledger = writer(warehouse)
    ledger.record([LedgerEntry(key_of("ann@example.com"), LedgerStatus.NOT_SENT)])
    ledger.record([LedgerEntry(key_of("ann@example.com"), LedgerStatus.DISPATCHING)])
    warehouse.execute("update mailers.send_ledger set recorded_at = timestamp '2026-11-23 08:00'")

    latest = warehouse.query(ledger.latest_rows_sql())["status"].to_pylist()

    assert latest == ["not_sent"]
    assert disposition_of(warehouse, "clean") == "send"


def test_one_writer_orders_its_rows_even_when_the_clock_stands_still(
    warehouse: Warehouse,
) -> None:
    # A retry records not_sent and then dispatching again within microseconds: the second
    # row must be the latest, or a crash right after it would re-send a message in flight.
    with use_clock(FixedClock(datetime(2026, 11, 23, 8, 0, 0))):
        ledger = writer(warehouse)
        ledger.record([LedgerEntry(key_of("ann@example.com"), LedgerStatus.NOT_SENT)])
        ledger.record([LedgerEntry(key_of("ann@example.com"), LedgerStatus.DISPATCHING)])

    latest = warehouse.query(ledger.latest_rows_sql())["status"].to_pylist()

    assert latest == ["dispatching"]


@pytest.mark.usefixtures("clock")
def test_record_skips_settles_skipped_rows_once(warehouse: Warehouse) -> None:
    ledger = writer(warehouse)
    table = resolve(warehouse, SPEC, ledger.settled_keys_sql())

    assert ledger.record_skips(table) == 6  # 2 invalid, 1 missing, 3 suppressed
    assert ledger.record_skips(table) == 0

    rows = audience(warehouse)
    assert rows["invalid"]["mailers_disposition"] == "settled"
    assert rows["globally suppressed"]["mailers_disposition"] == "settled"
    stored = warehouse.query(
        "select status, reason, recipient, workspace, stream, campaign, send_window, run_id "
        "from mailers.send_ledger where recipient = 'Global@example.com'"
    ).to_pylist()
    assert stored == [
        {
            "status": "skipped",
            "reason": "suppressed",
            "recipient": "Global@example.com",
            "workspace": "acme",
            "stream": "lifecycle",
            "campaign": "pro_tips",
            "send_window": WINDOW,
            "run_id": "run-1",
        }
    ]


def latest_status(warehouse: Warehouse, recipient: str) -> dict[str, Any]:
    rows = warehouse.query(
        f"select status, run_id, reason from ({writer(warehouse).latest_rows_sql()}) as latest "
        "where message_key = ?",
        [key_of(recipient)],
    ).to_pylist()
    assert len(rows) == 1
    return rows[0]


@pytest.mark.usefixtures("clock")
def test_settle_in_doubt_marks_another_runs_dispatching_unknown_once(
    warehouse: Warehouse,
) -> None:
    record(warehouse, "ann@example.com", LedgerStatus.DISPATCHING, run_id="run-1")
    record(warehouse, "ws@example.com", LedgerStatus.DISPATCHING, LedgerStatus.ACCEPTED)
    record(warehouse, "otherws@example.com", LedgerStatus.DISPATCHING, run_id="run-2")
    second_run = writer(warehouse, "run-2")

    assert second_run.settle_in_doubt() == 1
    assert second_run.settle_in_doubt() == 0

    in_doubt = latest_status(warehouse, "ann@example.com")
    assert in_doubt["status"] == "unknown"
    assert in_doubt["run_id"] == "run-2"
    assert "not re-sent" in in_doubt["reason"]
    assert latest_status(warehouse, "ws@example.com")["status"] == "accepted"
    assert latest_status(warehouse, "otherws@example.com")["status"] == "dispatching"
    assert disposition_of(warehouse, "clean") == "settled"


@pytest.mark.usefixtures("clock")
def test_settle_in_doubt_ignores_other_windows(warehouse: Warehouse) -> None:
    old_window = writer(warehouse, "run-0", send_window="2026-11-16T08:00:00Z")
    old_window.record([LedgerEntry(key_of("ann@example.com"), LedgerStatus.DISPATCHING)])

    assert writer(warehouse, "run-2").settle_in_doubt() == 0
