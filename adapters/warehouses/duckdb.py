"""DuckDB, the embedded default warehouse: one file, one writer process at a time.

DuckDB allows a single read-write process per database file; Dagster runs that write it
share one concurrency pool (see ``orchestration/defs/resources.py``). Within a process,
a streaming read uses its own cursor so appends on the main connection do not cancel it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from adapters.warehouses.ddl import create_or_extend_table
from mailers.errors import WarehouseBusy, WarehouseError
from mailers.warehouse import BulkLoad, WarehouseCapabilities

CAPABILITIES = WarehouseCapabilities(
    engine="duckdb",
    transactions=True,
    transactional_ddl=True,
    single_writer=True,
    enforces_primary_keys=True,
    # A failed statement inside an explicit transaction leaves it aborted until rollback.
    error_aborts_transaction=True,
    json_type="json",
    bulk_load=BulkLoad.ARROW_SCAN,
    max_statement_bytes=None,
    max_parameters=None,
)

_ARROW_TO_DUCKDB = {
    pa.string(): "varchar",
    pa.int64(): "bigint",
    pa.int32(): "integer",
    pa.float64(): "double",
    pa.bool_(): "boolean",
    pa.timestamp("us"): "timestamp",
    pa.date32(): "date",
}


class DuckDBDialect:
    """DuckDB's spellings of the functions that differ between engines."""

    def quote(self, identifier: str) -> str:
        return '"' + identifier.replace('"', '""') + '"'

    def regexp_matches(self, expr: str, pattern: str) -> str:
        return f"regexp_matches({expr}, {_text(pattern)})"

    def regexp_group(self, expr: str, pattern: str) -> str:
        return f"regexp_extract({expr}, {_text(pattern)}, 1)"

    def trim_chars(self, expr: str, characters: str) -> str:
        codes = " || ".join(f"chr({ord(c)})" for c in characters)
        return f"trim({expr}, {codes})"

    def md5_hex(self, expr: str) -> str:
        return f"md5({expr})"

    def sha256_hex(self, expr: str) -> str:
        return f"sha256({expr})"

    def timestamp_text(self, expr: str) -> str:
        return f"strftime({expr}, '%Y-%m-%d %H:%M:%S.%f')"

    def star_except(self, alias: str, columns: Sequence[str], available: Sequence[str]) -> str:
        return f"{alias}.* exclude ({', '.join(self.quote(c) for c in columns)})"

    def json_text(self, expr: str, key: str) -> str:
        return f"json_extract_string({expr}, {_text('$.' + key)})"


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class DuckDBWarehouse:
    """A DuckDB database file (or ``:memory:``) behind the ``Warehouse`` protocol."""

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.connection = duckdb.connect(self.path, read_only=read_only)
        except duckdb.IOException as err:
            # DuckDB says "Could not set lock on file ... Conflicting lock is held in ...".
            busy = "lock" in str(err).lower()
            raise (WarehouseBusy if busy else WarehouseError)(
                f"cannot open DuckDB warehouse {self.path}: {err} (is another process "
                "writing it? DuckDB allows one writer at a time)"
            ) from err
        self.dialect = DuckDBDialect()
        self.capabilities = CAPABILITIES
        self._transaction_depth = 0
        self._depth_lock = threading.Lock()

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> DuckDBWarehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def relation(self, schema: str, table: str) -> str:
        return f"{self.dialect.quote(schema)}.{self.dialect.quote(table)}"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            result = self.connection.execute(sql, list(params))
            description = result.description
            if description and description[0][0] == "Count":
                row = result.fetchone()
                return int(row[0]) if row else 0
            return 0
        except duckdb.Error as err:
            raise WarehouseError(f"DuckDB ({self.path}): {err}") from err

    def replace_table(self, schema: str, table: str, query: str) -> str:
        target = self.relation(schema, table)
        self.execute(f"create or replace table {target} as\n{query}")
        return target

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        try:
            return self.connection.sql(sql, params=list(params)).to_arrow_table()
        except duckdb.Error as err:
            raise WarehouseError(f"DuckDB ({self.path}): {err}") from err

    def stream(
        self, sql: str, params: Sequence[Any] = (), batch_rows: int = 10_000
    ) -> Iterator[pa.RecordBatch]:
        cursor = self.connection.cursor()
        try:
            reader = cursor.sql(sql, params=list(params)).to_arrow_reader(batch_rows)
            yield from reader
        except duckdb.Error as err:
            raise WarehouseError(f"DuckDB ({self.path}): {err}") from err
        finally:
            cursor.close()

    def append(self, schema: str, table: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        columns = ", ".join(self.dialect.quote(name) for name in data.column_names)
        with self.staged(data) as staged:
            try:
                self.connection.execute(
                    f"insert into {self.relation(schema, table)} ({columns}) "
                    f"select {columns} from {staged}"
                )
            except duckdb.Error as err:
                raise WarehouseError(f"DuckDB append to {schema}.{table}: {err}") from err

    def ensure_table(
        self, schema: str, table: str, columns: pa.Schema, primary_key: Sequence[str] = ()
    ) -> None:
        create_or_extend_table(
            self, schema, table, columns, primary_key, _ARROW_TO_DUCKDB.__getitem__
        )

    def columns(self, schema: str, table: str) -> list[str] | None:
        rows = self.connection.execute(
            """
            select column_name from information_schema.columns
            where table_schema = ? and table_name = ?
            order by ordinal_position
            """,
            [schema, table],
        ).fetchall()
        return [row[0] for row in rows] or None

    @contextmanager
    def staged(self, data: pa.Table) -> Iterator[str]:
        name = f"_mailers_staged_{uuid.uuid4().hex[:12]}"
        self.connection.register(name, data)
        try:
            yield self.dialect.quote(name)
        finally:
            self.connection.unregister(name)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._depth_lock:
            outer = self._transaction_depth == 0
            self._transaction_depth += 1
        try:
            if not outer:
                # Nested (e.g. append_audit inside a caller's transaction): the outer block
                # commits or rolls back the whole; an error here propagates to it.
                yield
                return
            self.connection.execute("begin transaction")
            try:
                yield
            except BaseException:
                self.connection.execute("rollback")
                raise
            self.connection.execute("commit")
        finally:
            with self._depth_lock:
                self._transaction_depth -= 1
