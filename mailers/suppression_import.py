"""Bulk suppression imports: a CSV file or a warehouse relation, all or nothing.

The rows are checked in one set-based statement with the audience's own address rule
(trim, lower-case the domain, the syntax pattern); any bad row refuses the whole import,
naming each bad row (by line for a file). Otherwise one statement appends every distinct
address not already active at the scope, in one transaction with its audit record.

A CSV file has a header row with an ``address`` (or ``email``) column and may have a
``reason`` column (a row's own reason, else the import's). Blank lines are skipped; a
quoted value spanning lines is refused, so line numbers stay exact. A file of no rows
imports nothing.
"""

from __future__ import annotations

import csv
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from mailers.addresses import ADDRESS_PATTERN, MAX_ADDRESS_LENGTH, WHITESPACE
from mailers.audit import AuditAction, AuditRecord, append_audit
from mailers.clock import stamp
from mailers.suppression import (
    SUPPRESSIONS_TABLE,
    SuppressionAction,
    SuppressionError,
    SuppressionSource,
    SuppressionTarget,
    active_sql,
)
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

ADDRESS_COLUMNS = ("address", "email")
REASON_COLUMN = "reason"
SHOWN_BAD_ROWS = 20


@dataclass(frozen=True)
class ImportReport:
    """What one import did."""

    origin: str
    rows: int
    added: int
    already_suppressed: int
    duplicates: int
    blank: int = 0


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def read_csv(path: Path) -> tuple[pa.Table, int]:
    """The file's rows as ``line, address, reason`` (strings) and the count of blank lines.

    Raises naming the file and line for a missing header column, a row with the wrong
    number of fields, or a value spanning lines.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), None)
    except (OSError, UnicodeDecodeError) as err:
        raise SuppressionError(f"cannot read {path}: {err}") from err
    names = [name.strip() for name in header or []]
    lowered = [name.lower() for name in names]
    address_column = next((names[lowered.index(c)] for c in ADDRESS_COLUMNS if c in lowered), None)
    if address_column is None:
        raise SuppressionError(
            f"{path}:1: the header has no address column (one of {', '.join(ADDRESS_COLUMNS)}; "
            f"it has: {', '.join(names) or 'nothing'})"
        )
    invalid: list[str] = []

    def bad_row(row: pacsv.InvalidRow) -> str:
        if row.text.strip():
            invalid.append(
                f"line {row.number}: {row.actual_columns} fields where the header has "
                f"{row.expected_columns}: {row.text[:120]!r}"
            )
        return "skip"

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False, column_names=names, skip_rows=1),
            parse_options=pacsv.ParseOptions(invalid_row_handler=bad_row, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, OSError) as err:
        raise SuppressionError(f"cannot read {path} as CSV: {err}") from err
    if invalid:
        raise SuppressionError(_listed(f"{path}: rows with the wrong number of fields", invalid))
    # Row i of the table is line i + 2 (after the header) while no value spans lines.
    lines = pa.array(range(2, table.num_rows + 2), pa.int64())
    addresses = table[address_column]
    reason_name = names[lowered.index(REASON_COLUMN)] if REASON_COLUMN in lowered else None
    reasons = table[reason_name] if reason_name else pa.nulls(table.num_rows, pa.string())
    rows = pa.table({"line": lines, "address": addresses, "reason": reasons})
    # Whole-column checks (Arrow compute), never a Python loop over the rows.
    spans = _any_column(table, lambda c: pc.match_substring_regex(c, "[\r\n]"), pc.or_)
    if pc.any(spans).as_py():
        first = pc.index(spans, True).as_py() + 2
        raise SuppressionError(
            f"{path}: a quoted value spans lines (line {first} onwards); "
            "suppression files have one row per line"
        )
    blank = _any_column(table, lambda c: pc.equal(pc.utf8_trim_whitespace(c), ""), pc.and_)
    kept = rows.filter(pc.invert(blank))
    return kept, rows.num_rows - kept.num_rows


def _any_column(
    table: pa.Table,
    test: Callable[[pa.ChunkedArray], pa.ChunkedArray],
    combine: Callable[[pa.ChunkedArray, pa.ChunkedArray], pa.ChunkedArray],
) -> pa.ChunkedArray:
    """``test`` applied to every column of ``table``, combined row-wise with ``combine``."""
    return functools.reduce(combine, (test(column) for column in table.columns))


def _listed(title: str, problems: list[str], total: int | None = None) -> str:
    shown = problems[:SHOWN_BAD_ROWS]
    more = (len(problems) if total is None else total) - len(shown)
    return (
        f"{title}; nothing was imported:\n  "
        + "\n  ".join(shown)
        + (f"\n  ... and {more} more" if more else "")
    )


def import_csv(
    warehouse: Warehouse,
    path: Path,
    target: SuppressionTarget,
    *,
    reason: str,
    actor: str,
    config_hash: str,
) -> ImportReport:
    """Import every address of the CSV file at ``path`` for ``target``, or none."""
    rows, blank = read_csv(path)
    origin = f"file:{path.resolve()}"
    with warehouse.staged(rows) as staged:
        report = _import(
            warehouse, staged, origin, target, reason=reason, actor=actor, config_hash=config_hash
        )
    return ImportReport(**{**report.__dict__, "blank": blank})


def import_relation(
    warehouse: Warehouse,
    relation: str,
    target: SuppressionTarget,
    *,
    reason: str,
    actor: str,
    config_hash: str,
) -> ImportReport:
    """Import every address of the warehouse relation ``schema.table`` (a table or a dbt
    model) for ``target``, or none."""
    schema, _, table = relation.partition(".")
    columns = warehouse.columns(schema, table) if schema and table else None
    if columns is None:
        raise SuppressionError(
            f"no relation {relation!r} in the warehouse (write it as schema.table)"
        )
    lowered = {c.lower(): c for c in columns}
    address_column = next((lowered[c] for c in ADDRESS_COLUMNS if c in lowered), None)
    if address_column is None:
        raise SuppressionError(
            f"relation {relation} has no address column (one of {', '.join(ADDRESS_COLUMNS)}; "
            f"it has: {', '.join(columns)})"
        )
    q = warehouse.dialect.quote
    reason_expr = (
        f"cast({q(lowered[REASON_COLUMN])} as varchar)" if REASON_COLUMN in lowered else "null"
    )
    source = (
        f"(select cast(null as bigint) as line, cast({q(address_column)} as varchar) as address, "
        f"{reason_expr} as reason from {warehouse.relation(schema, table)})"
    )
    return _import(
        warehouse,
        source,
        f"relation:{schema}.{table}",
        target,
        reason=reason,
        actor=actor,
        config_hash=config_hash,
    )


def _import(
    warehouse: Warehouse,
    source: str,
    origin: str,
    target: SuppressionTarget,
    *,
    reason: str,
    actor: str,
    config_hash: str,
) -> ImportReport:
    if not reason.strip():
        raise SuppressionError(f"importing suppressions from {origin} needs a reason (--reason)")
    d = warehouse.dialect
    trimmed = d.trim_chars("address", WHITESPACE)
    local = d.regexp_group("trimmed", "^(.*)@[^@]*$")
    domain = d.regexp_group("trimmed", "@([^@]*)$")
    checked = f"""
        select line, address, reason, normalized,
            case
                when normalized is null then 'no address'
                when length(normalized) > {MAX_ADDRESS_LENGTH}
                  or not ({d.regexp_matches("normalized", ADDRESS_PATTERN)})
                    then 'invalid address'
            end as problem
        from (
            select line, address, reason,
                case when trimmed like '%@%' then {local} || '@' || lower({domain})
                     else trimmed end as normalized
            from (select line, address, reason, nullif({trimmed}, '') as trimmed
                  from {source} as src) as t
        ) as n
    """
    bad = warehouse.query(
        f"select line, address, problem from ({checked}) as c where problem is not null "
        f"order by line, address limit {SHOWN_BAD_ROWS + 1}"
    ).to_pylist()
    if bad:
        total = warehouse.query(
            f"select count(*) as n from ({checked}) as c where problem is not null"
        )["n"][0].as_py()
        where = origin.removeprefix("file:").removeprefix("relation:")
        problems = [
            (f"line {row['line']}: " if row["line"] is not None else "row: ")
            + f"{row['problem']} {row['address']!r}"
            for row in bad[:SHOWN_BAD_ROWS]
        ]
        raise SuppressionError(_listed(f"{where}: {total} bad rows", problems, total))
    return _append(warehouse, checked, origin, target, reason, actor, config_hash)


def _append(
    warehouse: Warehouse,
    checked: str,
    origin: str,
    target: SuppressionTarget,
    reason: str,
    actor: str,
    config_hash: str,
) -> ImportReport:
    """Append the checked rows' distinct addresses not yet active at ``target``."""
    d = warehouse.dialect
    table = warehouse.relation(MAILERS_SCHEMA, SUPPRESSIONS_TABLE)
    import_id = uuid.uuid4().hex
    workspace, stream = _text(target.workspace or ""), _text(target.stream or "")
    distinct = f"""
        select lower(normalized) as address, min(line) as line, min(reason) as reason
        from ({checked}) as c group by lower(normalized)
    """
    tally = warehouse.query(
        f"select count(*) as n_rows, count(distinct lower(normalized)) as n_distinct "
        f"from ({checked}) as c"
    ).to_pylist()[0]
    line_suffix = "case when u.line is null then '' else ':' || cast(u.line as varchar) end"
    insert = f"""
        insert into {table} (suppression_id, address, scope, workspace, stream, source, reason,
            event_id, created_at, action, actor, provider_account, origin, override_complaint,
            control_id)
        select
            {d.md5_hex(_text(import_id + "|") + " || u.address")},
            u.address,
            {_text(target.scope)},
            {_text(target.workspace) if target.workspace else "null"},
            {_text(target.stream) if target.stream else "null"},
            {_text(SuppressionSource.IMPORT)},
            coalesce(nullif(trim(u.reason), ''), {_text(reason)}),
            null,
            ?,
            {_text(SuppressionAction.ADD)},
            {_text(actor)},
            null,
            {_text(origin)} || {line_suffix},
            null,
            null
        from ({distinct}) as u
        where not exists (
            select 1 from ({active_sql(warehouse)}) as a
            where a.address = u.address and a.scope = {_text(target.scope)}
              and coalesce(a.workspace, '') = {workspace} and coalesce(a.stream, '') = {stream}
        )
    """
    with warehouse.transaction():
        added = warehouse.execute(insert, [stamp()])
        report = ImportReport(
            origin=origin,
            rows=tally["n_rows"],
            added=added,
            already_suppressed=tally["n_distinct"] - added,
            duplicates=tally["n_rows"] - tally["n_distinct"],
        )
        append_audit(
            warehouse,
            [
                AuditRecord(
                    run_id=f"import:{import_id}",
                    actor=actor,
                    action=AuditAction.SUPPRESSION_IMPORT,
                    config_hash=config_hash,
                    counts={
                        "rows": report.rows,
                        "added": report.added,
                        "already_suppressed": report.already_suppressed,
                        "duplicates": report.duplicates,
                    },
                    detail={"origin": origin, "import_id": import_id},
                    workspace=target.workspace,
                    stream=target.stream,
                    scope=target.key,
                    reason=reason,
                )
            ],
        )
    return report
