"""The seam between Mailers and a warehouse: one small protocol, one per engine.

The core writes set-based SQL against :class:`Warehouse` and moves data as Arrow; each
engine (DuckDB and Postgres today; Snowflake and BigQuery later) implements it in
``adapters/warehouses``, supplies a :class:`Dialect` for the few spellings that differ and
declares what else differs in its :class:`WarehouseCapabilities`. Parameters are written
``?`` whatever the engine; an adapter translates them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import pyarrow as pa

MAILERS_SCHEMA = "mailers"
"""Warehouse schema of Mailers' own, append-only tables (the dbt source ``mailers``)."""

WORK_SCHEMA = "mailers_work"
"""Warehouse schema of per-run working tables (resolved audiences); safe to drop."""


class BulkLoad(StrEnum):
    """How an engine takes a bulk append of Arrow rows (never row-wise inserts)."""

    ARROW_SCAN = "arrow_scan"
    """The engine reads the Arrow buffers in process (DuckDB)."""
    COPY = "copy"
    """``COPY ... FROM STDIN`` over the connection (Postgres)."""
    STAGED_COPY = "staged_copy"
    """Files put on a stage, then ``COPY INTO`` (Snowflake)."""
    LOAD_JOB = "load_job"
    """A load job or a write stream per append (BigQuery); counted against daily quotas."""


@dataclass(frozen=True, slots=True)
class WarehouseCapabilities:
    """What differs between engines beyond SQL spelling, declared once per engine."""

    engine: str
    """The config's ``warehouse.kind``."""
    transactions: bool
    """Statements grouped in :meth:`Warehouse.transaction` commit or roll back together."""
    transactional_ddl: bool
    """``create``/``drop`` inside a transaction roll back with it."""
    single_writer: bool
    """One read-write process at a time (a file lock): Dagster steps writing it queue up."""
    enforces_primary_keys: bool
    """A second row with the same primary key is refused. The send claim's compare-and-set
    is that refusal where it holds, and a fenced update where it does not."""
    error_aborts_transaction: bool
    """After a failed statement the open transaction accepts nothing but a rollback."""
    json_type: str
    """Column type that holds a raw JSON payload natively."""
    bulk_load: BulkLoad
    max_statement_bytes: int | None
    """Longest SQL text the engine accepts (``None``: no practical limit)."""
    max_parameters: int | None
    """Most bind parameters in one statement (``None``: no practical limit)."""


class Dialect(Protocol):
    """SQL spellings that differ between engines."""

    def quote(self, identifier: str) -> str:
        """Quote one identifier."""
        ...

    def regexp_matches(self, expr: str, pattern: str) -> str:
        """A boolean expression: does ``expr`` match ``pattern`` (RE2 syntax) anywhere."""
        ...

    def regexp_group(self, expr: str, pattern: str) -> str:
        """The first capture group of ``pattern`` in ``expr``."""
        ...

    def trim_chars(self, expr: str, characters: str) -> str:
        """``expr`` with any of ``characters`` removed from both ends."""
        ...

    def md5_hex(self, expr: str) -> str:
        """Lower-case hex md5 of a string expression."""
        ...

    def sha256_hex(self, expr: str) -> str:
        """Lower-case hex sha256 of the UTF-8 bytes of a string expression."""
        ...

    def timestamp_text(self, expr: str) -> str:
        """A timestamp as ``YYYY-MM-DD HH:MM:SS.ffffff`` text (microseconds always shown)."""
        ...

    def star_except(self, alias: str, columns: Sequence[str], available: Sequence[str]) -> str:
        """``alias.*`` without the named ``columns``; ``available`` lists all of ``alias``'s
        columns, in order, for engines that cannot exclude and must name the rest."""
        ...

    def json_text(self, expr: str, key: str) -> str:
        """The text value of top-level ``key`` of a JSON object held as text in ``expr``."""
        ...


class Warehouse(Protocol):
    """What Mailers needs from a warehouse: run SQL, read and append Arrow."""

    @property
    def dialect(self) -> Dialect:
        """The engine's SQL spellings."""
        ...

    @property
    def capabilities(self) -> WarehouseCapabilities:
        """What the engine can and cannot do."""
        ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the rows it inserted or changed (0 for DDL)."""
        ...

    def replace_table(self, schema: str, table: str, query: str) -> str:
        """(Re)create a table from a query, atomically; return its qualified name."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        """Run a query and return its (small) result whole."""
        ...

    def stream(
        self, sql: str, params: Sequence[Any] = (), batch_rows: int = 10_000
    ) -> Iterator[pa.RecordBatch]:
        """Run a query and yield its result in record batches of at most ``batch_rows``."""
        ...

    def append(self, schema: str, table: str, data: pa.Table) -> None:
        """Bulk-append Arrow rows to an existing table (columns matched by name)."""
        ...

    def ensure_table(
        self, schema: str, table: str, columns: pa.Schema, primary_key: Sequence[str] = ()
    ) -> None:
        """Create the schema and table from an Arrow schema when they do not exist.

        ``primary_key`` names the columns of a key the engine must enforce (a second row
        with the same key is refused). An existing table missing some of the columns gets
        them added (new columns are always nullable), so an older warehouse upgrades.
        """
        ...

    def columns(self, schema: str, table: str) -> list[str] | None:
        """Column names of a table or view, or ``None`` when it does not exist."""
        ...

    def staged(self, data: pa.Table) -> AbstractContextManager[str]:
        """Make Arrow rows queryable for the duration of a block; yields a relation name."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """Group statements so that they commit together or not at all.

        Inside another transaction's block it joins that one (it commits with the outer).
        """
        ...

    def relation(self, schema: str, table: str) -> str:
        """The quoted, qualified name of a relation."""
        ...
