"""Event ingestion: landed provider payloads in, canonical events and suppressions out.

Providers' events (webhook bodies, polled pages, the sandbox's own output) land as files
``<landing>/<provider kind>/<account>/<name>.jsonl``, one payload per line, written
atomically (complete files only). Ingestion parses each new file with its provider's
parser, then, in one transaction per batch of files: appends the events not seen before (unique by
``event_id``), appends the suppressions those events imply (:data:`SUPPRESSING_EVENTS`),
and records the files as loaded, so each file is ingested exactly once and a crash leaves
nothing half-done. A line no parser understands becomes an ``unknown`` event with the raw
text kept: nothing is dropped.

Parsing is vectorized where a provider has a set-based mapping (a :class:`BulkParser`
reads whole files at once); the lines such a mapping does not claim, and the files of
providers without one, go through the provider's Python parser, line by line. Both paths
give the same events for the same line (a parity test holds them to it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

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


@dataclass(frozen=True)
class LeftoverLine:
    """A line of a landing file that a bulk mapping did not claim (without its newline)."""

    landed: LandedFile
    number: int
    line: bytes


@dataclass(frozen=True)
class BulkParsed:
    """What a :class:`BulkParser` made of a batch of files.

    ``events`` (:data:`EVENTS_SCHEMA`) holds every event of the lines it claimed; each of
    the other non-blank lines of those files is in ``leftovers``; ``unread`` lists the
    files it did not read at all (their kind has no mapping, or the file could not be
    read as text), for the Python parsers to parse whole.
    """

    events: pa.Table
    leftovers: list[LeftoverLine]
    unread: list[LandedFile]


class BulkParser(Protocol):
    """Parses whole landing files at once, set-based, for the provider kinds it maps.

    For every line it claims it must give exactly the events the provider's Python parser
    gives (same ids, fields and ``raw_payload``); a line it cannot map exactly it leaves
    over, never guesses.
    """

    def parse(self, files: Sequence[LandedFile]) -> BulkParsed:
        """The events of ``files``, with what is left for the Python parsers."""
        ...


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
    """All events of one file as an Arrow table of :data:`EVENTS_SCHEMA` (Python parser)."""
    with landed.path.open("rb") as handle:
        # Lines without their newline: what a bulk parser leaves over looks the same.
        numbered = ((n, line.removesuffix(b"\n")) for n, line in enumerate(handle, start=1))
        return parse_lines(landed, numbered, parser)


def parse_lines(
    landed: LandedFile, lines: Iterable[tuple[int, bytes]], parser: EventParser
) -> pa.Table:
    """The events of numbered lines of one file, parsed one by one with ``parser``.

    A line the parser cannot read, or whose events do not fit the table's types, becomes
    an ``unknown`` event holding the raw text: one bad line never costs the others.
    """
    parsed: list[tuple[int, bytes, list[CanonicalEvent]]] = []
    for number, line in lines:
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


def parse_batch(
    batch: Sequence[LandedFile], parser_for: ParserFor, bulk: BulkParser | None
) -> pa.Table:
    """Every event of a batch of files: bulk where a mapping claims a line, else by the
    provider's Python parser."""
    if bulk is None:
        return _concat([parse_file(landed, parser_for(landed.kind)) for landed in batch])
    done = bulk.parse(batch)
    tables = [done.events]
    tables += [parse_file(landed, parser_for(landed.kind)) for landed in done.unread]
    by_file: dict[str, list[LeftoverLine]] = {}
    for left in done.leftovers:
        by_file.setdefault(left.landed.relative, []).append(left)
    for lefts in by_file.values():
        landed = lefts[0].landed
        numbered = ((left.number, left.line) for left in lefts)
        tables.append(parse_lines(landed, numbered, parser_for(landed.kind)))
    return _concat(tables)


def _concat(tables: list[pa.Table]) -> pa.Table:
    if not tables:
        return EVENTS_SCHEMA.empty_table()
    return pa.concat_tables(tables)


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


def _suppressions_sql(warehouse: Warehouse, staged: str, seen: str) -> str:
    """Set-based insert of the suppressions implied by newly staged events (those not in
    ``seen``, the stored events they could repeat).

    An event's address, workspace and stream are its own, else those of the message it is
    about (:func:`~mailers.ledger.attributed_events_sql`). The entry names its event and
    provider account, and takes effect when the event occurred.
    """
    d = warehouse.dialect
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
        f"where not exists (select 1 from {seen} e where e.event_id = s.event_id))"
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


CLOCK_TIMED_WITHIN = "1 hour"
"""How long parsing one batch can take at most: a stored event whose ``occurred_at`` is
this close before its ``ingested_at`` may have been timed by the clock."""

FILES_PER_BATCH = 50
"""Landing files loaded per transaction at most: enough to amortize each statement's
fixed cost, few enough that a batch's parsed events stay small in memory."""

BULK_FILES_PER_BATCH = 1000
"""Files per transaction at most when a :class:`BulkParser` parses them: its queries cost
a fixed ~0.1 s each to plan, so its batches are bounded by bytes rather than files."""

BATCH_MAX_BYTES = 64 << 20
"""Bytes of landing files per transaction at most (a batch holds at least one file):
``mailers serve`` closes segments at up to 16 MiB, so a file count alone would not
bound the memory a batch's text and events take."""


def ingest(
    warehouse: Warehouse,
    landing_dir: Path,
    parser_for: ParserFor,
    *,
    progress: Callable[[int], None] | None = None,
    files_per_batch: int | None = None,
    bulk: BulkParser | None = None,
) -> IngestReport:
    """Load every pending landing file, ``files_per_batch`` files (default
    :data:`FILES_PER_BATCH`, with ``bulk`` :data:`BULK_FILES_PER_BATCH`) and at most about
    :data:`BATCH_MAX_BYTES` per transaction.

    With ``bulk``, files are parsed set-based where their provider has a mapping
    (:func:`parse_batch`); without it, every line goes through its Python parser.

    Each transaction appends the batch's new events, the suppressions they imply and the
    batch's rows of the load manifest together, so a crash between batches leaves every
    file either loaded once or pending, never half-loaded. ``progress`` is called with
    the number of files of each committed batch.
    """
    report = IngestReport()
    if files_per_batch is None:
        files_per_batch = FILES_PER_BATCH if bulk is None else BULK_FILES_PER_BATCH
    batches = _batches(pending_files(warehouse, landing_dir), files_per_batch)
    for batch, parse_started, table in _parsed_ahead(batches, parser_for, bulk):
        _load_batch(warehouse, batch, table, parse_started, report)
        if progress:
            progress(len(batch))
    return report


def _parsed_ahead(
    batches: Iterable[list[LandedFile]], parser_for: ParserFor, bulk: BulkParser | None
) -> Iterator[tuple[list[LandedFile], datetime, pa.Table]]:
    """Each batch with when its parsing started and its events, in order; the next batch
    is parsed on a worker thread while the caller loads the one given.

    Parsing touches nothing but the landing files and the parsers (the bulk parser's own
    embedded database), and DuckDB releases the GIL while it runs a query, so parsing one
    batch and loading the one before it keep two cores busy where one after the other kept
    one. Loading stays on the caller's thread, one batch after the other, so what commits,
    and in what order, is as before; at most two batches' events are held at once.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-parse") as pool:
        ahead: tuple[list[LandedFile], datetime, Future[pa.Table]] | None = None
        try:
            for batch in batches:
                started = utcnow()
                parsing = pool.submit(parse_batch, batch, parser_for, bulk)
                if ahead is not None:
                    yield ahead[0], ahead[1], ahead[2].result()
                ahead = (batch, started, parsing)
            if ahead is not None:
                yield ahead[0], ahead[1], ahead[2].result()
        finally:
            # A failed load stops here: the batch parsed ahead is not waited for in vain.
            pool.shutdown(wait=True, cancel_futures=True)


def _batches(files: list[LandedFile], most: int) -> Iterator[list[LandedFile]]:
    """``files`` in order, in batches of at most ``most`` files and about
    :data:`BATCH_MAX_BYTES` (a larger file makes a batch of its own)."""
    batch: list[LandedFile] = []
    size = 0
    for landed in files:
        length = landed.path.stat().st_size
        if batch and (len(batch) >= max(1, most) or size + length > BATCH_MAX_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(landed)
        size += length
    if batch:
        yield batch


def _load_batch(
    warehouse: Warehouse,
    batch: Sequence[LandedFile],
    table: pa.Table,
    parse_started: datetime,
    report: IngestReport,
) -> None:
    """Load one batch of parsed files (``table``: all their events) in one transaction and
    add its tallies to ``report``."""
    events = warehouse.relation(MAILERS_SCHEMA, EVENTS_TABLE)
    columns = ", ".join(EVENTS_SCHEMA.names)
    per_file = {
        item["values"]: item["counts"] for item in table["source_file"].value_counts().to_pylist()
    }
    loaded_at = utcnow()
    manifest = pa.Table.from_pylist(
        [
            {
                "source_file": landed.relative,
                "provider_account": landed.account,
                "event_count": per_file.get(landed.relative, 0),
                "loaded_at": loaded_at,
            }
            for landed in batch
        ],
        schema=LANDED_FILES_SCHEMA,
    )
    suppressing = ", ".join(f"'{event_type}'" for event_type, _ in SUPPRESSING_EVENTS)
    sources = ", ".join("'" + landed.relative.replace("'", "''") + "'" for landed in batch)
    with warehouse.staged(table) as staged, warehouse.transaction():
        # One row per event id within the batch (the earliest); the anti-join drops ones
        # already loaded, looking only at stored events in the time range the batch's
        # events can match. Only the few ids the batch repeats are ranked: a window over
        # every row would cost the insert a third more.
        repeated = (
            f"(select event_id from {staged} group by event_id having count(*) > 1) as r "
            f"where r.event_id = s.event_id"
        )
        unique = (
            f"(select {columns} from {staged} as s where not exists (select 1 from {repeated}) "
            f"union all select {columns} from (select *, row_number() over "
            f"(partition by event_id order by occurred_at, source_file) as batch_rank "
            f"from {staged} as s where exists (select 1 from {repeated})) as ranked "
            f"where batch_rank = 1)"
        )
        seen = _seen_events_sql(events, table, parse_started)
        new = warehouse.execute(
            f"insert into {events} ({columns}) select {columns} from {unique} as n "
            f"where not exists (select 1 from {seen} e where e.event_id = n.event_id)"
        )
        # The suppressions of what was just inserted: the batch's files' rows (loaded
        # once, by the manifest), found by ingested_at so only the newest row groups are
        # read, and only the few events that can suppress go through the attribution.
        inserted = (
            f"(select * from {events} where ingested_at >= {_timestamp_literal(table)} "
            f"and source_file in ({sources}) and event_type in ({suppressing}))"
        )
        nothing_seen = f"(select event_id from {events} where false)"
        added = warehouse.execute(_suppressions_sql(warehouse, inserted, nothing_seen))
        warehouse.append(MAILERS_SCHEMA, LANDED_FILES_TABLE, manifest)
    counts = report.counts
    counts["files"] += len(batch)
    counts["events_parsed"] += table.num_rows
    counts["events_new"] += new
    counts["events_duplicate"] += table.num_rows - new
    counts["suppressions_added"] += added
    for item in table["event_type"].value_counts().to_pylist():
        report.by_type[item["values"]] = report.by_type.get(item["values"], 0) + item["counts"]


def _timestamp_literal(table: pa.Table) -> str:
    """The earliest ``ingested_at`` of a batch as a SQL literal (an empty batch: now)."""
    low = pc.min(table["ingested_at"]).as_py() if table.num_rows else utcnow()
    return f"cast('{low.isoformat(sep=' ')}' as timestamp)"


def _seen_events_sql(events: str, staged: pa.Table, parse_started: datetime) -> str:
    """The stored events a staged batch's event ids can collide with, as a relation.

    Every provider mapping derives an event's id from fields that include (or fix) when
    it occurred, so a re-landed event has the same ``occurred_at``: only stored events
    within the batch's ``occurred_at`` range can be its copies. The range is written as
    literals so DuckDB prunes row groups by their zonemaps instead of scanning history.
    Events a parser timed by the clock (a payload that says no time) have no such bound:
    when a batch holds any (``occurred_at`` at or after ``parse_started``), stored events
    timed the same way (``occurred_at`` within :data:`CLOCK_TIMED_WITHIN` before their
    ``ingested_at``) are matched too, a scan that only such rare batches pay.
    """
    if staged.num_rows == 0:
        return f"(select event_id from {events} where false)"
    occurred = staged["occurred_at"]
    low = pc.min(occurred).as_py()
    high = pc.max(occurred).as_py()
    bounded = (
        f"occurred_at between cast('{low.isoformat(sep=' ')}' as timestamp) "
        f"and cast('{high.isoformat(sep=' ')}' as timestamp)"
    )
    if high >= parse_started.replace(tzinfo=None):
        # Some staged event is timed by the clock: its earlier copy was too.
        bounded += f" or occurred_at >= ingested_at - interval '{CLOCK_TIMED_WITHIN}'"
    return f"(select event_id from {events} where {bounded})"
