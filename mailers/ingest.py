"""Event ingestion: landed provider payloads in, canonical events and suppressions out.

Providers' events (webhook bodies, polled pages, the sandbox's own output) land as files
``<landing>/<provider kind>/<account>/<name>.jsonl``, one payload per line, written
atomically (complete files only). Ingestion parses each new file with its provider's
parser, then, in one transaction: appends the events not seen before (unique by
``event_id``), appends the suppressions those events imply (:data:`SUPPRESSING_EVENTS`),
and records the file as loaded, so each file is ingested exactly once and a crash leaves
nothing half-done. A line no parser understands becomes an ``unknown`` event with the raw
text kept: nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from mailers.clock import utcnow
from mailers.events import EVENTS_SCHEMA, EVENTS_TABLE, CanonicalEvent, EventType, derive_event_id
from mailers.ledger import attributed_events_sql
from mailers.providers import EventParser
from mailers.suppression import SUPPRESSING_EVENTS, SUPPRESSIONS_TABLE, SuppressionAction
from mailers.tables import LANDED_FILES_SCHEMA, LANDED_FILES_TABLE
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

INGEST_ACTOR = "ingest"
"""The actor of the suppressions ingestion derives from provider feedback."""

ParserFor = Callable[[str], EventParser]
"""Returns the event parser for a provider kind."""


@dataclass(frozen=True)
class LandedFile:
    """One landing file: which provider kind and account it came from."""

    path: Path
    relative: str
    kind: str
    account: str


@dataclass
class IngestReport:
    """Tallies of one ingestion run."""

    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("files", "events_parsed", "events_new", "events_duplicate", "suppressions_added"),
            0,
        )
    )
    by_type: dict[str, int] = field(default_factory=dict)


def landed_files(landing_dir: Path) -> Iterator[LandedFile]:
    """Every complete landing file, in name order (provider kind, account, file name)."""
    if not landing_dir.is_dir():
        return
    for path in sorted(landing_dir.glob("*/*/*.jsonl")):
        relative = path.relative_to(landing_dir).as_posix()
        kind, account, _ = relative.split("/", 2)
        yield LandedFile(path=path, relative=relative, kind=kind, account=account)


def pending_files(warehouse: Warehouse, landing_dir: Path) -> list[LandedFile]:
    """Landing files not yet loaded into the warehouse."""
    table = warehouse.relation(MAILERS_SCHEMA, LANDED_FILES_TABLE)
    loaded = set(warehouse.query(f"select source_file from {table}")["source_file"].to_pylist())
    return [f for f in landed_files(landing_dir) if f.relative not in loaded]


def parse_file(landed: LandedFile, parser: EventParser) -> pa.Table:
    """All events of one file as an Arrow table of :data:`EVENTS_SCHEMA`.

    A line the parser cannot read, or whose events do not fit the table's types, becomes
    an ``unknown`` event holding the raw text: one bad line never costs the others.
    """
    parsed: list[tuple[int, bytes, list[CanonicalEvent]]] = []
    with landed.path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                parsed.append((number, line, parser.parse(line, landed.account)))
            except Exception as err:  # any parser failure keeps the line, as an unknown event
                parsed.append((number, line, [_unparseable(landed, number, line, err)]))
    try:
        return _events_table([e for _, _, events in parsed for e in events], landed.relative)
    except (pa.ArrowException, TypeError, ValueError):
        pass  # some line's events have the wrong types: find them, line by line
    events: list[CanonicalEvent] = []
    for number, line, line_events in parsed:
        try:
            _events_table(line_events, landed.relative)
        except (pa.ArrowException, TypeError, ValueError) as err:
            line_events = [_unparseable(landed, number, line, err)]
        events.extend(line_events)
    return _events_table(events, landed.relative)


def _unparseable(landed: LandedFile, number: int, line: bytes, err: Exception) -> CanonicalEvent:
    raw = line.decode("utf-8", errors="replace").rstrip("\n")
    return CanonicalEvent(
        event_id=derive_event_id(landed.kind, landed.relative, str(number), raw),
        event_type=EventType.UNKNOWN,
        occurred_at=utcnow(),
        provider=landed.kind,
        provider_account=landed.account,
        raw_payload=raw,
        reason=(f"unparseable payload at {landed.relative}:{number}: {type(err).__name__}: {err}")[
            :500
        ],
    )


def _events_table(events: list[CanonicalEvent], source_file: str) -> pa.Table:
    now = utcnow()
    rows = []
    for event in events:
        row = event.as_row()
        row["source_file"] = source_file
        row["ingested_at"] = now
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA)


def _suppressions_sql(warehouse: Warehouse, staged: str) -> str:
    """Set-based insert of the suppressions implied by newly staged events.

    An event's address, workspace and stream are its own, else those of the message it is
    about (:func:`~mailers.ledger.attributed_events_sql`). The entry names its event and
    provider account, and takes effect when the event occurred.
    """
    d = warehouse.dialect
    events = warehouse.relation(MAILERS_SCHEMA, EVENTS_TABLE)
    suppressions = warehouse.relation(MAILERS_SCHEMA, SUPPRESSIONS_TABLE)
    whens_source, whens_scope = [], []
    for (event_type, bounce_class), (source, scope) in SUPPRESSING_EVENTS.items():
        cond = f"n.event_type = '{event_type}'"
        if bounce_class is not None:
            cond += f" and n.bounce_class = '{bounce_class}'"
        whens_source.append(f"when {cond} then '{source}'")
        whens_scope.append(f"when {cond} then '{scope}'")
    fresh = (
        f"(select * from {staged} as s "
        f"where not exists (select 1 from {events} e where e.event_id = s.event_id))"
    )
    return f"""
insert into {suppressions}
    (suppression_id, address, scope, workspace, stream, source, reason, event_id, created_at,
     action, actor, provider_account, origin)
select
    {d.md5_hex("n.event_id || '|suppression'")},
    lower(n.recipient),
    scope,
    case when scope = 'global' then null else n.workspace end,
    case when scope = 'stream' then n.stream end,
    source,
    n.reason,
    n.event_id,
    n.occurred_at,
    '{SuppressionAction.ADD}',
    '{INGEST_ACTOR}',
    n.provider_account,
    'event:' || n.event_id
from (
    select n.*,
        case {" ".join(whens_source)} end as source,
        case {" ".join(whens_scope)} end as scope
    from ({attributed_events_sql(warehouse, fresh)}) as n
) as n
where n.source is not null and n.recipient is not null
"""


def ingest(
    warehouse: Warehouse,
    landing_dir: Path,
    parser_for: ParserFor,
    *,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Load every pending landing file, one transaction per file; return the tallies."""
    report = IngestReport()
    events = warehouse.relation(MAILERS_SCHEMA, EVENTS_TABLE)
    columns = ", ".join(EVENTS_SCHEMA.names)
    for landed in pending_files(warehouse, landing_dir):
        parsed = parse_file(landed, parser_for(landed.kind))
        with warehouse.staged(parsed) as staged, warehouse.transaction():
            # One row per event id within the file; the anti-join drops ones already loaded.
            unique = (
                f"(select {columns} from (select *, row_number() over "
                f"(partition by event_id order by occurred_at) as file_rank from {staged}) "
                f"as ranked where file_rank = 1)"
            )
            added = warehouse.execute(_suppressions_sql(warehouse, unique))
            new = warehouse.execute(
                f"insert into {events} ({columns}) select {columns} from {unique} as n "
                f"where not exists (select 1 from {events} e where e.event_id = n.event_id)"
            )
            warehouse.append(
                MAILERS_SCHEMA,
                LANDED_FILES_TABLE,
                pa.Table.from_pylist(
                    [
                        {
                            "source_file": landed.relative,
                            "provider_account": landed.account,
                            "event_count": parsed.num_rows,
                            "loaded_at": utcnow(),
                        }
                    ],
                    schema=LANDED_FILES_SCHEMA,
                ),
            )
        counts = report.counts
        counts["files"] += 1
        counts["events_parsed"] += parsed.num_rows
        counts["events_new"] += new
        counts["events_duplicate"] += parsed.num_rows - new
        counts["suppressions_added"] += added
        for item in parsed["event_type"].value_counts().to_pylist():
            report.by_type[item["values"]] = report.by_type.get(item["values"], 0) + item["counts"]
        if progress:
            progress(1)
    return report
