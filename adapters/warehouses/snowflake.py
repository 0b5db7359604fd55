"""Snowflake through snowflake-connector-python: Arrow out, staged ``COPY INTO`` in.

One session (autocommit, ``qmark`` parameters, ``TIMEZONE = UTC``) runs everything:

* **Reads** come back as Arrow: ``fetch_arrow_batches`` / ``fetch_arrow_all`` on the real
  connector (result chunks, so a stream's memory stays bounded). A cursor without them
  (fakesnow's) falls back to ``fetchmany(batch_rows)``, typed from the result metadata, which
  still streams batch by batch.
* **Appends** never insert row by row: the rows are written as one Parquet file, ``PUT`` on
  the session's temporary stage under a fresh path (so COPY's load history never skips it)
  and loaded with one ``COPY INTO ... PURGE = TRUE``, as ``write_pandas`` does, but on a
  stage created once per session: creating one per call is DDL, and DDL inside a
  transaction commits it (https://docs.snowflake.com/en/sql-reference/transactions).
* **Staged rows** (:meth:`SnowflakeWarehouse.staged`) are COPYd into one scratch table of
  ``(stage_id, row variant)`` and read through a typed subquery, then deleted: DML only,
  so a staged block inside a transaction commits or rolls back with it.
* **Identifiers**: Mailers writes lower-case names, quoted or not; Snowflake folds unquoted
  names to upper case. :meth:`SnowflakeDialect.quote` therefore writes a lower-case name
  as its upper-case quoted form (the same object either way, and what dbt's unquoted
  ``mailers.send_ledger`` finds), and result columns named in upper case come back
  lower-cased.
* **JSON**: an Arrow ``pa.json_()`` column becomes ``VARIANT`` (loaded with
  ``parse_json``). Mailers' raw payloads are ``pa.string()``: they are the provider's bytes
  verbatim (VARIANT would re-serialize them and refuse a line that is not JSON), so they
  stay ``VARCHAR``; ``parse_json(raw_payload):field`` reads them.

Snowflake does not enforce primary keys (declared for documentation only) and DDL is never
transactional; :data:`CAPABILITIES` says so, and :meth:`SnowflakeWarehouse.execute` refuses
DDL inside :meth:`~SnowflakeWarehouse.transaction` instead of letting it commit silently.

The connector is the ``snowflake`` extra, imported when a warehouse is opened.
"""

from __future__ import annotations

import re
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from adapters.warehouses.ddl import create_or_extend_table
from mailers.errors import ConfigError, WarehouseError
from mailers.snowflake_config import SnowflakeWarehouseConfig
from mailers.warehouse import WORK_SCHEMA, BulkLoad, WarehouseCapabilities

EXTRA = "snowflake"
"""The optional dependency group that brings snowflake-connector-python."""


CAPABILITIES = WarehouseCapabilities(
    engine="snowflake",
    transactions=True,
    # https://docs.snowflake.com/en/sql-reference/transactions: a DDL statement inside an
    # explicit transaction commits it first and runs as a transaction of its own.
    transactional_ddl=False,
    single_writer=False,
    # https://docs.snowflake.com/en/sql-reference/constraints-overview: only NOT NULL is
    # enforced; PRIMARY KEY and UNIQUE are recorded, not checked.
    enforces_primary_keys=False,
    # A failed statement is rolled back alone; the transaction stays open.
    error_aborts_transaction=False,
    json_type="variant",
    bulk_load=BulkLoad.STAGED_COPY,
    # https://docs.snowflake.com/en/user-guide/query-size-limits: SQL text up to 1 MB.
    max_statement_bytes=1 << 20,
    max_parameters=None,
)

_SIMPLE = re.compile(r"^[a-z_][a-z0-9_$]*$")
"""A lower-case name Snowflake would fold to upper case if it were unquoted."""

_DDL = re.compile(r"^\s*(create|alter|drop|truncate|undrop|comment|grant|revoke)\b", re.I)

_STAGE = "MAILERS_SESSION_STAGE"
"""The session's temporary internal stage (dropped by Snowflake when the session ends)."""

_SCRATCH = "_mailers_staged_rows"
"""Table in ``mailers_work`` holding the rows of open :meth:`SnowflakeWarehouse.staged`
blocks, one ``stage_id`` per block."""

# Result metadata type codes (snowflake.connector.constants.FIELD_TYPES).
_FIXED, _REAL, _TEXT, _DATE = 0, 1, 2, 3
_TIMESTAMP, _VARIANT, _TIMESTAMP_LTZ, _TIMESTAMP_TZ, _TIMESTAMP_NTZ = 4, 5, 6, 7, 8
_OBJECT, _ARRAY, _BINARY, _TIME, _BOOLEAN = 9, 10, 11, 12, 13


def _text(value: str) -> str:
    """A Snowflake string constant: backslash is an escape character there."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _identifier_name(identifier: str) -> str:
    """The name Snowflake stores for one of Mailers' identifiers."""
    return identifier.upper() if _SIMPLE.match(identifier) else identifier


def _result_name(name: str) -> str:
    """A result column's name as Mailers knows it (upper-case folds back to lower)."""
    return name.lower() if name == name.upper() else name


class SnowflakeDialect:
    """Snowflake's spellings of the functions that differ between engines."""

    def quote(self, identifier: str) -> str:
        return '"' + _identifier_name(identifier).replace('"', '""') + '"'

    def regexp_matches(self, expr: str, pattern: str) -> str:
        # REGEXP_LIKE anchors the pattern at both ends; REGEXP_INSTR finds it anywhere
        # (https://docs.snowflake.com/en/sql-reference/functions/regexp_like).
        return f"(regexp_instr({expr}, {_text(pattern)}) > 0)"

    def regexp_group(self, expr: str, pattern: str) -> str:
        # 'e' with group 1 returns the first group; no match is NULL where DuckDB's
        # regexp_extract gives '' (https://docs.snowflake.com/en/sql-reference/functions/regexp_substr).
        return (
            f"(case when {expr} is null then null "
            f"else coalesce(regexp_substr({expr}, {_text(pattern)}, 1, 1, 'e', 1), '') end)"
        )

    def trim_chars(self, expr: str, characters: str) -> str:
        if not characters or any(c in characters for c in "]\\^-["):
            return f"trim({expr}, {_text(characters)})"
        # A bracket expression of the characters, each as chr(n) so no escaping applies;
        # REGEXP_REPLACE replaces every occurrence by default, so both ends go.
        chars = " || ".join(f"chr({ord(c)})" for c in characters)
        return f"regexp_replace({expr}, '^[' || {chars} || ']+|[' || {chars} || ']+$', '')"

    def md5_hex(self, expr: str) -> str:
        return f"md5({expr})"

    def sha256_hex(self, expr: str) -> str:
        # SHA2 hashes the UTF-8 bytes and returns lower-case hex.
        return f"sha2({expr}, 256)"

    def timestamp_text(self, expr: str) -> str:
        return f"to_char({expr}, 'YYYY-MM-DD HH24:MI:SS.FF6')"

    def star_except(self, alias: str, columns: Sequence[str], available: Sequence[str]) -> str:
        # https://docs.snowflake.com/en/sql-reference/sql/select: <alias>.* EXCLUDE (...).
        return f"{alias}.* exclude ({', '.join(self.quote(c) for c in columns)})"

    def json_text(self, expr: str, key: str) -> str:
        path = key if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else '["' + key + '"]'
        return f"json_extract_path_text({expr}, {_text(path)})"


def _import_connector() -> Any:
    try:
        import snowflake.connector
    except ImportError as err:
        raise ConfigError(
            f"warehouse.kind 'snowflake' needs snowflake-connector-python: "
            f"pip install 'mailers[{EXTRA}]' ({err})"
        ) from err
    return snowflake.connector


def _snowflake_type(arrow_type: pa.DataType) -> str:
    if isinstance(arrow_type, pa.JsonType):
        return "variant"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "varchar"
    if pa.types.is_integer(arrow_type):
        return "number(38, 0)"
    if pa.types.is_floating(arrow_type):
        return "float"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp_tz(6)" if arrow_type.tz else "timestamp_ntz(6)"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_dictionary(arrow_type):
        return _snowflake_type(arrow_type.value_type)
    if pa.types.is_null(arrow_type):
        return "varchar"
    raise WarehouseError(f"Snowflake: no column type for Arrow type {arrow_type}")


def _arrow_type(meta: Any) -> pa.DataType:
    """The Arrow type of a result column from its metadata."""
    code = meta.type_code
    if code == _FIXED:
        return pa.int64() if not meta.scale else pa.float64()
    if code == _REAL:
        return pa.float64()
    if code == _DATE:
        return pa.date32()
    if code in (_TIMESTAMP, _TIMESTAMP_NTZ):
        return pa.timestamp("us")
    if code in (_TIMESTAMP_LTZ, _TIMESTAMP_TZ):
        return pa.timestamp("us", tz="UTC")
    if code == _BOOLEAN:
        return pa.bool_()
    if code == _BINARY:
        return pa.binary()
    if code == _TIME:
        return pa.time64("us")
    return pa.string()


def _value(value: Any, arrow_type: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_string(arrow_type) and not isinstance(value, str):
        if isinstance(value, datetime | date | time):
            return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
        return str(value)
    if isinstance(value, Decimal):
        return int(value) if pa.types.is_integer(arrow_type) else float(value)
    return value


def _batch(rows: Sequence[Sequence[Any]], description: Sequence[Any]) -> pa.RecordBatch:
    types = [_arrow_type(meta) for meta in description]
    arrays = [pa.array([_value(row[i], t) for row in rows], type=t) for i, t in enumerate(types)]
    return pa.RecordBatch.from_arrays(arrays, names=[_result_name(m.name) for m in description])


def _empty_schema(description: Sequence[Any]) -> pa.Schema:
    return pa.schema([pa.field(_result_name(m.name), _arrow_type(m)) for m in description])


def _normalize_type(arrow_type: pa.DataType) -> pa.DataType:
    """Arrow as the other engines give it: timestamps in microseconds, NUMBER(p, 0) as int64."""
    if pa.types.is_timestamp(arrow_type) and arrow_type.unit != "us":
        return pa.timestamp("us", tz=arrow_type.tz)
    if pa.types.is_decimal(arrow_type):
        return pa.int64() if arrow_type.scale == 0 else pa.float64()
    return arrow_type


def _normalize(table: pa.Table) -> pa.Table:
    """A connector Arrow result with Mailers' column names and types."""
    fields = [
        pa.field(_result_name(f.name), _normalize_type(f.type), nullable=True) for f in table.schema
    ]
    return table.rename_columns([f.name for f in fields]).cast(pa.schema(fields))


def _select_list(columns: Sequence[pa.Field], source: str, quote: Any) -> str:
    """Typed columns of a Parquet row held as an object in ``source`` (``$1`` of a staged
    file, or a VARIANT column)."""
    parts = []
    for f in columns:
        element = f'{source}:"{f.name}"'
        if isinstance(f.type, pa.JsonType):
            parts.append(f"parse_json({element}::varchar) as {quote(f.name)}")
        else:
            parts.append(f"{element}::{_snowflake_type(f.type)} as {quote(f.name)}")
    return ", ".join(parts)


def _parquet_ready(data: pa.Table) -> pa.Table:
    """JSON columns as their text (Parquet has no JSON logical type the COPY reads)."""
    columns = [
        column.cast(pa.string()) if isinstance(column.type, pa.JsonType) else column
        for column in data.columns
    ]
    return pa.Table.from_arrays(columns, names=data.column_names)


class SnowflakeWarehouse:
    """A Snowflake database behind the ``Warehouse`` protocol, on one connector session."""

    def __init__(
        self, connection: Any, *, read_only: bool = False, label: str = "snowflake"
    ) -> None:
        self.connector = _import_connector()
        self.connection = connection
        self.label = label
        self.read_only = read_only
        self.dialect = SnowflakeDialect()
        self.capabilities = CAPABILITIES
        self._transaction_depth = 0
        self._depth_lock = threading.Lock()
        self._scratch_ready = False
        # fakesnow lets DuckDB's own errors (a NOT NULL violation) through unwrapped.
        self._errors: tuple[type[BaseException], ...] = (self.connector.Error, duckdb.Error)
        # Qualified: CREATE SCHEMA makes the new schema the session's current one.
        where = self.query("select current_database() as db, current_schema() as sch")
        database, schema = where["db"][0].as_py(), where["sch"][0].as_py()
        if database is None or schema is None:
            raise WarehouseError(
                f"Snowflake ({label}): the session has no current database and schema "
                "(set warehouse.database and warehouse.schema)"
            )
        self._stage = ".".join(f'"{part}"' for part in (database, schema, _STAGE))
        if not read_only:
            # Once, outside any transaction: creating a stage is DDL.
            self.execute(f"create temporary stage if not exists {self._stage}")

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> SnowflakeWarehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def relation(self, schema: str, table: str) -> str:
        return f"{self.dialect.quote(schema)}.{self.dialect.quote(table)}"

    def _run(self, sql: str, params: Sequence[Any]) -> Any:
        if self._transaction_depth and _DDL.match(sql):
            raise WarehouseError(
                f"Snowflake ({self.label}): DDL inside a transaction would commit it; "
                f"run it before the transaction: {sql.strip().splitlines()[0][:120]}"
            )
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql, list(params) if params else None)
        except self._errors as err:
            cursor.close()
            raise WarehouseError(f"Snowflake ({self.label}): {_cause(err)}") from err
        return cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = self._run(sql, params)
        try:
            description = cursor.description or ()
            # DML answers one row of counts named "number of rows inserted/updated/...".
            counted = [
                i for i, m in enumerate(description) if m.name.lower().startswith("number of rows")
            ]
            if not counted:
                return 0
            row = cursor.fetchone()
            return sum(int(row[i] or 0) for i in counted) if row else 0
        finally:
            cursor.close()

    def replace_table(self, schema: str, table: str, query: str) -> str:
        target = self.relation(schema, table)
        self.execute(f"create or replace table {target} as\n{query}")
        return target

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        cursor = self._run(sql, params)
        try:
            if not cursor.description:
                return pa.table({})
            if hasattr(cursor, "fetch_arrow_all"):
                table = cursor.fetch_arrow_all(force_return_table=True)
                return _normalize(table)
            rows = cursor.fetchall()
            if not rows:
                return _empty_schema(cursor.description).empty_table()
            return pa.Table.from_batches([_batch(rows, cursor.description)])
        except self._errors as err:
            raise WarehouseError(f"Snowflake ({self.label}): {_cause(err)}") from err
        finally:
            cursor.close()

    def stream(
        self, sql: str, params: Sequence[Any] = (), batch_rows: int = 10_000
    ) -> Iterator[pa.RecordBatch]:
        # A cursor of its own: the result's chunks are fetched by URL, so statements on
        # other cursors of the session between batches do not disturb it.
        cursor = self._run(sql, params)
        try:
            if hasattr(cursor, "fetch_arrow_batches"):
                for table in cursor.fetch_arrow_batches():
                    yield from _normalize(table).to_batches(max_chunksize=batch_rows)
                return
            while rows := cursor.fetchmany(batch_rows):
                yield _batch(rows, cursor.description)
        except self._errors as err:
            raise WarehouseError(f"Snowflake ({self.label}): {_cause(err)}") from err
        finally:
            cursor.close()

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise WarehouseError(f"Snowflake ({self.label}) is open read-only: cannot {what}")

    @contextmanager
    def _put(self, data: pa.Table) -> Iterator[str]:
        """Upload ``data`` as one Parquet file; yield its stage path (removed on failure)."""
        path = f"@{self._stage}/{uuid.uuid4().hex}/"
        with tempfile.TemporaryDirectory(prefix="mailers-snowflake-") as tmp:
            local = Path(tmp) / "rows.parquet"
            pq.write_table(_parquet_ready(data), local)
            self.execute(
                f"put {_text('file://' + local.as_posix())} {path} "
                "auto_compress = false overwrite = true"
            )
        try:
            yield path
        except BaseException:
            # COPY's PURGE removes a file it loaded; this removes one a failed COPY left.
            # Only then: a statement more per append, and one fakesnow cannot parse (its
            # error would abort the caller's open transaction).
            with suppress(WarehouseError):
                self.execute(f"remove {path}")
            raise

    def _copy(self, target: str, columns: str, select: str, path: str, rows: int) -> None:
        sql = (
            f"copy into {target} ({columns}) from (select {select} from {path}) "
            "file_format = (type = parquet use_logical_type = true) "
            "on_error = abort_statement purge = true"
        )
        cursor = self._run(sql, ())
        try:
            names = [m.name.lower() for m in cursor.description or ()]
            loaded = sum(int(r[names.index("rows_loaded")] or 0) for r in cursor.fetchall())
        finally:
            cursor.close()
        if loaded != rows:
            raise WarehouseError(
                f"Snowflake COPY into {target} loaded {loaded} of {rows} rows ({self.label})"
            )

    def append(self, schema: str, table: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        self._writable(f"append to {schema}.{table}")
        q = self.dialect.quote
        columns = ", ".join(q(name) for name in data.column_names)
        select = ", ".join(
            f'parse_json($1:"{f.name}"::varchar)'
            if isinstance(f.type, pa.JsonType)
            else f'$1:"{f.name}"::{_snowflake_type(f.type)}'
            for f in data.schema
        )
        with self._put(data) as path:
            try:
                self._copy(self.relation(schema, table), columns, select, path, data.num_rows)
            except WarehouseError as err:
                raise WarehouseError(f"Snowflake append to {schema}.{table}: {err}") from err

    def ensure_table(
        self, schema: str, table: str, columns: pa.Schema, primary_key: Sequence[str] = ()
    ) -> None:
        self._writable(f"create {schema}.{table}")
        create_or_extend_table(self, schema, table, columns, primary_key, _snowflake_type)

    def columns(self, schema: str, table: str) -> list[str] | None:
        names = self.query(
            """
            select column_name from information_schema.columns
            where table_schema = ? and table_name = ?
            order by ordinal_position
            """,
            [_identifier_name(schema), _identifier_name(table)],
        ).column(0)
        return [_result_name(str(name)) for name in names.to_pylist()] or None

    def _ensure_scratch(self) -> None:
        if self._scratch_ready:
            return
        if self.columns(WORK_SCHEMA, _SCRATCH) is None:
            q = self.dialect.quote
            self.execute(f"create schema if not exists {q(WORK_SCHEMA)}")
            self.execute(
                f"create table if not exists {self.relation(WORK_SCHEMA, _SCRATCH)} "
                f"({q('stage_id')} varchar not null, {q('row')} variant)"
            )
        self._scratch_ready = True

    @contextmanager
    def staged(self, data: pa.Table) -> Iterator[str]:
        self._writable("stage rows")
        self._ensure_scratch()
        scratch = self.relation(WORK_SCHEMA, _SCRATCH)
        stage_id = uuid.uuid4().hex
        q = self.dialect.quote
        if data.num_rows:
            with self._put(data) as path:
                self._copy(
                    scratch,
                    f"{q('stage_id')}, {q('row')}",
                    # The row as an object, named field by field (fakesnow cannot COPY a
                    # bare $1; Snowflake reads both the same).
                    f"{_text(stage_id)}, object_construct_keep_null("
                    + ", ".join(f'{_text(n)}, $1:"{n}"' for n in data.column_names)
                    + ")",
                    path,
                    data.num_rows,
                )
        select = _select_list(list(data.schema), q("row"), q) or "null as _empty"
        try:
            yield f"(select {select} from {scratch} where {q('stage_id')} = {_text(stage_id)})"
        finally:
            if data.num_rows:
                self.execute(f"delete from {scratch} where {q('stage_id')} = ?", [stage_id])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._depth_lock:
            outer = self._transaction_depth == 0
            self._transaction_depth += 1
        try:
            if not outer:
                yield
                return
            self.execute("begin transaction")
            try:
                yield
            except BaseException:
                self.execute("rollback")
                raise
            self.execute("commit")
        finally:
            with self._depth_lock:
                self._transaction_depth -= 1


def _cause(err: BaseException) -> str:
    return str(getattr(err, "msg", None) or err).strip()


def open_snowflake(
    config: SnowflakeWarehouseConfig, *, read_only: bool = False
) -> SnowflakeWarehouse:
    """Connect to the account and database ``config`` names (secrets resolved now)."""
    connector = _import_connector()
    arguments = config.connect_arguments()
    try:
        connection = connector.connect(
            **arguments,
            paramstyle="qmark",
            autocommit=True,
            session_parameters={"TIMEZONE": "UTC", "QUERY_TAG": config.query_tag},
        )
    except connector.Error as err:
        raise WarehouseError(
            f"cannot open Snowflake warehouse {config.describe()}: {_cause(err)}"
        ) from err
    return SnowflakeWarehouse(connection, read_only=read_only, label=config.describe())
