"""Google BigQuery through google-cloud-bigquery: each warehouse schema is a dataset.

Reads come back as Arrow: small results whole, large ones through the BigQuery Storage Read
API when ``storage_read_api`` is on (else REST pages), re-cut into batches of the size asked.
BigQuery's ``TIMESTAMP`` arrives zoned (UTC); it is handed to the core as naive UTC, like
every other engine. Bulk appends are load jobs of Parquet that pyarrow writes (never row-wise
inserts or streaming ``insertAll``): each counts against the per-table daily load-job quota
(https://cloud.google.com/bigquery/quotas#load_jobs), so callers batch.

Transactions are BigQuery multi-statement transactions in a session
(https://cloud.google.com/bigquery/docs/transactions): ``BEGIN TRANSACTION`` opens one, every
statement until ``COMMIT`` carries the session id. A load job cannot take part in one, so an
append inside a transaction loads a staging table first and inserts from it in the
transaction. DDL on permanent tables cannot either (``transactional_ddl`` is false).

Primary keys are declared (``NOT ENFORCED``, the only kind BigQuery has: the optimizer and
analysts see them) but a second row with the same key is not refused, so
``capabilities.enforces_primary_keys`` is false: the send claim's compare-and-set must not
rely on it here.

A string field whose Arrow metadata has ``mailers.json`` is a ``JSON`` column: raw provider
payloads, queried with ``JSON_VALUE``. BigQuery stores JSON parsed: whitespace and key order
of the original text are not kept.

The SDK is the ``bigquery`` extra, imported when a warehouse is opened.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mailers.bigquery_config import BigQueryWarehouseConfig
from mailers.errors import ConfigError, WarehouseError
from mailers.warehouse import WORK_SCHEMA, BulkLoad, WarehouseCapabilities

if TYPE_CHECKING:
    from google.cloud import bigquery

CAPABILITIES = WarehouseCapabilities(
    engine="bigquery",
    transactions=True,
    transactional_ddl=False,
    single_writer=False,
    enforces_primary_keys=False,
    # A failed statement inside a transaction rolls the whole transaction back
    # (https://cloud.google.com/bigquery/docs/transactions#transaction_scope).
    error_aborts_transaction=True,
    json_type="JSON",
    bulk_load=BulkLoad.LOAD_JOB,
    # https://cloud.google.com/bigquery/quotas#query_jobs: "Maximum unresolved GoogleSQL query
    # length 1 MB", "Maximum number of GoogleSQL query parameters 10,000".
    max_statement_bytes=1 << 20,
    max_parameters=10_000,
)

EXTRA = "bigquery"
"""The optional dependency group that brings google-cloud-bigquery (and its Storage API)."""

JSON_METADATA = b"mailers.json"
"""Arrow field metadata key marking a string field as a BigQuery ``JSON`` column."""

_ARROW_TO_BIGQUERY = {
    pa.string(): "STRING",
    pa.large_string(): "STRING",
    pa.int64(): "INT64",
    pa.int32(): "INT64",
    pa.int16(): "INT64",
    pa.float64(): "FLOAT64",
    pa.float32(): "FLOAT64",
    pa.bool_(): "BOOL",
    pa.date32(): "DATE",
}

_CREATE_SCHEMA = re.compile(
    r"^\s*create\s+schema\s+if\s+not\s+exists\s+(`(?:[^`\\]|\\.)+`|[A-Za-z_][A-Za-z0-9_]*)\s*;?\s*$",
    re.IGNORECASE,
)


def _text(value: str) -> str:
    """A GoogleSQL string literal (backslash escapes, https://cloud.google.com/bigquery/docs/reference/standard-sql/lexical#string_and_bytes_literals)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _json_path_key(key: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return "$." + key
    # JSONPath keys with other characters are double-quoted
    # (https://cloud.google.com/bigquery/docs/reference/standard-sql/json_functions#JSONPath_format).
    return '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


class BigQueryDialect:
    """GoogleSQL's spellings of the functions that differ between engines
    (https://cloud.google.com/bigquery/docs/reference/standard-sql/functions-and-operators)."""

    def quote(self, identifier: str) -> str:
        return "`" + identifier.replace("\\", "\\\\").replace("`", "\\`") + "`"

    def regexp_matches(self, expr: str, pattern: str) -> str:
        # REGEXP_CONTAINS: a partial match, RE2 syntax, like DuckDB's regexp_matches.
        return f"regexp_contains({expr}, {_text(pattern)})"

    def regexp_group(self, expr: str, pattern: str) -> str:
        # REGEXP_EXTRACT returns the first capture group, or NULL when nothing matches;
        # the protocol (DuckDB's regexp_extract) gives '' then (NULL only for NULL input).
        return (
            f"(case when {expr} is null then null "
            f"else coalesce(regexp_extract({expr}, {_text(pattern)}), '') end)"
        )

    def trim_chars(self, expr: str, characters: str) -> str:
        # TRIM(value, set_of_characters_to_remove); the set spelled as code points so that
        # whitespace characters need no escaping.
        codes = ", ".join(str(ord(c)) for c in characters)
        return f"trim({expr}, code_points_to_string([{codes}]))"

    def md5_hex(self, expr: str) -> str:
        # MD5 of a STRING hashes its UTF-8 bytes and returns BYTES; TO_HEX is lower-case.
        return f"to_hex(md5({expr}))"

    def sha256_hex(self, expr: str) -> str:
        return f"to_hex(sha256({expr}))"

    def timestamp_text(self, expr: str) -> str:
        # %E6S: seconds with six fractional digits, always shown.
        return f"format_timestamp('%Y-%m-%d %H:%M:%E6S', {expr}, 'UTC')"

    def star_except(self, alias: str, columns: Sequence[str], available: Sequence[str] = ()) -> str:
        return f"{alias}.* except ({', '.join(self.quote(c) for c in columns)})"

    def json_text(self, expr: str, key: str) -> str:
        # JSON_VALUE takes a JSON value or JSON-formatted STRING and returns a scalar as
        # STRING (NULL for objects, arrays and JSON null).
        return f"json_value({expr}, {_text(_json_path_key(key))})"


def _import_sdk() -> Any:
    try:
        from google.cloud import bigquery
    except ImportError as err:
        raise ConfigError(
            f"warehouse.kind 'bigquery' needs google-cloud-bigquery: "
            f"pip install 'mailers[{EXTRA}]' ({err})"
        ) from err
    return bigquery


def is_json_field(field: pa.Field) -> bool:
    """Whether ``field`` is marked to become a BigQuery ``JSON`` column."""
    return bool(field.metadata and field.metadata.get(JSON_METADATA))


def bigquery_type(field: pa.Field) -> str:
    """The BigQuery column type of an Arrow field."""
    arrow_type = field.type
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if is_json_field(field) and pa.types.is_string(arrow_type):
        return "JSON"
    known = _ARROW_TO_BIGQUERY.get(arrow_type)
    if known is not None:
        return known
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP"
    if pa.types.is_integer(arrow_type):
        return "INT64"
    if pa.types.is_null(arrow_type):
        return "STRING"
    raise WarehouseError(f"BigQuery: no column type for Arrow field {field.name}: {arrow_type}")


def _parameter(bigquery: Any, value: Any) -> Any:
    """A positional query parameter typed from its Python value."""
    if value is None:
        # An untyped NULL is not allowed; STRING is what Mailers' optional filters compare.
        kind = "STRING"
    elif isinstance(value, bool):
        kind = "BOOL"
    elif isinstance(value, int):
        kind = "INT64"
    elif isinstance(value, float):
        kind = "FLOAT64"
    elif isinstance(value, Decimal):
        kind = "NUMERIC"
    elif isinstance(value, dt.datetime):
        kind = "TIMESTAMP"
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
    elif isinstance(value, dt.date):
        kind = "DATE"
    elif isinstance(value, bytes):
        kind = "BYTES"
    elif isinstance(value, str):
        kind = "STRING"
    elif isinstance(value, list | tuple):
        items = [v for v in value if v is not None]
        element = _parameter(bigquery, items[0]).type_ if items else "STRING"
        return bigquery.ArrayQueryParameter(None, element, list(value))
    else:
        raise WarehouseError(f"BigQuery: cannot pass a {type(value).__name__} as a parameter")
    return bigquery.ScalarQueryParameter(None, kind, value)


def _naive_utc(data: pa.Table | pa.RecordBatch) -> Any:
    """Zoned timestamps as naive UTC, the core's convention (DuckDB and Postgres give that)."""
    fields = list(data.schema)
    if not any(pa.types.is_timestamp(f.type) and f.type.tz for f in fields):
        return data
    columns = [
        column.cast(pa.timestamp(f.type.unit))
        if pa.types.is_timestamp(f.type) and f.type.tz
        else column
        for f, column in zip(fields, data.columns, strict=True)
    ]
    names = [f.name for f in fields]
    if isinstance(data, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(columns, names=names)
    return pa.Table.from_arrays(columns, names=names)


def _rebatch(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Batches of exactly ``size`` rows (the last one fewer), whatever sizes come in."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        while batch.num_rows:
            take = min(size - held, batch.num_rows)
            pending.append(batch.slice(0, take))
            held += take
            batch = batch.slice(take)
            if held == size:
                yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
                pending, held = [], 0
    if held:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


class BigQueryWarehouse:
    """A BigQuery project behind the ``Warehouse`` protocol.

    ``client`` and ``storage_client`` are the SDK's; :func:`open_bigquery` builds them from
    config. ``read_only`` refuses every write the adapter can recognize (appends, DDL,
    ``execute``); staging tables for reads are still created in the work dataset. Grant a
    reader only ``roles/bigquery.dataViewer`` and ``jobUser`` to make that hold server-side.
    """

    def __init__(
        self,
        config: BigQueryWarehouseConfig,
        client: bigquery.Client,
        *,
        storage_client: Any = None,
        read_only: bool = False,
    ) -> None:
        self._bq = _import_sdk()
        self.config = config
        self.client = client
        self.storage_client = storage_client
        self.read_only = read_only
        self.dialect = BigQueryDialect()
        self.capabilities = CAPABILITIES
        self.load_jobs = 0
        """Load jobs this warehouse ran (each counts against its table's daily quota)."""
        self.query_jobs = 0
        """Query jobs (statements) this warehouse ran."""
        self._session_id: str | None = None
        self._transaction_depth = 0
        self._depth_lock = threading.Lock()
        self._tables: dict[tuple[str, str], Any] = {}

    def close(self) -> None:
        if self._session_id is not None:
            # A session otherwise lives until it has been idle for 24 hours.
            with suppress(WarehouseError):
                self._job("CALL BQ.ABORT_SESSION()", ())
            self._session_id = None
        self.client.close()
        if self.storage_client is not None:
            self.storage_client.transport.close()

    def __enter__(self) -> BigQueryWarehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def dataset(self, schema: str) -> str:
        """The dataset holding warehouse schema ``schema``."""
        return self.config.dataset(schema)

    def _table_id(self, schema: str, table: str) -> str:
        return f"{self.config.project}.{self.dataset(schema)}.{table}"

    def relation(self, schema: str, table: str) -> str:
        # One backtick-quoted path: the project id may hold hyphens
        # (https://cloud.google.com/bigquery/docs/reference/standard-sql/lexical#quoted_identifiers).
        return self.dialect.quote(self._table_id(schema, table))

    def _refuse_write(self, what: str) -> None:
        if self.read_only:
            raise WarehouseError(f"BigQuery ({self.config.project}): read-only, refused {what}")

    def _job_config(self, params: Sequence[Any], **extra: Any) -> Any:
        config = self._bq.QueryJobConfig(
            query_parameters=[_parameter(self._bq, v) for v in params], **extra
        )
        if self._transaction_depth and self._session_id is not None:
            config.connection_properties = [
                self._bq.ConnectionProperty("session_id", self._session_id)
            ]
        return config

    def _job(self, sql: str, params: Sequence[Any], **extra: Any) -> Any:
        from google.api_core import exceptions

        try:
            self.query_jobs += 1
            job = self.client.query(
                sql, job_config=self._job_config(params, **extra), location=self.config.location
            )
            job.result(timeout=self.config.job_timeout_seconds)
        except exceptions.GoogleAPICallError as err:
            raise WarehouseError(f"BigQuery ({self.config.project}): {_message(err)}") from err
        except TimeoutError as err:
            raise WarehouseError(
                f"BigQuery ({self.config.project}): job exceeded {self.config.job_timeout_seconds}s"
            ) from err
        return job

    def ensure_schema(self, schema: str) -> None:
        """Create the dataset of ``schema`` in the configured location if it is missing."""
        self._refuse_write(f"creating dataset for {schema}")
        from google.api_core import exceptions

        dataset = self._bq.Dataset(f"{self.config.project}.{self.dataset(schema)}")
        dataset.location = self.config.location
        try:
            self.client.create_dataset(dataset, exists_ok=True)
        except exceptions.GoogleAPICallError as err:
            raise WarehouseError(f"BigQuery dataset {dataset.dataset_id}: {_message(err)}") from err

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._refuse_write("a statement")
        created = _CREATE_SCHEMA.match(sql)
        if created and not params:
            # A schema is a dataset: created through the API, so that the prefix, the dataset
            # map and the location apply (DDL would put it under its bare name).
            name = created.group(1)
            self.ensure_schema(name[1:-1] if name.startswith("`") else name)
            return 0
        job = self._job(sql, params)
        return int(job.num_dml_affected_rows or 0)

    def replace_table(self, schema: str, table: str, query: str) -> str:
        self._refuse_write(f"replacing {schema}.{table}")
        target = self.relation(schema, table)
        # CREATE OR REPLACE TABLE ... AS swaps atomically: readers see the old or the new.
        self._job(f"create or replace table {target} as\n{query}", ())
        self._tables.pop((schema, table), None)
        return target

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        job = self._job(sql, params)
        try:
            table = job.result().to_arrow(
                bqstorage_client=self._reader(), create_bqstorage_client=False
            )
        except Exception as err:
            raise WarehouseError(f"BigQuery ({self.config.project}): {_message(err)}") from err
        return _naive_utc(table)

    def stream(
        self, sql: str, params: Sequence[Any] = (), batch_rows: int = 10_000
    ) -> Iterator[pa.RecordBatch]:
        job = self._job(sql, params)
        rows = job.result(page_size=batch_rows)
        try:
            batches = rows.to_arrow_iterable(bqstorage_client=self._reader())
            for batch in _rebatch(iter(batches), batch_rows):
                yield _naive_utc(batch)
        except WarehouseError:
            raise
        except Exception as err:
            raise WarehouseError(f"BigQuery ({self.config.project}): {_message(err)}") from err

    def _reader(self) -> Any:
        return self.storage_client if self.config.storage_read_api else None

    def read_table(self, schema: str, table: str) -> pa.Table:
        """A whole table as Arrow, read directly (Storage Read API when on; no query job)."""
        try:
            rows = self.client.list_rows(self._table(schema, table))
            return _naive_utc(
                rows.to_arrow(bqstorage_client=self._reader(), create_bqstorage_client=False)
            )
        except WarehouseError:
            raise
        except Exception as err:
            raise WarehouseError(f"BigQuery read of {schema}.{table}: {_message(err)}") from err

    def _table(self, schema: str, table: str) -> Any:
        from google.api_core import exceptions

        key = (schema, table)
        if key not in self._tables:
            try:
                self._tables[key] = self.client.get_table(self._table_id(schema, table))
            except exceptions.NotFound as err:
                raise WarehouseError(
                    f"BigQuery table {schema}.{table} ({self._table_id(schema, table)}) "
                    "does not exist"
                ) from err
        return self._tables[key]

    def _conform(self, schema: str, table: str, data: pa.Table) -> tuple[pa.Table, Any]:
        """``data`` in the target's column order and types, or an error naming the fault:
        a column the table lacks, or a null in a REQUIRED column."""
        target = self._table(schema, table)
        fields = {f.name: f for f in target.schema}
        unknown = [name for name in data.column_names if name not in fields]
        if unknown:
            # The cached schema may predate columns another process has added since.
            self._tables.pop((schema, table), None)
            target = self._table(schema, table)
            fields = {f.name: f for f in target.schema}
            unknown = [name for name in data.column_names if name not in fields]
        if unknown:
            raise WarehouseError(f"BigQuery append to {schema}.{table}: no columns {unknown}")
        columns, names = [], []
        for name, field in fields.items():
            if name in data.column_names:
                column = data.column(name)
            else:
                column = pa.nulls(data.num_rows, pa.string())
            if field.mode == "REQUIRED" and column.null_count:
                raise WarehouseError(
                    f"BigQuery append to {schema}.{table}: {column.null_count} null(s) in "
                    f"required column {name}"
                )
            columns.append(_for_load(column, field.field_type))
            names.append(name)
        return pa.Table.from_arrays(columns, names=names), target.schema

    def _load(self, table_id: str, data: pa.Table, schema: Any) -> None:
        from google.api_core import exceptions

        buffer = io.BytesIO()
        pq.write_table(data, buffer)
        buffer.seek(0)
        config = self._bq.LoadJobConfig(
            source_format=self._bq.SourceFormat.PARQUET,
            write_disposition=self._bq.WriteDisposition.WRITE_APPEND,
            create_disposition=self._bq.CreateDisposition.CREATE_NEVER,
            # The table's own schema: a Parquet string becomes JSON where the column is JSON.
            schema=schema,
        )
        try:
            job = self.client.load_table_from_file(
                buffer, table_id, job_config=config, location=self.config.location
            )
            self.load_jobs += 1
            job.result(timeout=self.config.job_timeout_seconds)
        except exceptions.GoogleAPICallError as err:
            raise WarehouseError(f"BigQuery load into {table_id}: {_message(err)}") from err

    def append(self, schema: str, table: str, data: pa.Table) -> None:
        self._refuse_write(f"appending to {schema}.{table}")
        if data.num_rows == 0:
            return
        conformed, target_schema = self._conform(schema, table, data)
        if not self._transaction_depth:
            self._load(self._table_id(schema, table), conformed, target_schema)
            return
        # Inside a transaction: a load job would commit on its own, so the rows go to a
        # staging table first and into the target by an INSERT the transaction holds.
        columns = ", ".join(self.dialect.quote(n) for n in conformed.column_names)
        with self._staging(conformed, target_schema) as staged:
            self._job(
                f"insert into {self.relation(schema, table)} ({columns}) "
                f"select {columns} from {staged}",
                (),
            )

    def ensure_table(
        self, schema: str, table: str, columns: pa.Schema, primary_key: Sequence[str] = ()
    ) -> None:
        self._refuse_write(f"creating {schema}.{table}")
        from google.api_core import exceptions

        self.ensure_schema(schema)
        wanted = [
            self._bq.SchemaField(
                f.name, bigquery_type(f), mode="NULLABLE" if f.nullable else "REQUIRED"
            )
            for f in columns
        ]
        spec = self._bq.Table(self._table_id(schema, table), schema=wanted)
        if primary_key:
            spec.table_constraints = self._bq.table.TableConstraints(
                primary_key=self._bq.table.PrimaryKey(columns=list(primary_key)),
                foreign_keys=[],
            )
        self._tables.pop((schema, table), None)
        try:
            existing = self.client.create_table(spec, exists_ok=True)
            present = {f.name for f in existing.schema}
            missing = [f for f in wanted if f.name not in present]
            for f in missing:
                # A table an older Mailers created lacks the columns added since: add them
                # (nullable, so old rows read as null). DDL rather than a metadata patch, so
                # that an emulator changes its storage too; one column per statement, as
                # bqemulator takes only one ALTER action at a time.
                self._job(
                    f"alter table {self.relation(schema, table)} "
                    f"add column if not exists {self.dialect.quote(f.name)} {f.field_type}",
                    (),
                )
            if missing:
                # BigQuery's metadata follows the DDL; bqemulator 1.4's does not (its tables
                # API keeps the old schema), so there it is patched to match.
                current = self.client.get_table(self._table_id(schema, table))
                known = {f.name for f in current.schema}
                lagging = [f for f in missing if f.name not in known]
                if lagging:
                    current.schema = [
                        *current.schema,
                        *(self._bq.SchemaField(f.name, f.field_type) for f in lagging),
                    ]
                    self.client.update_table(current, ["schema"])
        except exceptions.GoogleAPICallError as err:
            raise WarehouseError(f"BigQuery table {schema}.{table}: {_message(err)}") from err

    def columns(self, schema: str, table: str) -> list[str] | None:
        from google.api_core import exceptions

        # Table metadata, not an INFORMATION_SCHEMA query: no job, nothing billed.
        try:
            found = self.client.get_table(self._table_id(schema, table))
        except exceptions.NotFound:
            return None
        except exceptions.GoogleAPICallError as err:
            raise WarehouseError(f"BigQuery table {schema}.{table}: {_message(err)}") from err
        self._tables[(schema, table)] = found
        return [f.name for f in found.schema] or None

    @contextmanager
    def _staging(self, data: pa.Table, schema: Any) -> Iterator[str]:
        from google.api_core import exceptions

        name = f"_mailers_staged_{uuid.uuid4().hex[:12]}"
        table_id = self._table_id(WORK_SCHEMA, name)
        spec = self._bq.Table(table_id, schema=schema)
        # Should this process die inside the block, BigQuery drops the table on its own.
        spec.expires = dt.datetime.now(dt.UTC) + dt.timedelta(
            minutes=self.config.staging_expiration_minutes
        )
        try:
            self.client.create_dataset(self._work_dataset(), exists_ok=True)
            self.client.create_table(spec)
        except exceptions.GoogleAPICallError as err:
            raise WarehouseError(f"BigQuery staging table {table_id}: {_message(err)}") from err
        try:
            if data.num_rows:
                self._load(table_id, data, schema)
            yield self.relation(WORK_SCHEMA, name)
        finally:
            # Should the delete fail, the table expires on its own.
            with suppress(exceptions.GoogleAPICallError):
                self.client.delete_table(table_id, not_found_ok=True)

    def _work_dataset(self) -> Any:
        dataset = self._bq.Dataset(f"{self.config.project}.{self.dataset(WORK_SCHEMA)}")
        dataset.location = self.config.location
        return dataset

    @contextmanager
    def staged(self, data: pa.Table) -> Iterator[str]:
        fields = [
            self._bq.SchemaField(f.name, bigquery_type(f), mode="NULLABLE") for f in data.schema
        ]
        columns = [_for_load(data.column(f.name), f.field_type) for f in fields]
        conformed = pa.Table.from_arrays(columns, names=[f.name for f in fields])
        with self._staging(conformed, fields) as relation:
            yield relation

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._depth_lock:
            outer = self._transaction_depth == 0
            self._transaction_depth += 1
        try:
            if not outer:
                # Nested: BigQuery transactions do not nest; the outer block commits or rolls
                # back the whole, and an error here propagates to it.
                yield
                return
            self._begin()
            try:
                yield
            except BaseException:
                # A failed statement may have rolled the transaction back already.
                with suppress(WarehouseError):
                    self._job("rollback transaction", ())
                raise
            self._job("commit transaction", ())
        finally:
            with self._depth_lock:
                self._transaction_depth -= 1

    def _begin(self) -> None:
        if self._session_id is None:
            job = self._job("begin transaction", (), create_session=True)
            self._session_id = job.session_info.session_id
        else:
            self._job("begin transaction", ())


def _for_load(column: pa.ChunkedArray | pa.Array, field_type: str) -> Any:
    """An Arrow column as the Parquet a load job reads into a ``field_type`` column."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if field_type == "TIMESTAMP":
        if pa.types.is_timestamp(column.type) and column.type.tz:
            return pc.cast(column, pa.timestamp("us", tz="UTC"))
        # Naive timestamps are UTC in Mailers; Parquet marks zoned ones isAdjustedToUTC,
        # which BigQuery reads as TIMESTAMP (a naive one would be DATETIME).
        return pc.assume_timezone(pc.cast(column, pa.timestamp("us")), "UTC")
    if field_type in ("INT64", "INTEGER"):
        return pc.cast(column, pa.int64())
    if field_type in ("FLOAT64", "FLOAT"):
        return pc.cast(column, pa.float64())
    if field_type in ("STRING", "JSON"):
        return pc.cast(column, pa.string())
    if field_type in ("BOOL", "BOOLEAN"):
        return pc.cast(column, pa.bool_())
    if field_type == "DATE":
        return pc.cast(column, pa.date32())
    return column


def _message(err: BaseException) -> str:
    """The service's own message (not the request URL, which holds nothing secret anyway)."""
    message = getattr(err, "message", None) or str(err)
    return str(message).strip()


def open_bigquery(config: BigQueryWarehouseConfig, *, read_only: bool = False) -> BigQueryWarehouse:
    """Clients for ``config``: Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``
    or the environment's), or none for an emulator; the Storage Read API client when on."""
    bigquery = _import_sdk()
    from google.api_core.client_options import ClientOptions

    credentials = None
    if config.anonymous:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    options = ClientOptions(api_endpoint=config.api_endpoint) if config.api_endpoint else None
    try:
        client = bigquery.Client(
            project=config.project,
            location=config.location,
            credentials=credentials,
            client_options=options,
        )
    except Exception as err:
        # google.auth.exceptions.DefaultCredentialsError names where it looked, no secret.
        raise WarehouseError(f"cannot open BigQuery project {config.project}: {err}") from err
    storage = _storage_client(config, credentials) if config.storage_read_api else None
    return BigQueryWarehouse(config, client, storage_client=storage, read_only=read_only)


def _storage_client(config: BigQueryWarehouseConfig, credentials: Any) -> Any:
    try:
        from google.cloud import bigquery_storage
    except ImportError as err:
        raise ConfigError(
            "warehouse.storage_read_api needs google-cloud-bigquery-storage: "
            f"pip install 'mailers[{EXTRA}]', or set storage_read_api: false ({err})"
        ) from err
    if config.storage_api_endpoint is None:
        return bigquery_storage.BigQueryReadClient(credentials=credentials)
    import grpc
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
        BigQueryReadGrpcTransport,
    )

    # An emulator speaks plaintext gRPC; the default transport insists on TLS.
    channel = grpc.insecure_channel(config.storage_api_endpoint)
    return bigquery_storage.BigQueryReadClient(
        transport=BigQueryReadGrpcTransport(channel=channel, credentials=credentials)
    )
