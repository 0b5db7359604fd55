"""Replaying stored events: re-normalize their raw payloads after a mapping fix.

Every stored event keeps its provider's payload verbatim (``raw_payload``). A replay reads
the current events (:func:`~mailers.current_events.current_events_sql`) that occurred in
a window, optionally of one provider account, in bounded chunks, parses each payload again
with the provider's parser of today, and compares the result with the stored row:

======================  ==========================================================
re-parsed event         what the replay appends
======================  ==========================================================
same id, same fields    nothing (``unchanged``): a second replay appends nothing
same id, other fields   the new row under the same id (``changed``)
no event with its id    the events it now is, under their ids, unless stored
                        already (``superseded``)
parser raises, finds    nothing; the stored row stays current (``failed``)
none, or wrong types
======================  ==========================================================

Appended rows have ``source_file`` ``replay:<replay id>`` and ``ingested_at`` the chunk's
``replayed_at``; each replaced stored event gets a row in ``mailers.event_replays``, so
readers of the current events (and dbt's staging model) drop what a replay replaced.
``ingested_at`` and ``source_file`` are not compared, nor is ``raw_payload``: a changed
row keeps the stored payload, which is the provider's and never re-serialized. An event
the parser times by the clock (its payload says no time) keeps its stored ``occurred_at``.
Events that now suppress an address (a hard bounce that was read as soft) add their
suppressions as ingestion would; one that no longer does keeps its suppression (lifting it
is ``mailers suppression remove``'s, audited). Each chunk's appends commit in one
transaction, so a crash leaves every stored event replayed or not, and running the replay
again finishes the work; the replay ends with one audit record (window, account, counts).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mailers.audit import AuditAction, AuditRecord, append_audit
from mailers.clock import utcnow
from mailers.current_events import EVENT_REPLAYS_SCHEMA, EVENT_REPLAYS_TABLE, current_events_sql
from mailers.events import EVENTS_SCHEMA, EVENTS_TABLE, CanonicalEvent
from mailers.ingest import CLOCK_TIMED_WITHIN, ParserFor, _suppressions_sql
from mailers.ledger import sql_text
from mailers.providers import EventParser
from mailers.suppression import SUPPRESSIONS_TABLE
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

REPLAY_SOURCE_PREFIX = "replay:"
"""``source_file`` of the rows a replay appends is this prefix and the replay's id."""

CHUNK_ROWS = 10_000
"""Stored events re-parsed per transaction: memory stays flat however long the window."""

NOT_COMPARED = ("raw_payload", "source_file", "ingested_at")
COMPARED = tuple(name for name in EVENTS_SCHEMA.names if name not in NOT_COMPARED)
"""The normalized fields a replay compares with the stored row."""

FAILURES_KEPT = 20
"""How many failed payloads a report names (the count covers them all)."""

_EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(CanonicalEvent))

COUNTS = ("scanned", "unchanged", "changed", "superseded", "failed", "events_appended")


@dataclass(frozen=True)
class ReplayWindow:
    """Which stored events to replay: ``since <= occurred_at < until``, of one account or all."""

    since: datetime
    until: datetime | None = None
    account: str | None = None

    def __post_init__(self) -> None:
        if self.until is not None and self.until <= self.since:
            raise ValueError(f"replay window: until {self.until} is not after since {self.since}")

    def where(self) -> str:
        """The window as a condition on events' columns."""
        conditions = [f"occurred_at >= {_timestamp(self.since)}"]
        if self.until is not None:
            conditions.append(f"occurred_at < {_timestamp(self.until)}")
        if self.account is not None:
            conditions.append(f"provider_account = {sql_text(self.account)}")
        return " and ".join(conditions)


@dataclass
class ReplayReport:
    """Tallies of one replay; ``failures`` names the first payloads the parser refused."""

    replay_id: str
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((*COUNTS, "suppressions_added"), 0)
    )
    failures: list[str] = field(default_factory=list)


def replay_events(
    warehouse: Warehouse,
    parser_for: ParserFor,
    window: ReplayWindow,
    *,
    actor: str,
    config_hash: str,
    chunk_rows: int = CHUNK_ROWS,
) -> ReplayReport:
    """Re-normalize the stored events in ``window`` with ``parser_for``'s parsers.

    Appends changed and superseding events, their replacement records and the
    suppressions they imply, one transaction per chunk of ``chunk_rows`` stored events,
    then one audit record of the replay (:class:`~mailers.audit.AuditAction` ``replay_events``).
    """
    report = ReplayReport(replay_id=f"{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}")
    parsers = _cached(parser_for)
    query = f"select * from {current_events_sql(warehouse, window.where())} as current"
    # The stream reads one snapshot on its own cursor, so the rows each chunk appends are
    # not read back by this replay.
    for batch in warehouse.stream(query, batch_rows=max(1, chunk_rows)):
        _replay_chunk(warehouse, pa.Table.from_batches([batch]), parsers, report)
    append_audit(
        warehouse,
        [
            AuditRecord(
                run_id=report.replay_id,
                actor=actor,
                action=AuditAction.REPLAY_EVENTS,
                config_hash=config_hash,
                counts=report.counts,
                detail={
                    "since": window.since.isoformat(),
                    "until": window.until.isoformat() if window.until else None,
                    "account": window.account,
                    "failures": report.failures,
                },
            )
        ],
    )
    return report


def _cached(parser_for: ParserFor) -> Callable[[str], EventParser]:
    found: dict[str, EventParser] = {}

    def parser(kind: str) -> EventParser:
        if kind not in found:
            found[kind] = parser_for(kind)
        return found[kind]

    return parser


def _replay_chunk(
    warehouse: Warehouse,
    stored: pa.Table,
    parsers: Callable[[str], EventParser],
    report: ReplayReport,
) -> None:
    """Re-parse one chunk of stored events and append what changed, in one transaction."""
    counts = report.counts
    parsed: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    clock_timed_ids: set[str] = set()
    for row in stored.to_pylist():
        counts["scanned"] += 1
        try:
            parsed.append((row, _reparse(row, parsers, clock_timed_ids)))
        except Exception as err:  # any parser failure keeps the stored row as it is
            _failed(report, row, err)
    changed: list[dict[str, Any]] = []
    fresh: dict[str, dict[str, Any]] = {}
    replaced: list[tuple[str, str]] = []
    for row, events in _normalized(parsed, report):
        same = next((e for e in events if e["event_id"] == row["event_id"]), None)
        if same is None:
            counts["superseded"] += 1
            for event in events:
                fresh.setdefault(event["event_id"], event)
                replaced.append((row["event_id"], event["event_id"]))
        elif any(same[name] != row[name] for name in COMPARED):
            counts["changed"] += 1
            changed.append({**same, "raw_payload": row["raw_payload"]})
            replaced.append((row["event_id"], row["event_id"]))
        else:
            counts["unchanged"] += 1
    if not replaced:
        return
    # Later than every row it replaces, even on a stopped or coarse clock.
    latest = pc.max(stored["ingested_at"]).as_py()
    replayed_at = max(utcnow(), latest + timedelta(microseconds=1))
    clock_timed = not clock_timed_ids.isdisjoint(fresh)
    _append_chunk(
        warehouse, changed, list(fresh.values()), replaced, replayed_at, clock_timed, report
    )


def _failed(report: ReplayReport, row: dict[str, Any], err: Exception) -> None:
    report.counts["failed"] += 1
    if len(report.failures) < FAILURES_KEPT:
        report.failures.append(f"{row['event_id']}: {type(err).__name__}: {err}"[:300])


def _reparse(
    row: dict[str, Any], parsers: Callable[[str], EventParser], clock_timed_ids: set[str]
) -> list[dict[str, Any]]:
    """The events a stored row's payload is today, as rows of
    :data:`~mailers.events.EVENTS_SCHEMA` (raises when the parser does, or finds none);
    the ids of those that took their time from the stored row join ``clock_timed_ids``."""
    parser = parsers(row["provider"])
    before = utcnow()
    events = parser.parse(row["raw_payload"].encode(), row["provider_account"])
    after = utcnow()
    if not events:
        raise ValueError("the parser finds no event in the payload")
    rows = []
    for event in events:
        parsed = {name: getattr(event, name) for name in _EVENT_FIELDS}
        occurred = parsed["occurred_at"]
        if occurred.tzinfo is not None:
            occurred = occurred.astimezone(UTC).replace(tzinfo=None)
        if before <= occurred <= after:
            # Timed while it was parsed: the payload says no time and the parser used the
            # clock. The event occurred when it was first stored, not now.
            occurred = row["occurred_at"]
            clock_timed_ids.add(event.event_id)
        parsed["occurred_at"] = occurred
        parsed["source_file"] = row["source_file"]
        parsed["ingested_at"] = row["ingested_at"]
        rows.append(parsed)
    return rows


def _normalized(
    parsed: list[tuple[dict[str, Any], list[dict[str, Any]]]], report: ReplayReport
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each stored row with its re-parsed events passed through Arrow, so values compare as
    stored ones do; a row whose events do not fit the table's types fails alone."""
    try:
        flat = pa.Table.from_pylist(
            [event for _, events in parsed for event in events], schema=EVENTS_SCHEMA
        ).to_pylist()
    except (pa.ArrowException, TypeError, ValueError):
        pass  # some row's events have the wrong types: find them, row by row
    else:
        grouped, start = [], 0
        for row, events in parsed:
            grouped.append((row, flat[start : start + len(events)]))
            start += len(events)
        return grouped
    grouped = []
    for row, events in parsed:
        try:
            grouped.append((row, pa.Table.from_pylist(events, schema=EVENTS_SCHEMA).to_pylist()))
        except (pa.ArrowException, TypeError, ValueError) as err:
            _failed(report, row, err)
    return grouped


def _append_chunk(
    warehouse: Warehouse,
    changed: list[dict[str, Any]],
    fresh: list[dict[str, Any]],
    replaced: list[tuple[str, str]],
    replayed_at: datetime,
    clock_timed: bool,
    report: ReplayReport,
) -> None:
    """Append one chunk's changed and superseding events, their replacement records and
    the suppressions they imply, together."""
    source = f"{REPLAY_SOURCE_PREFIX}{report.replay_id}"
    stamped = {"source_file": source, "ingested_at": replayed_at}
    changed_table = pa.Table.from_pylist([{**e, **stamped} for e in changed], EVENTS_SCHEMA)
    fresh_table = pa.Table.from_pylist([{**e, **stamped} for e in fresh], EVENTS_SCHEMA)
    records = pa.Table.from_pylist(
        [
            {
                "replay_id": report.replay_id,
                "old_event_id": old,
                "new_event_id": new,
                "replayed_at": replayed_at,
            }
            for old, new in replaced
        ],
        schema=EVENT_REPLAYS_SCHEMA,
    )
    events = warehouse.relation(MAILERS_SCHEMA, EVENTS_TABLE)
    suppressions = warehouse.relation(MAILERS_SCHEMA, SUPPRESSIONS_TABLE)
    columns = ", ".join(EVENTS_SCHEMA.names)
    with (
        warehouse.staged(changed_table) as staged_changed,
        warehouse.staged(fresh_table) as staged_fresh,
        warehouse.transaction(),
    ):
        stored = _stored_ids_sql(events, fresh_table, clock_timed)
        new = (
            f"(select {columns} from {staged_fresh} as n "
            f"where not exists (select 1 from {stored} as e where e.event_id = n.event_id))"
        )
        appended = f"(select {columns} from {staged_changed} union all select * from {new} as n)"
        # An event that suppressed before the fix has its suppression already (its id is
        # the entry's): only events with none add one.
        suppressed = (
            f"(select event_id from {suppressions} "
            f"where event_id in (select event_id from {appended} as a))"
        )
        added = warehouse.execute(_suppressions_sql(warehouse, appended, suppressed))
        inserted = warehouse.execute(
            f"insert into {events} ({columns}) select {columns} from {appended} as a"
        )
        warehouse.append(MAILERS_SCHEMA, EVENT_REPLAYS_TABLE, records)
    report.counts["events_appended"] += inserted
    report.counts["suppressions_added"] += added


def _stored_ids_sql(events: str, fresh: pa.Table, clock_timed: bool) -> str:
    """The stored events superseding events can be copies of, as a relation of ids.

    As in ingestion (:mod:`mailers.ingest`), an event's id fixes when it occurred, so only
    stored events in the fresh events' ``occurred_at`` range can be their copies, plus the
    clock-timed ones when a fresh event took its time from the row it replaces.
    """
    if fresh.num_rows == 0:
        return f"(select event_id from {events} where false)"
    low = pc.min(fresh["occurred_at"]).as_py()
    high = pc.max(fresh["occurred_at"]).as_py()
    bounded = f"occurred_at between {_timestamp(low)} and {_timestamp(high)}"
    if clock_timed:
        bounded += f" or occurred_at >= ingested_at - interval {CLOCK_TIMED_WITHIN}"
    return f"(select event_id from {events} where {bounded})"


def _timestamp(moment: datetime) -> str:
    return f"cast({sql_text(moment.replace(tzinfo=None).isoformat(sep=' '))} as timestamp)"
