"""Set-based parsing of landing files: each provider's mapping as one DuckDB query.

A provider that can be mapped in SQL keeps the mapping next to its Python parser, as
``adapters/providers/<kind>/events.sql``: a ``select`` over the relation
``provider_lines`` (``source_file``, ``provider_account``, ``line_number`` and
``payload``, the line without surrounding ASCII whitespace), giving ``source_file``,
``line_number`` and the event columns of :data:`~mailers.events.EVENTS_SCHEMA` (less
``source_file`` and ``ingested_at``). A line is *claimed* by the rows it gets; a mapping
gives all of a line's events or none, and leaves every line it cannot map exactly as its
Python parser would (odd types, unreadable times, duplicate keys) to that parser.

The mappings run in an embedded, in-memory DuckDB whatever the warehouse is: parsing is
local compute, and the warehouse only receives the Arrow result. It pushes no filter down
(:data:`PARSER_SETTINGS`): a mapping's ``where`` runs where it is written, on the columns
its stage computed, so a stage needs no ``materialized`` to keep its expressions from
being computed twice. Files are read with ``read_text`` in one query per batch; a batch
that cannot be read as UTF-8 text is read file by file, and a file that still cannot be
is left to the Python parser whole.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import duckdb
import pyarrow as pa

from mailers.clock import utcnow
from mailers.events import EVENTS_SCHEMA
from mailers.ingest import BulkParsed, LandedFile, LeftoverLine

MAPPING_FILE = "events.sql"
"""The name of a provider package's SQL mapping."""

_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"
"""What ``bytes.strip()`` removes: blank lines and a payload's padding, as Python sees them."""

_UNICODE_WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
"""What ``str.strip()`` removes, for mappings of fields the Python parsers strip."""


_LOCAL_TIME = (
    "[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]([.][0-9]+)?"
)
"""The ISO 8601 date and time the mappings read (a subset of datetime.fromisoformat's)."""

_OFFSET = "(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
"""``Z`` or a ``+HH:MM`` offset."""


JSON_PYTHON_REFUSES = r",[ \t\n\r]*[}\]]|(?i:[:,\[][ \t\n\r]*-?(nan|inf))"
"""What DuckDB reads in JSON and Python's json.loads does not (or reads otherwise): a
trailing comma, and non-numbers in any case (strings holding one are left over too)."""

_NON_NUMBER = r"[ \t\n\r]*-?(?i:nan|inf)"
JSON_PYTHON_REFUSES_SPLIT = (
    r",[ \t\n\r]*([}\]]|-?(?i:nan|inf))",
    ":" + _NON_NUMBER,
    r"\[" + _NON_NUMBER,
)
""":data:`JSON_PYTHON_REFUSES` as patterns that each start with one literal character:
RE2 skips to that character's occurrences (memchr) instead of stepping through every
byte, so the three together cost half of the one with a leading character class. They
match the same lines."""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


MACROS = f"""
-- str.strip() of Python, and bytes.strip() for whole lines.
create or replace macro py_strip(s) as trim(s, {_literal(_UNICODE_WHITESPACE)});
create or replace macro ascii_strip(s) as trim(s, {_literal(_ASCII_WHITESPACE)});

-- mailers.events.derive_event_id: provider ':' the first 40 hex digits of the sha256 of
-- the provider and the parts joined by U+001F (parts is the text already joined).
create or replace macro derived_event_id(provider, parts) as
    provider || ':' || left(sha256(provider || chr(31) || parts), 40);

-- An ISO 8601 instant as naive UTC, microseconds kept (more digits cut, as
-- datetime.fromisoformat does); null unless it is exactly YYYY-MM-DD[T ]HH:MM:SS[.f]
-- followed by Z or a +HH:MM offset (iso_instant), or optionally by one, a time without
-- one read as UTC (iso_instant_or_utc). The patterns are constants: compiled once. A
-- time on 9999-12-31 is left to Python: with an offset it may be past the last instant
-- Python's datetime holds, and its parser fails on it (OverflowError) where DuckDB would
-- give year 10000. iso_parts reads a text of that form only: its fraction, if any, starts
-- at the 20th character and its offset, if any, is the last six (no other '+' or '-' can
-- be there), so only a fraction needs a pattern.
create or replace macro iso_parts(s) as
    try_cast(substr(s, 1, 10) || ' ' || substr(s, 12, 8) as timestamp)
    + case when substr(s, 20, 1) = '.' then to_microseconds(cast(
        rpad(left(regexp_extract(s, '[.]([0-9]+)', 1), 6), 6, '0') as bigint))
      else to_microseconds(0) end
    - case when substr(s, -6, 1) in ('+', '-') then
        (case when substr(s, -6, 1) = '-' then -1 else 1 end)
        * (to_minutes(cast(substr(s, -5, 2) as bigint) * 60 + cast(substr(s, -2, 2) as bigint)))
      else to_minutes(0) end;
create or replace macro iso_instant(s) as
    case when regexp_full_match(s, '{_LOCAL_TIME}{_OFFSET}') and s < '9999-12-31'
        then iso_parts(s) end;
create or replace macro iso_instant_or_utc(s) as
    case when regexp_full_match(s, '{_LOCAL_TIME}{_OFFSET}?') and s < '9999-12-31'
        then iso_parts(s) end;

-- JSON fragments (from_json with a structure of "JSON" fields gives each field as its
-- JSON text, null when absent or null): their type from the first character, and their value as
-- text. A string's quotes are cut when it has no escapes (most do), else it is decoded.
create or replace macro json_kind(fragment) as
    case left(fragment, 1)
        when '"' then 'VARCHAR' when '{{' then 'OBJECT' when '[' then 'ARRAY'
        when 't' then 'BOOLEAN' when 'f' then 'BOOLEAN'
        when 'N' then 'DOUBLE' when 'I' then 'DOUBLE'
        else case when contains(fragment, '.') or contains(fragment, 'e')
            or contains(fragment, 'E') or contains(fragment, 'I') then 'DOUBLE'
            else 'INTEGER' end
    end;
create or replace macro json_text(fragment) as
    case when left(fragment, 1) <> '"' then fragment::varchar
        when contains(fragment, '\\') then json_extract_string(fragment, '$')
        else substring(fragment::varchar, 2, length(fragment) - 2) end;

-- A field read as text only when it is a string, null or absent (what the Python
-- parsers' text() reads the same way); others make the line fall back.
create or replace macro text_typed(fragment) as fragment is null or left(fragment, 1) = '"';

-- mailers.messages.MessageRef's reading of one metadata value: stripped text or an
-- integer's digits; null for anything else. Doubles are not claimed (a huge integer
-- reads as one here and as an int in Python).
create or replace macro ref_typed(fragment) as
    fragment is null or json_kind(fragment) <> 'DOUBLE';
create or replace macro ref_text(fragment) as
    case json_kind(fragment)
        when 'VARCHAR' then nullif(py_strip(json_text(fragment)), '')
        when 'INTEGER' then fragment::varchar
    end;

-- The keys of a JSON object (text) are unique: DuckDB reads the first of duplicates,
-- Python the last, so such a line is left to Python. Null and non-objects pass. Fewer
-- than two keys cannot repeat: the count of distinct ones is what costs (list_unique
-- runs an aggregate per list). Keys whose hashes fall on as many distinct bits of a
-- 64-bit mask as there are keys are distinct (equal keys hash alike), which settles
-- most objects for a fraction of that; only the rest are counted.
create or replace macro unique_keys(keys) as
    case when len(keys) < 2 then true
        when len(keys) <= 64 and bit_count(list_reduce(list_transform(keys,
            lambda k: 1::ubigint << (hash(k) % 64)::integer), lambda a, b: a | b)) = len(keys)
            then true
        else list_unique(keys) = len(keys) end;
create or replace macro keys_unique(object) as
    object is null or left(object, 1) <> '{{' or unique_keys(json_keys(object));

-- Python's json.dumps(value) (separators ", " and ": ", ensure_ascii) of a JSON value
-- given as DuckDB's minified text of it (a from_json "JSON" field, or json()), for
-- mappings whose Python parser stores a re-serialized value. DuckDB writes other
-- characters than ASCII (and DEL) as they are, where Python escapes each as \\uxxxx
-- (py_ascii), and the hex of its own \\u escapes (control characters) in capitals, which
-- are lowered when no escaped backslash could make a \\u literal text. The text must
-- have no NaN or Infinity and no number whose form may differ (py_dumpable): 17 digits
-- in a row (doubles from 1e16 up, integers Python may refuse to read), 0.0000 (below
-- 1e-4) or an exponent (Python writes 1e+16, 1e-05). Duplicate keys are the mapping's
-- to rule out: DuckDB keeps them, Python keeps the last. Separators are spaced by a
-- plain replace when no string holds a comma or colon (checked by reading the result
-- back), else outside the strings found by splitting at quotes (no escaped quote).
create or replace macro py_char(c) as
    case when c <= '~' then c
        when unicode(c) < 65536 then printf('\\u%04x', unicode(c))
        else printf('\\u%04x\\u%04x', 55296 + ((unicode(c) - 65536) >> 10),
            56320 + ((unicode(c) - 65536) & 1023))
    end;
create or replace macro py_ascii(s) as
    case when strlen(s) = length(s) and not contains(s, chr(127)) then s
        else array_to_string(list_transform(string_split(s, ''), lambda c: py_char(c)), '')
    end;
create or replace macro py_lower_escapes(s) as
    case when not contains(s, '\\u') then s else
        replace(replace(replace(replace(replace(replace(replace(replace(replace(s,
            '\\u000B', '\\u000b'), '\\u000E', '\\u000e'), '\\u000F', '\\u000f'),
            '\\u001A', '\\u001a'), '\\u001B', '\\u001b'), '\\u001C', '\\u001c'),
            '\\u001D', '\\u001d'), '\\u001E', '\\u001e'), '\\u001F', '\\u001f')
    end;
create or replace macro py_dumpable(s) as
    (not contains(s, '\\u') or not contains(s, '\\\\'))
    and not contains(s, 'NaN') and not contains(s, 'Infinity')
    and not regexp_matches(s, '[:,\\[]-?([0-9]{{17}}|0[.]0000|[0-9]+([.][0-9]+)?[eE])');
create or replace macro py_spaced(s) as replace(replace(s, ',', ', '), ':', ': ');
create or replace macro py_dumps_ascii(s, a) as
    case when json(py_spaced(a))::varchar = s then py_spaced(a)
        when not contains(a, '\\"') then array_to_string(list_transform(
            string_split(a, '"'), lambda part, i: case when i % 2 = 1
                then py_spaced(part) else part end), '"')
    end;
create or replace macro py_dumps(s) as
    case when py_dumpable(s) then py_dumps_ascii(s, py_lower_escapes(py_ascii(s))) end;

-- The number of times a character occurs in a text.
create or replace macro char_count(s, c) as length(s) - length(replace(s, c, ''));

-- Whether Python's json.loads reads a JSON text DuckDB reads: it also refuses trailing
-- commas, nan and inf in any case (it reads NaN, Infinity and -Infinity only: those are
-- left to it too), integers of more than 4,300 digits (sys.get_int_max_str_digits(); any
-- run of 1,000 digits is left to it, as RE2 counts no further), and nesting deeper than
-- its recursion limit allows (bounded here by the number of brackets).
create or replace macro py_readable(payload) as
    not regexp_matches(payload, '{JSON_PYTHON_REFUSES_SPLIT[0]}')
    and not regexp_matches(payload, '{JSON_PYTHON_REFUSES_SPLIT[1]}')
    and not regexp_matches(payload, '{JSON_PYTHON_REFUSES_SPLIT[2]}')
    and (strlen(payload) < 1000 or not regexp_matches(payload, '[0-9]{{1000}}'))
    and (strlen(payload) < 500 or char_count(payload, '[') + char_count(payload, '{{') < 500);

-- The payload when it is a JSON object that Python's json.loads reads the same way;
-- else null.
create or replace macro claimable_object(payload) as
    case when starts_with(payload, '{{') and json_valid(payload) and py_readable(payload)
    then payload end;
"""

LINES_SQL = """
with texts as (
    select f.source_file, f.provider_account, f.kind, string_split(t.content, chr(10)) as lines
    from read_text($paths) as t join landing_files as f on f.path = t.filename
), numbered as (
    select source_file, provider_account, kind,
        unnest(lines) as line, generate_subscripts(lines, 1) as line_number
    from texts
), stripped as (
    -- trim() with a character set is slow: only lines not already bare JSON pay for it
    select *, case when starts_with(line, '{') and ends_with(line, '}') then line
        else ascii_strip(line) end as payload
    from numbered
)
-- the line itself only where it differs from its payload (padded): half the memory
select source_file, provider_account, kind, line_number,
    case when line <> payload then line end as line, payload
from stripped
where payload <> ''
"""

PARSER_SETTINGS = "set disabled_optimizers = 'filter_pushdown'"
"""The embedded database's settings. A mapping filters each stage on columns the stage
computed (a field's type, a time read); pushed down, such a filter would be rewritten to
recompute those columns' expressions (``from_json``, ``json_keys``, the time patterns)
below the stage, so every line would pay for them twice. Written where they are, filters
run once on what was computed, and a mapping needs no ``materialized`` stage to fence them."""

LISTING_COLUMNS = ("path", "source_file", "provider_account", "kind")
"""The ``landing_files`` table the lines query joins: each file's path and names."""

SCAN_BATCH_ROWS = 4096
"""Lines per Arrow batch the mappings scan: the unit of their parallelism."""

EMPTY_LINES = pa.table(
    {
        "source_file": pa.array([], pa.string()),
        "provider_account": pa.array([], pa.string()),
        "kind": pa.array([], pa.string()),
        "line_number": pa.array([], pa.int64()),
        "line": pa.array([], pa.string()),
        "payload": pa.array([], pa.string()),
    }
)

EVENT_COLUMNS = [name for name in EVENTS_SCHEMA.names if name not in ("source_file", "ingested_at")]


def provider_mapping(package: str) -> str | None:
    """The SQL mapping shipped in a provider package, if it has one."""
    found = resources.files(package).joinpath(MAPPING_FILE)
    return found.read_text(encoding="utf-8") if found.is_file() else None


class DuckDBBulkParser:
    """A :class:`~mailers.ingest.BulkParser` running provider SQL mappings in DuckDB.

    ``mappings`` maps a provider kind to its SQL (see the module docstring). ``threads``
    bounds DuckDB's worker threads (default: DuckDB's, one per core).
    """

    def __init__(self, mappings: Mapping[str, str], *, threads: int | None = None) -> None:
        self.mappings = dict(mappings)
        self._con = duckdb.connect(":memory:")
        if threads:
            self._con.execute(f"set threads = {int(threads)}")
        self._con.execute(PARSER_SETTINGS)
        self._con.execute(MACROS)
        self._line_counts: dict[str, int] = {}

    def close(self) -> None:
        """Release the embedded database."""
        self._con.close()

    def __enter__(self) -> DuckDBBulkParser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def parse(self, files: Sequence[LandedFile]) -> BulkParsed:
        """The events of ``files`` whose kind has a mapping; the rest left for Python."""
        mapped = [f for f in files if f.kind in self.mappings]
        unread = [f for f in files if f.kind not in self.mappings]
        readable = self._read_lines(mapped)
        read = set(readable)
        unread += [f for f in mapped if f not in read]
        tables: list[pa.Table] = []
        leftovers: list[LeftoverLine] = []
        by_relative = {f.relative: f for f in readable}
        for kind in sorted({f.kind for f in readable}):
            events, left = self._map(kind)
            tables.append(events)
            leftovers += [
                LeftoverLine(by_relative[row["source_file"]], row["line_number"], row["line"])
                for row in left
            ]
        events = pa.concat_tables(tables) if tables else EVENTS_SCHEMA.empty_table()
        return BulkParsed(events=events, leftovers=leftovers, unread=unread)

    def _read_lines(self, files: Sequence[LandedFile]) -> list[LandedFile]:
        """Load the lines of ``files`` into ``landed_lines``; the files it could read."""
        if not files:
            self._load(())
            return []
        try:
            self._load(files)
            return list(files)
        except duckdb.InvalidInputException:
            pass  # some file is not UTF-8 text: find which, file by file
        readable = []
        for landed in files:
            try:
                self._load((landed,))
                readable.append(landed)
            except duckdb.InvalidInputException:
                continue
        self._load(readable)
        return readable

    def _load(self, files: Sequence[LandedFile]) -> None:
        listing = pa.table(
            {
                "path": [str(f.path) for f in files],
                "source_file": [f.relative for f in files],
                "provider_account": [f.account for f in files],
                "kind": [f.kind for f in files],
            },
            schema=pa.schema([(name, pa.string()) for name in LISTING_COLUMNS]),
        )
        self._con.register("landing_files", listing)
        try:
            if files:
                query = self._con.sql(LINES_SQL, params={"paths": [str(f.path) for f in files]})
                lines = query.to_arrow_table()
            else:
                lines = EMPTY_LINES
        finally:
            self._con.unregister("landing_files")
        # Small record batches: DuckDB scans an Arrow table's batches in parallel, where a
        # table's rows (one row group up to 122,880 of them) would map on one thread.
        batches = lines.to_batches(max_chunksize=SCAN_BATCH_ROWS)
        self._line_counts = {
            item["values"]: item["counts"] for item in lines["kind"].value_counts().to_pylist()
        }
        self._con.register("landed_lines", pa.Table.from_batches(batches, lines.schema))

    def _map(self, kind: str) -> tuple[pa.Table, list[dict[str, Any]]]:
        """Run ``kind``'s mapping over its lines: (events, the lines it left over)."""
        con = self._con
        con.execute(
            "create or replace temp view provider_lines as "
            "select source_file, provider_account, line_number, line, payload "
            f"from landed_lines where kind = {_literal(kind)}"
        )
        columns = ", ".join(EVENT_COLUMNS)
        # One query straight to Arrow (a newline ends a mapping's trailing comment).
        mapped = con.sql(
            f"select {columns}, source_file, $now as ingested_at, line_number "
            f"from ({self.mappings[kind]}\n) as mapped",
            params={"now": utcnow()},
        ).to_arrow_table()
        events = mapped.drop_columns(["line_number"]).cast(EVENTS_SCHEMA)
        con.register("claimed_lines", mapped.select(["source_file", "line_number"]))
        try:
            # A mapping gives a line all its events or none: when as many distinct lines
            # have events as there are lines, none is left over and the anti-join is not
            # needed.
            claimed = con.sql(
                "select count(*) from (select distinct source_file, line_number "
                "from claimed_lines) as c"
            ).fetchall()[0][0]
            if claimed == self._line_counts.get(kind, 0):
                return events, []
            left = con.sql(
                "select l.source_file, l.line_number, "
                "encode(coalesce(l.line, l.payload)) as line "
                "from provider_lines l anti join claimed_lines m "
                "on m.source_file = l.source_file and m.line_number = l.line_number "
                "order by l.source_file, l.line_number"
            ).to_arrow_table()
        finally:
            con.unregister("claimed_lines")
        return events, left.to_pylist()
