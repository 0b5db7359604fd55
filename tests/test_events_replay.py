"""Replaying stored events after a mapping fix, on a real DuckDB file.

Landed sandbox payloads are ingested through ``mailers.ingest.ingest`` with a "buggy"
mapping (hard bounces read as deferrals under the same id, complaints as ``unknown`` under
a payload hash), then replayed with the shipped mapping: unchanged events keep their ids
and append nothing, the fixed ones are appended once (and suppress), a second replay
appends nothing, and readers (core SQL and dbt's staging model) see the latest rows.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from adapters.providers.registry import event_parser
from adapters.settings import load
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers import clock
from mailers.backfill import open_windows
from mailers.completeness import CompletenessConfig
from mailers.current_events import EVENT_REPLAYS_TABLE, current_events_sql
from mailers.errors import WarehouseError
from mailers.events import BounceClass, CanonicalEvent, EventType, derive_event_id
from mailers.events_replay import ReplayReport, ReplayWindow, replay_events
from mailers.ingest import ingest
from mailers.keys import message_key
from mailers.ledger import LEDGER_SCHEMA, LEDGER_TABLE
from mailers.providers import EventParser
from mailers.tables import ensure_tables
from orchestration.cli import app
from tests.conftest import query, run_dbt, write_config

ACCOUNT = "acme_sandbox_a"
OTHER = "acme_sandbox_b"
DAY = datetime(2026, 11, 23)


class BuggyParser:
    """The sandbox mapping before the fix: hard bounces as deferrals and deferrals as
    deliveries (same ids), complaints as ``unknown`` under a hash of the payload (another
    id)."""

    def __init__(self, parser: EventParser) -> None:
        self.parser = parser

    def parse(self, payload: bytes, account: str) -> list[CanonicalEvent]:
        events = []
        for event in self.parser.parse(payload, account):
            if event.bounce_class is BounceClass.HARD:
                event = dataclasses.replace(event, event_type=EventType.DEFERRED, bounce_class=None)
            elif event.event_type is EventType.DEFERRED:
                event = dataclasses.replace(event, event_type=EventType.DELIVERED)
            elif event.event_type is EventType.COMPLAINED:
                event = dataclasses.replace(
                    event,
                    event_type=EventType.UNKNOWN,
                    event_id=derive_event_id("sandbox", event.raw_payload),
                )
            events.append(event)
        return events


class RefusingParser:
    """The fixed mapping, which now refuses one payload (its id names it)."""

    def __init__(self, parser: EventParser, refused: str) -> None:
        self.parser, self.refused = parser, refused

    def parse(self, payload: bytes, account: str) -> list[CanonicalEvent]:
        if f'"{self.refused}"'.encode() in payload:
            raise ValueError("no longer a sandbox event")
        return self.parser.parse(payload, account)


def buggy(kind: str) -> EventParser:
    return BuggyParser(event_parser(kind))


def payload(event_id: str, name: str, at: datetime, recipient: str) -> dict[str, Any]:
    """One sandbox landing line (see ``adapters.providers.sandbox.events``)."""
    return {
        "id": event_id,
        "event": name,
        "timestamp": at.isoformat() + "+00:00",
        "message_id": f"{event_id}-msg@sandbox.mailers.test",
        "recipient": recipient,
        "sending_domain": "news.acme.test",
        "metadata": {
            "mailers_message_key": message_key("acme", "pro_tips", recipient, "once"),
            "mailers_workspace": "acme",
            "mailers_stream": "lifecycle",
            "mailers_campaign": "pro_tips",
        },
        "detail": "550 5.1.1 no such user" if name == "bounce" else None,
        "url": None,
    }


def land(landing: Path, account: str, name: str, *lines: dict[str, Any]) -> None:
    directory = landing / "sandbox" / account
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text("".join(json.dumps(line) + "\n" for line in lines))


def land_day(landing: Path) -> None:
    """Six events of one morning on account a; the bounce and complaint are mis-mapped."""
    land(
        landing,
        ACCOUNT,
        "0001.jsonl",
        payload("e-delivered", "delivered", DAY.replace(hour=8), "ann@example.com"),
        payload("e-open", "open", DAY.replace(hour=8, minute=3), "ann@example.com"),
        payload("e-bounce", "bounce", DAY.replace(hour=9), "bob@example.com"),
        payload("e-complaint", "complaint", DAY.replace(hour=9, minute=30), "cat@example.com"),
        payload("e-refused", "delivered", DAY.replace(hour=10), "dan@example.com"),
        payload("e-soft", "soft_bounce", DAY.replace(hour=10, minute=5), "eve@example.com"),
    )


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[DuckDBWarehouse]:
    with DuckDBWarehouse(tmp_path / "warehouse.duckdb") as wh:
        ensure_tables(wh)
        yield wh


def replay(
    warehouse: DuckDBWarehouse,
    window: ReplayWindow,
    parser: Any = None,
    chunk_rows: int = 10_000,
) -> ReplayReport:
    return replay_events(
        warehouse,
        parser or (lambda kind: RefusingParser(event_parser(kind), "e-refused")),
        window,
        actor="test",
        config_hash="test-config",
        chunk_rows=chunk_rows,
    )


def current(warehouse: DuckDBWarehouse) -> dict[str, dict[str, Any]]:
    rows = warehouse.query(f"select * from {current_events_sql(warehouse)} as c").to_pylist()
    assert len({r["event_id"] for r in rows}) == len(rows), "one current row per event id"
    return {row["event_id"]: row for row in rows}


def table(warehouse: DuckDBWarehouse, sql: str) -> list[dict[str, Any]]:
    return warehouse.query(sql).to_pylist()


def test_a_mapping_fix_is_replayed_once_and_unchanged_events_keep_their_ids(
    warehouse: DuckDBWarehouse, tmp_path: Path
) -> None:
    land_day(tmp_path / "landing")
    ingest(warehouse, tmp_path / "landing", buggy)
    before = current(warehouse)
    old_complaint = derive_event_id("sandbox", before_raw(before, "complaint"))
    assert old_complaint in before and before["e-bounce"]["event_type"] == "deferred"
    assert table(warehouse, "select count(*) as n from mailers.suppressions")[0]["n"] == 0

    report = replay(warehouse, ReplayWindow(since=DAY))

    assert {k: report.counts[k] for k in report.counts} == {
        "scanned": 6,
        "unchanged": 3,
        "changed": 1,
        "superseded": 1,
        "failed": 1,
        "events_appended": 2,
        "suppressions_added": 2,
    }
    assert report.failures and report.failures[0].startswith("e-refused: ValueError")
    after = current(warehouse)
    assert set(after) == set(before) - {old_complaint} | {"e-complaint"}
    for unchanged in ("e-delivered", "e-open", "e-soft", "e-refused"):
        assert after[unchanged] == before[unchanged]
    bounce = after["e-bounce"]
    assert (bounce["event_type"], bounce["bounce_class"]) == ("bounced", "hard")
    assert bounce["source_file"] == f"replay:{report.replay_id}"
    assert bounce["ingested_at"] > before["e-bounce"]["ingested_at"]
    assert bounce["raw_payload"] == before["e-bounce"]["raw_payload"]
    assert after["e-complaint"]["event_type"] == "complained"
    stored = table(warehouse, "select event_id from mailers.events order by event_id")
    assert [r["event_id"] for r in stored].count("e-bounce") == 2
    assert table(
        warehouse, "select old_event_id, new_event_id from mailers.event_replays order by 1"
    ) == sorted(
        [
            {"old_event_id": "e-bounce", "new_event_id": "e-bounce"},
            {"old_event_id": old_complaint, "new_event_id": "e-complaint"},
        ],
        key=lambda r: r["old_event_id"],
    )
    suppressions = table(
        warehouse, "select address, source, event_id from mailers.suppressions order by address"
    )
    assert suppressions == [
        {"address": "bob@example.com", "source": "bounce", "event_id": "e-bounce"},
        {"address": "cat@example.com", "source": "complaint", "event_id": "e-complaint"},
    ]
    audit = table(
        warehouse, "select run_id, counts from mailers.audit_log where action = 'replay_events'"
    )
    assert len(audit) == 1 and audit[0]["run_id"] == report.replay_id
    assert json.loads(audit[0]["counts"])["changed"] == 1

    events_before = table(warehouse, "select count(*) as n from mailers.events")[0]["n"]
    again = replay(warehouse, ReplayWindow(since=DAY))

    assert (again.counts["scanned"], again.counts["unchanged"], again.counts["failed"]) == (6, 5, 1)
    assert again.counts["changed"] == again.counts["superseded"] == 0
    assert again.counts["events_appended"] == again.counts["suppressions_added"] == 0
    assert table(warehouse, "select count(*) as n from mailers.events")[0]["n"] == events_before
    assert table(warehouse, "select count(*) as n from mailers.suppressions")[0]["n"] == 2
    assert current(warehouse) == after


def before_raw(rows: dict[str, dict[str, Any]], name: str) -> str:
    (raw,) = [
        r["raw_payload"] for r in rows.values() if json.loads(r["raw_payload"])["event"] == name
    ]
    return raw


def test_a_second_fix_of_the_same_event_wins_even_on_a_stopped_clock(
    warehouse: DuckDBWarehouse, tmp_path: Path, fixed_clock: Any
) -> None:
    land_day(tmp_path / "landing")
    ingest(warehouse, tmp_path / "landing", buggy)
    replay(warehouse, ReplayWindow(since=DAY), parser=buggy)  # nothing to fix yet
    assert current(warehouse)["e-bounce"]["event_type"] == "deferred"

    first = replay(warehouse, ReplayWindow(since=DAY))
    assert first.counts["changed"] == 1

    class RewordedHardBounces:
        def __init__(self, parser: EventParser) -> None:
            self.parser = parser

        def parse(self, raw: bytes, account: str) -> list[CanonicalEvent]:
            return [
                dataclasses.replace(e, reason="rewritten")
                if e.bounce_class is BounceClass.HARD
                else e
                for e in self.parser.parse(raw, account)
            ]

    second = replay(
        warehouse, ReplayWindow(since=DAY), parser=lambda k: RewordedHardBounces(event_parser(k))
    )

    assert second.counts["changed"] == 1
    assert current(warehouse)["e-bounce"]["reason"] == "rewritten"
    copies = table(
        warehouse, "select count(*) as n from mailers.events where event_id = 'e-bounce'"
    )
    assert copies[0]["n"] == 3
    assert table(warehouse, "select count(*) as n from mailers.suppressions")[0]["n"] == 2


def test_the_window_and_account_limit_what_is_replayed(
    warehouse: DuckDBWarehouse, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    for hour in (8, 10, 12):
        land(
            landing,
            ACCOUNT,
            f"a{hour}.jsonl",
            payload(f"a{hour}", "bounce", DAY.replace(hour=hour), f"a{hour}@example.com"),
        )
    land(
        landing,
        OTHER,
        "b10.jsonl",
        payload("b10", "bounce", DAY.replace(hour=10), "b10@example.com"),
    )
    ingest(warehouse, landing, buggy)

    narrow = replay(
        warehouse,
        ReplayWindow(since=DAY.replace(hour=9), until=DAY.replace(hour=11), account=ACCOUNT),
    )

    assert (narrow.counts["scanned"], narrow.counts["changed"]) == (1, 1)
    types = {k: r["event_type"] for k, r in current(warehouse).items()}
    assert types == {"a8": "deferred", "a10": "bounced", "a12": "deferred", "b10": "deferred"}

    rest = replay(warehouse, ReplayWindow(since=DAY.replace(hour=9)), chunk_rows=1)

    assert (rest.counts["scanned"], rest.counts["changed"], rest.counts["unchanged"]) == (3, 2, 1)
    types = {k: r["event_type"] for k, r in current(warehouse).items()}
    assert types == {"a8": "deferred", "a10": "bounced", "a12": "bounced", "b10": "bounced"}
    addresses = table(warehouse, "select address from mailers.suppressions order by 1")
    assert [r["address"] for r in addresses] == [
        "a10@example.com",
        "a12@example.com",
        "b10@example.com",
    ]
    with pytest.raises(ValueError, match=r"until .* is not after since"):
        ReplayWindow(since=DAY, until=DAY - timedelta(hours=1))


def test_an_event_of_the_wrong_type_fails_alone(warehouse: DuckDBWarehouse, tmp_path: Path) -> None:
    land_day(tmp_path / "landing")
    ingest(warehouse, tmp_path / "landing", buggy)

    class NumericRecipient:
        def __init__(self, parser: EventParser) -> None:
            self.parser = parser

        def parse(self, raw: bytes, account: str) -> list[CanonicalEvent]:
            return [
                dataclasses.replace(e, recipient=42) if e.event_id == "e-open" else e  # type: ignore[arg-type]
                for e in self.parser.parse(raw, account)
            ]

    report = replay(
        warehouse, ReplayWindow(since=DAY), parser=lambda k: NumericRecipient(event_parser(k))
    )

    assert (report.counts["failed"], report.counts["changed"], report.counts["superseded"]) == (
        1,
        1,
        1,
    )
    assert report.failures[0].startswith("e-open: ")
    assert current(warehouse)["e-open"]["recipient"] == "ann@example.com"


class ClockTimedOpens:
    """A mapping that times opens by the clock, as parsers do for payloads without a time."""

    def __init__(self, parser: EventParser) -> None:
        self.parser = parser

    def parse(self, payload: bytes, account: str) -> list[CanonicalEvent]:
        return [
            dataclasses.replace(e, occurred_at=clock.utcnow())
            if e.event_type is EventType.OPENED
            else e
            for e in self.parser.parse(payload, account)
        ]


def test_an_event_timed_by_the_clock_keeps_its_stored_time(
    warehouse: DuckDBWarehouse, tmp_path: Path, fixed_clock: clock.FixedClock
) -> None:
    land_day(tmp_path / "landing")
    ingest(warehouse, tmp_path / "landing", lambda k: ClockTimedOpens(event_parser(k)))
    stored = current(warehouse)["e-open"]["occurred_at"]
    fixed_clock.advance(3600)

    report = replay(
        warehouse,
        ReplayWindow(since=DAY),
        parser=lambda k: ClockTimedOpens(event_parser(k)),
    )

    assert (report.counts["unchanged"], report.counts["scanned"]) == (6, 6)
    assert current(warehouse)["e-open"]["occurred_at"] == stored


FIXTURES = Path(__file__).parent / "fixtures"


def test_every_providers_recorded_payloads_replay_unchanged(
    warehouse: DuckDBWarehouse, tmp_path: Path
) -> None:
    """Each stored payload parses again into its own event id and fields, for every provider
    with recorded payloads (``unknown`` ones too: Postmark's says no time)."""
    landing = tmp_path / "landing"
    kinds = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
    for kind in kinds:
        directory = landing / kind / f"{kind}_account"
        directory.mkdir(parents=True)
        bodies = [json.loads(f.read_text()) for f in sorted((FIXTURES / kind).glob("*.json"))]
        (directory / "fixtures.jsonl").write_text("".join(json.dumps(b) + "\n" for b in bodies))
    loaded = ingest(warehouse, landing, event_parser)
    stored = table(warehouse, "select provider, count(*) as n from mailers.events group by 1")
    assert {r["provider"] for r in stored} == set(kinds)
    assert loaded.by_type.get("unknown", 0) < loaded.counts["events_new"]

    report = replay(warehouse, ReplayWindow(since=datetime(2000, 1, 1)), parser=event_parser)

    assert report.counts["scanned"] == loaded.counts["events_new"], report.failures
    assert report.counts["unchanged"] == report.counts["scanned"], report.failures
    assert table(warehouse, "select count(*) as n from mailers.event_replays")[0]["n"] == 0


class FailingReplayRecords(DuckDBWarehouse):
    """A warehouse whose append of the replay records fails (a crash at the chunk's end)."""

    def append(self, schema: str, table: str, data: pa.Table) -> None:
        if table == EVENT_REPLAYS_TABLE:
            raise WarehouseError("disk full")
        super().append(schema, table, data)


def test_a_failed_chunk_appends_nothing_and_a_rerun_finishes(tmp_path: Path) -> None:
    land_day(tmp_path / "landing")
    with DuckDBWarehouse(tmp_path / "warehouse.duckdb") as warehouse:
        ensure_tables(warehouse)
        ingest(warehouse, tmp_path / "landing", buggy)
        before = table(warehouse, "select * from mailers.events order by event_id")
    with FailingReplayRecords(tmp_path / "warehouse.duckdb") as failing:
        with pytest.raises(WarehouseError, match="disk full"):
            replay(failing, ReplayWindow(since=DAY))
        assert table(failing, "select * from mailers.events order by event_id") == before
        assert table(failing, "select count(*) as n from mailers.suppressions")[0]["n"] == 0
    with DuckDBWarehouse(tmp_path / "warehouse.duckdb") as warehouse:
        report = replay(warehouse, ReplayWindow(since=DAY))
        assert (report.counts["changed"], report.counts["superseded"]) == (1, 1)
        assert table(warehouse, "select count(*) as n from mailers.suppressions")[0]["n"] == 2


def test_core_readers_see_the_replayed_event_not_the_stored_one(
    warehouse: DuckDBWarehouse, tmp_path: Path, fixed_clock: clock.FixedClock
) -> None:
    """A deferral stored as a delivery hid a message from the backfill (a final event);
    replayed, the message has no final event again and its window is asked for."""
    now = clock.utcnow()
    key = message_key("acme", "pro_tips", "fay@example.com", "once")
    ledger = {
        "ledger_id": "l-1",
        "message_key": key,
        "status": "accepted",
        "workspace": "acme",
        "stream": "lifecycle",
        "campaign": "pro_tips",
        "send_window": "once",
        "recipient": "fay@example.com",
        "provider": "sandbox",
        "provider_account": ACCOUNT,
        "provider_message_id": "e-deferral-msg@sandbox.mailers.test",
        "run_id": "run-1",
        "recorded_at": now - timedelta(hours=10),
    }
    warehouse.append("mailers", LEDGER_TABLE, pa.Table.from_pylist([ledger], LEDGER_SCHEMA))
    deferral = payload("e-deferral", "deferral", now - timedelta(hours=9), "fay@example.com")
    land(tmp_path / "landing", ACCOUNT, "0001.jsonl", deferral)
    ingest(warehouse, tmp_path / "landing", buggy)
    config = CompletenessConfig(deadline_hours=72, backfill_after_hours=6)
    assert open_windows(warehouse, config) == []

    report = replay(warehouse, ReplayWindow(since=now - timedelta(days=1)))

    assert report.counts["changed"] == 1
    (window,) = open_windows(warehouse, config)
    assert (window.provider_account, window.messages) == (ACCOUNT, 1)


def test_dbt_staging_keeps_the_latest_row_and_drops_superseded_ids(tmp_path: Path) -> None:
    settings = load(write_config(tmp_path))
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    land_day(settings.landing_dir)
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
        ingest(warehouse, settings.landing_dir, buggy)
        replay(warehouse, ReplayWindow(since=DAY))
        expected = current(warehouse)

    # The audit log's tests accept the replay's action too.
    run_dbt(
        settings,
        "build",
        "--select",
        "stg_mailers__events",
        "stg_mailers__audit_log",
        "fct_send_audit",
    )

    staged = query(settings, "select * from staging.stg_mailers__events")
    assert {r["event_id"]: r for r in staged} == expected


def test_the_cli_replays_and_refuses_bad_input_naming_the_option(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    settings = load(path)
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    land_day(settings.landing_dir)
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
        ingest(warehouse, settings.landing_dir, buggy)
    config = ["--config", str(path)]
    runner = CliRunner()

    not_a_time = runner.invoke(app, ["events", "replay", *config, "--since", "yesterday"])
    assert not_a_time.exit_code == 2 and "--since" in not_a_time.output
    backwards = runner.invoke(
        app,
        ["events", "replay", *config, "--since", "2026-11-23", "--until", "2026-11-22"],
    )
    assert backwards.exit_code == 2 and "--until" in backwards.output
    unknown = runner.invoke(
        app, ["events", "replay", *config, "--since", "2026-11-23", "--account", "nope"]
    )
    assert unknown.exit_code == 2 and "--account: unknown provider account 'nope'" in unknown.output
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        assert table(warehouse, "select count(*) as n from mailers.event_replays")[0]["n"] == 0

    result = runner.invoke(
        app, ["events", "replay", *config, "--since", "2026-11-23", "--account", ACCOUNT]
    )

    assert result.exit_code == 0, result.output
    for line in ("scanned: 6", "unchanged: 4", "changed: 1", "superseded: 1", "failed: 0"):
        assert line in result.output
    assert "suppressions_added: 2" in result.output
