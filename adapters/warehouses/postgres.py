"""PostgreSQL (15 or later) through SQLAlchemy and psycopg 3, for teams whose warehouse is
Postgres.

One connection (autocommit, like DuckDB's) runs statements and transactions; each
:meth:`PostgresWarehouse.stream` reads through a server-side cursor on a connection of its
own from SQLAlchemy's pool, so appends on the main connection do not disturb it. Bulk
appends go through ``COPY ... FROM STDIN`` as CSV that pyarrow writes (never row-wise
inserts); reads come back as Arrow, typed from the result's column types. The session runs
in UTC so ``timestamp`` columns hold UTC like everywhere else in Mailers.

SQLAlchemy and psycopg are the ``postgres`` extra, imported when a warehouse is opened.
"""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.csv as pacsv

from adapters.warehouses.ddl import create_or_extend_table
from mailers.config import PostgresWarehouseConfig
from mailers.errors import ConfigError, WarehouseError
from mailers.warehouse import BulkLoad, WarehouseCapabilities

if TYPE_CHECKING:
    import psycopg
    import sqlalchemy

CAPABILITIES = WarehouseCapabilities(
    engine="postgres",
    transactions=True,
    transactional_ddl=True,
    single_writer=False,
    enforces_primary_keys=True,
    error_aborts_transaction=True,
    json_type="jsonb",
    bulk_load=BulkLoad.COPY,
    # https://www.postgresql.org/docs/15/limits.html: a query string is limited by the
    # 1 GB allocation limit; the wire protocol counts bind parameters in an int16.
    max_statement_bytes=1 << 30,
    max_parameters=65_535,
)

EXTRA = "postgres"
"""The optional dependency group that brings SQLAlchemy and psycopg."""

_ARROW_TO_POSTGRES = {
    pa.string(): "text",
    pa.large_string(): "text",
    pa.int64(): "bigint",
    pa.int32(): "integer",
    pa.int16(): "smallint",
    pa.float64(): "double precision",
    pa.float32(): "real",
    pa.bool_(): "boolean",
    pa.timestamp("us"): "timestamp",
    pa.date32(): "date",
}

# Result column type OIDs (pg_type.oid, stable across versions) and their Arrow types.
_OID_TO_ARROW: dict[int, pa.DataType] = {
    16: pa.bool_(),
    18: pa.string(),  # "char"
    19: pa.string(),  # name (information_schema identifiers)
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    25: pa.string(),
    26: pa.int64(),  # oid
    700: pa.float32(),
    701: pa.float64(),
    1042: pa.string(),  # bpchar
    1043: pa.string(),  # varchar
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
}
_NUMERIC_OID = 1700

COPY_BATCH_ROWS = 50_000
"""Rows turned into CSV at a time for ``COPY`` (bounds the memory an append takes)."""


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class PostgresDialect:
    """Postgres's spellings of the functions that differ between engines."""

    def quote(self, identifier: str) -> str:
        return '"' + identifier.replace('"', '""') + '"'

    def regexp_matches(self, expr: str, pattern: str) -> str:
        # POSIX advanced regular expressions: the RE2 subset Mailers' patterns use
        # (classes, bounded repeats, anchors) means the same.
        return f"({expr} ~ {_text(pattern)})"

    def regexp_group(self, expr: str, pattern: str) -> str:
        # DuckDB's regexp_extract gives '' when nothing matches (null only for null input).
        return (
            f"(case when {expr} is null then null "
            f"else coalesce((regexp_match({expr}, {_text(pattern)}))[1], '') end)"
        )

    def trim_chars(self, expr: str, characters: str) -> str:
        codes = " || ".join(f"chr({ord(c)})" for c in characters)
        return f"btrim({expr}, {codes})"

    def md5_hex(self, expr: str) -> str:
        return f"md5({expr})"

    def sha256_hex(self, expr: str) -> str:
        return f"encode(sha256(convert_to({expr}, 'UTF8')), 'hex')"

    def timestamp_text(self, expr: str) -> str:
        return f"to_char({expr}, 'YYYY-MM-DD HH24:MI:SS.US')"

    def star_except(self, alias: str, columns: Sequence[str], available: Sequence[str]) -> str:
        dropped = set(columns)
        kept = [c for c in available if c not in dropped]
        if not kept:
            raise WarehouseError(f"star_except of {alias}: no column left")
        return ", ".join(f"{alias}.{self.quote(c)}" for c in kept)

    def json_text(self, expr: str, key: str) -> str:
        return f"(cast({expr} as json) ->> {_text(key)})"


def _import_drivers() -> tuple[Any, Any]:
    try:
        import psycopg
        import sqlalchemy
    except ImportError as err:
        raise ConfigError(
            f"warehouse.kind 'postgres' needs SQLAlchemy and psycopg: "
            f"pip install 'mailers[{EXTRA}]' ({err})"
        ) from err
    return sqlalchemy, psycopg


def engine_for(config: PostgresWarehouseConfig, password: str | None) -> sqlalchemy.Engine:
    """A SQLAlchemy engine on psycopg 3 for ``config`` (connections open lazily)."""
    sqlalchemy, _ = _import_drivers()
    url = sqlalchemy.URL.create(
        "postgresql+psycopg",
        username=config.user,
        password=password,
        host=config.host,
        port=config.port if config.host is not None else None,
        database=config.database,
    )
    connect_args: dict[str, Any] = {
        "connect_timeout": config.connect_timeout_seconds,
        "client_encoding": "utf8",
        "options": "-c TimeZone=UTC",
        "application_name": "mailers",
    }
    if config.dsn is not None:
        connect_args["conninfo"] = config.dsn
    return sqlalchemy.create_engine(
        url, connect_args=connect_args, pool_size=2, max_overflow=4, pool_pre_ping=True
    )


def _placeholders(sql: str) -> str:
    """``?`` parameters as psycopg's ``%s`` (and a literal ``%`` as ``%%``), leaving the
    insides of string literals, quoted identifiers and comments alone but for ``%``."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            end = i + 1
            while end < n:
                if sql[end] == c:
                    if end + 1 < n and sql[end + 1] == c:
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i : end + 1].replace("%", "%%"))
            i = end + 1
        elif c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif c == "?":
            out.append("%s")
            i += 1
        elif c == "%":
            out.append("%%")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _column(values: list[Any], oid: int) -> pa.Array:
    arrow_type = _OID_TO_ARROW.get(oid)
    if arrow_type is not None:
        return pa.array(values, type=arrow_type)
    if oid == _NUMERIC_OID:
        # sum() and avg() of integers are numeric in Postgres (DuckDB: integers, doubles):
        # whole numbers come back as int64, the rest as float64.
        present = [v for v in values if v is not None]
        if all(v == v.to_integral_value() for v in present):
            return pa.array([None if v is None else int(v) for v in values], type=pa.int64())
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    # json, jsonb, uuid, interval, ...: their text, as DuckDB gives for types Arrow lacks.
    return pa.array(
        [None if v is None or isinstance(v, str) else _as_text(v) for v in values]
        if any(not isinstance(v, str) for v in values if v is not None)
        else values,
        type=pa.string(),
    )


def _as_text(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict | list):
        import json

        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _batch(rows: Sequence[Sequence[Any]], description: Sequence[Any]) -> pa.RecordBatch:
    names = [col.name for col in description]
    arrays = [_column([row[i] for row in rows], col.type_code) for i, col in enumerate(description)]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _empty_schema(description: Sequence[Any]) -> pa.Schema:
    return pa.schema(
        [pa.field(col.name, _OID_TO_ARROW.get(col.type_code, pa.string())) for col in description]
    )


def _postgres_type(arrow_type: pa.DataType) -> str:
    known = _ARROW_TO_POSTGRES.get(arrow_type)
    if known is not None:
        return known
    if pa.types.is_timestamp(arrow_type):
        return "timestamptz" if arrow_type.tz else "timestamp"
    if pa.types.is_dictionary(arrow_type):
        return _postgres_type(arrow_type.value_type)
    if pa.types.is_integer(arrow_type):
        return "bigint"
    if pa.types.is_null(arrow_type):
        return "text"
    raise WarehouseError(f"Postgres: no column type for Arrow type {arrow_type}")


class PostgresWarehouse:
    """A Postgres database behind the ``Warehouse`` protocol."""

    def __init__(
        self, engine: sqlalchemy.Engine, *, read_only: bool = False, label: str = "postgres"
    ) -> None:
        _, self._psycopg = _import_drivers()
        self.label = label
        self.read_only = read_only
        self.engine = engine
        try:
            self._pooled = engine.raw_connection()
        except Exception as err:
            raise WarehouseError(f"cannot open Postgres warehouse {label}: {_cause(err)}") from err
        self.connection: psycopg.Connection[Any] = self._pooled.driver_connection  # type: ignore[assignment]
        self.connection.autocommit = True
        if read_only:
            self.connection.execute("set default_transaction_read_only = on")
        self.dialect = PostgresDialect()
        self.capabilities = CAPABILITIES
        self._transaction_depth = 0
        self._depth_lock = threading.Lock()

    def close(self) -> None:
        self._pooled.close()
        self.engine.dispose()

    def __enter__(self) -> PostgresWarehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def relation(self, schema: str, table: str) -> str:
        return f"{self.dialect.quote(schema)}.{self.dialect.quote(table)}"

    def _run(self, sql: str, params: Sequence[Any]) -> psycopg.Cursor[Any]:
        cursor = self.connection.cursor()
        try:
            if params:
                cursor.execute(_placeholders(sql), list(params))
            else:
                cursor.execute(sql)
        except self._psycopg.Error as err:
            cursor.close()
            raise WarehouseError(f"Postgres ({self.label}): {_cause(err)}") from err
        return cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._run(sql, params) as cursor:
            return max(cursor.rowcount, 0) if cursor.description is None else 0

    def replace_table(self, schema: str, table: str, query: str) -> str:
        target = self.relation(schema, table)
        # No "create or replace table" in Postgres; DDL is transactional, so readers see the
        # old table or the new one.
        with self.transaction():
            self.execute(f"drop table if exists {target}")
            self.execute(f"create table {target} as\n{query}")
        return target

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        with self._run(sql, params) as cursor:
            if cursor.description is None:
                return pa.table({})
            try:
                rows = cursor.fetchall()
            except self._psycopg.Error as err:
                raise WarehouseError(f"Postgres ({self.label}): {_cause(err)}") from err
            if not rows:
                return _empty_schema(cursor.description).empty_table()
            return pa.Table.from_batches([_batch(rows, cursor.description)])

    def stream(
        self, sql: str, params: Sequence[Any] = (), batch_rows: int = 10_000
    ) -> Iterator[pa.RecordBatch]:
        pooled = self.engine.raw_connection()
        connection: psycopg.Connection[Any] = pooled.driver_connection  # type: ignore[assignment]
        try:
            connection.autocommit = False
            connection.read_only = True
            # A named cursor is a server-side cursor: rows come in batches, not all at once.
            with connection.cursor(name=f"mailers_stream_{uuid.uuid4().hex[:12]}") as cursor:
                cursor.execute(_placeholders(sql) if params else sql, list(params) or None)
                while rows := cursor.fetchmany(batch_rows):
                    yield _batch(rows, cursor.description or ())
        except self._psycopg.Error as err:
            raise WarehouseError(f"Postgres ({self.label}): {_cause(err)}") from err
        finally:
            try:
                connection.rollback()
                connection.read_only = None
            finally:
                pooled.close()

    def _copy(self, relation: str, data: pa.Table) -> None:
        columns = ", ".join(self.dialect.quote(name) for name in data.column_names)
        statement = f"copy {relation} ({columns}) from stdin with (format csv)"
        options = pacsv.WriteOptions(include_header=False)
        try:
            with self.connection.cursor() as cursor, cursor.copy(statement) as copy:
                for batch in data.to_batches(max_chunksize=COPY_BATCH_ROWS):
                    # pyarrow 26 writes garbage for a table whose first chunk is empty:
                    # batches go one at a time, empty ones skipped.
                    if batch.num_rows == 0:
                        continue
                    # pyarrow quotes every string and writes null unquoted and empty:
                    # Postgres's CSV format reads an unquoted empty field as null and ""
                    # as the empty string.
                    buffer = io.BytesIO()
                    pacsv.write_csv(batch, buffer, options)
                    copy.write(buffer.getbuffer())
        except self._psycopg.Error as err:
            raise WarehouseError(f"Postgres COPY into {relation}: {_cause(err)}") from err

    def append(self, schema: str, table: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        self._copy(self.relation(schema, table), data)

    def ensure_table(
        self, schema: str, table: str, columns: pa.Schema, primary_key: Sequence[str] = ()
    ) -> None:
        create_or_extend_table(self, schema, table, columns, primary_key, _postgres_type)

    def columns(self, schema: str, table: str) -> list[str] | None:
        rows = self.query(
            """
            select column_name from information_schema.columns
            where table_schema = ? and table_name = ?
            order by ordinal_position
            """,
            [schema, table],
        ).column(0)
        return [str(name) for name in rows.to_pylist()] or None

    @contextmanager
    def staged(self, data: pa.Table) -> Iterator[str]:
        name = self.dialect.quote(f"_mailers_staged_{uuid.uuid4().hex[:12]}")
        fields = ", ".join(
            f"{self.dialect.quote(f.name)} {_postgres_type(f.type)}" for f in data.schema
        )
        self.execute(f"create temporary table {name} ({fields})")
        try:
            if data.num_rows:
                self._copy(name, data)
            yield name
        finally:
            self._drop_staged(name)

    def _drop_staged(self, name: str) -> None:
        status = self.connection.info.transaction_status
        if status == self._psycopg.pq.TransactionStatus.INERROR:
            # The failed transaction's rollback drops a table it created; one created
            # before it lives until the session ends (temporary tables are per session).
            return
        self.execute(f"drop table if exists {name}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._depth_lock:
            outer = self._transaction_depth == 0
            self._transaction_depth += 1
        try:
            if not outer:
                yield
                return
            self.execute("begin")
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
    """The driver's own message (SQLAlchemy's wrapper adds the statement and parameters)."""
    inner = getattr(err, "orig", None) or err
    return str(inner).strip()


def open_postgres(
    config: PostgresWarehouseConfig, password: str | None, *, read_only: bool = False
) -> PostgresWarehouse:
    """Connect to the database ``config`` names."""
    where = (
        f"{config.user}@{config.host}:{config.port}/{config.database}"
        if config.dsn is None
        else "dsn from warehouse.dsn"
    )
    return PostgresWarehouse(engine_for(config, password), read_only=read_only, label=where)
