"""The ledger journal: ledger rows durable on local disk first, in the warehouse in bulk.

A send records every message twice around its provider call (``dispatching`` before it,
the outcome after it). On DuckDB each of those appends is cheap; on BigQuery or Snowflake
two statements per provider call are slow, cost money and run into per-table quotas
(BigQuery's load jobs per table per day). The journal keeps the guarantee the ledger gives
(a record of what is about to be handed over is durable before the call) and makes the
warehouse writes bulk:

* :class:`JournaledWarehouse` wraps the run's :class:`~mailers.warehouse.Warehouse`. An
  ``append`` to a journaled table (:data:`JOURNALED_TABLES`: the ledger, and recipient
  affinity, which a send appends per provider call too) is written to the run's journal
  file for that table (one Arrow IPC record batch, fsync'd before ``append`` returns) and
  buffered; the buffers are loaded into the warehouse, one statement per table, every
  :attr:`JournalConfig.flush_rows` rows or :attr:`JournalConfig.flush_seconds`, before
  any statement that reads or writes a journaled table through the wrapper (so every
  ledger read of the run, such as the settled-keys check, the usage behind caps or
  ``plan``, sees every row the run recorded), and when the run ends.
* A journal file belongs to one live writer, which holds an ``flock`` on it. A run killed
  before its last load leaves the file behind; :func:`recover_journals` (called when a
  journal is opened, and by ``plan``) loads every journal no live writer holds and removes
  it, so the next run, and its in-doubt check, sees the killed run's ``dispatching`` rows.
* Loading is idempotent: rows are appended only when their key (:class:`JournaledTable`)
  is not stored yet, looking only at stored rows within the batch's ``recorded_at`` range,
  so a load retried after an error that hid its success, or a journal recovered twice,
  adds nothing.

A kill can tear the journal's last record batch; that batch's ``append`` never returned,
so its provider call never started, and the reader stops before it.

Appends inside a warehouse transaction bypass the journal (after a load of what is
buffered): their rows must commit together with the transaction's other statements.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc

from mailers.affinity import AFFINITY_SCHEMA, AFFINITY_TABLE
from mailers.clock import utcnow
from mailers.config import Settings
from mailers.journal_config import JournalConfig
from mailers.ledger import LEDGER_SCHEMA, LEDGER_TABLE
from mailers.warehouse import MAILERS_SCHEMA, Dialect, Warehouse, WarehouseCapabilities

log = logging.getLogger(__name__)

JOURNAL_DIR = "ledger-journal"
"""The journals' folder in the data directory."""

SUFFIX = ".arrows"
"""A journal file's name ends so (Arrow IPC stream format)."""


@dataclass(frozen=True)
class JournaledTable:
    """An append-only table of ``mailers`` a send writes per provider call."""

    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    """Columns that tell a row apart from every other (what an idempotent load compares)."""


JOURNALED_TABLES = {
    table.name: table
    for table in (
        JournaledTable(LEDGER_TABLE, LEDGER_SCHEMA, ("ledger_id",)),
        JournaledTable(
            AFFINITY_TABLE, AFFINITY_SCHEMA, ("workspace", "stream", "recipient", "message_key")
        ),
    )
}
"""The tables whose appends go through the journal, by name."""


def journal_dir(data_dir: Path) -> Path:
    """Where the ledger journals of a data directory live."""
    return data_dir / JOURNAL_DIR


class JournalFile:
    """One writer's append-only journal of one table: Arrow record batches, each fsync'd
    when written (``<stamp>-<run>-<id>.<table>.arrows``).

    The file is created under a hidden name, locked, then renamed into place, so a
    recoverer never sees a journal that is not yet locked by its writer.
    """

    def __init__(self, directory: Path, run_id: str, table: JournaledTable) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.table = table
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)[:80]
        stem = f"{utcnow():%Y%m%dT%H%M%S%f}-{safe}-{uuid.uuid4().hex[:8]}"
        name = f"{stem}.{table.name}{SUFFIX}"
        hidden = directory / f".{name}.new"
        self._handle: BinaryIO = open(hidden, "xb")  # noqa: SIM115 - held for the writer's life
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX)
        self.path = directory / name
        os.rename(hidden, self.path)
        _fsync_dir(directory)
        self._writer = pa.ipc.new_stream(self._handle, table.schema)
        self._sync()
        self.rows = 0

    def append(self, data: pa.Table) -> None:
        """Write ``data``'s rows as one record batch; durable when this returns."""
        schema = self.table.schema
        # One chunk, so one record batch: a torn tail loses at most this append.
        self._writer.write_table(data.select(schema.names).cast(schema).combine_chunks())
        self._sync()
        self.rows += data.num_rows

    def close(self, *, remove: bool) -> None:
        """Release the lock; ``remove`` the file once everything in it is loaded."""
        with contextlib.suppress(Exception):
            self._writer.close()
        if remove:
            self.path.unlink(missing_ok=True)
            _fsync_dir(self.path.parent)
        self._handle.close()

    def _sync(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())


def table_of(path: Path) -> JournaledTable | None:
    """The table a journal file journals, from its name (``None`` for a foreign file)."""
    name = path.name.removesuffix(SUFFIX).rsplit(".", 1)[-1]
    return JOURNALED_TABLES.get(name)


def read_journal(path: Path, table: JournaledTable | None = None) -> pa.Table:
    """Every complete record batch of a journal file (a torn last one is left out); its
    ``table`` defaults to the one its name says."""
    schema = (table or table_of(path) or JOURNALED_TABLES[LEDGER_TABLE]).schema
    batches: list[pa.RecordBatch] = []
    with open(path, "rb") as handle:
        try:
            reader = pa.ipc.open_stream(handle)
        except (pa.ArrowInvalid, OSError):
            return schema.empty_table()  # killed before its schema was written
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError):
                break  # the batch a kill tore: its append never returned
    return pa.Table.from_batches(batches, schema)


def load_rows(warehouse: Warehouse, rows: pa.Table, table: JournaledTable | None = None) -> int:
    """Append the ``rows`` of ``table`` (default the ledger) not stored yet, by the table's
    key; how many were new.

    Only stored rows within ``rows``' ``recorded_at`` range are compared, so the cost
    does not grow with the table's history.
    """
    table = table or JOURNALED_TABLES[LEDGER_TABLE]
    if rows.num_rows == 0:
        return 0
    relation = warehouse.relation(MAILERS_SCHEMA, table.name)
    quote = warehouse.dialect.quote
    columns = ", ".join(quote(name) for name in table.schema.names)
    same = " and ".join(f"t.{quote(c)} = s.{quote(c)}" for c in table.key)
    low = _literal(pc.min(rows["recorded_at"]).as_py())
    high = _literal(pc.max(rows["recorded_at"]).as_py())
    with warehouse.staged(rows.select(table.schema.names)) as staged:
        return warehouse.execute(
            f"insert into {relation} ({columns}) select {columns} from {staged} as s "
            f"where not exists (select 1 from {relation} as t where {same} "
            f"and t.recorded_at between {low} and {high})"
        )


def _literal(moment: datetime) -> str:
    return f"cast('{moment.isoformat(sep=' ')}' as timestamp)"


def recover_journals(warehouse: Warehouse, directory: Path) -> int:
    """Load and remove every journal in ``directory`` that no live writer holds.

    Returns how many rows were new to the warehouse. A journal that cannot be
    loaded stays in place (the error propagates): its rows are never dropped.
    """
    if not directory.is_dir():
        return 0
    loaded = 0
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        table = table_of(path)
        if table is None:
            continue  # not a journal of a table this version journals: left alone
        with _unheld(path) as handle:
            if handle is None:
                continue  # its writer is alive, or another process is recovering it
            rows = read_journal(path, table)
            loaded += load_rows(warehouse, rows, table)
            log.info(
                "loaded the ledger journal %s of a run that ended early (%d rows)",
                path.name,
                rows.num_rows,
            )
            path.unlink(missing_ok=True)
            _fsync_dir(directory)
    return loaded


@contextmanager
def _unheld(path: Path) -> Iterator[BinaryIO | None]:
    """The journal opened and locked, or ``None`` while someone else holds it or it is gone."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                yield None
                return
            raise
        # Removed by the recoverer we waited for: its rows are loaded already.
        yield None if os.fstat(handle.fileno()).st_nlink == 0 else handle
    finally:
        handle.close()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JournaledWarehouse:
    """A :class:`~mailers.warehouse.Warehouse` whose appends to :data:`JOURNALED_TABLES` go
    through a journal.

    Everything else is passed to ``inner``. Use it as a context manager (or call
    :meth:`close`): leaving loads what is buffered and removes the journals; a load that
    fails leaves them for the next run to recover, and raises.
    """

    def __init__(
        self,
        inner: Warehouse,
        directory: Path,
        run_id: str,
        config: JournalConfig | None = None,
    ) -> None:
        self.inner = inner
        self.directory = directory
        self.run_id = run_id
        self.config = config or JournalConfig()
        self.recovered = recover_journals(inner, directory)
        """Rows of killed runs' journals loaded when this journal was opened."""
        self._journals: dict[str, JournalFile] = {}
        self._pending: dict[str, list[pa.Table]] = {}
        self._pending_rows = 0
        self._last_load = utcnow()
        self._lock = threading.RLock()
        self._transaction_depth = 0
        self.loads = 0
        """Statements that loaded buffered rows into the warehouse."""
        self.journaled_appends = 0
        """Appends the journal took (each would have been a warehouse statement)."""

    @property
    def dialect(self) -> Dialect:
        return self.inner.dialect

    @property
    def capabilities(self) -> WarehouseCapabilities:
        return self.inner.capabilities

    @property
    def journals(self) -> list[JournalFile]:
        """The journal files of this run (one per table it appended to)."""
        return list(self._journals.values())

    def relation(self, schema: str, table: str) -> str:
        return self.inner.relation(schema, table)

    def __enter__(self) -> JournaledWarehouse:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is None:
            self.close()
            return
        # The body failed: load what it recorded if the warehouse takes it, but never let
        # that load's own error hide the body's (a failed load keeps the journals).
        try:
            self.close()
        except Exception as err:
            log.warning("ledger journals of run %s kept for the next run: %s", self.run_id, err)

    def close(self) -> None:
        """Load what is buffered; then remove the journals (kept if the load fails)."""
        try:
            self.flush()
        except BaseException:
            for journal in self._journals.values():
                journal.close(remove=False)
            raise
        for journal in self._journals.values():
            journal.close(remove=True)
        self._journals.clear()

    def flush(self) -> int:
        """Load the buffered rows into the warehouse now (one statement per table, the
        ledger last); how many were new."""
        with self._lock:
            added = 0
            # Affinity before the ledger: a reader that sees a message accepted in the
            # ledger then sees its recipient's first send too.
            for name in sorted(self._pending, key=lambda n: n == LEDGER_TABLE):
                tables = self._pending[name]
                added += load_rows(self.inner, pa.concat_tables(tables), JOURNALED_TABLES[name])
                self.loads += 1
                del self._pending[name]
            self._pending_rows = 0
            self._last_load = utcnow()
            return added

    def append(self, schema: str, table: str, data: pa.Table) -> None:
        journaled = JOURNALED_TABLES.get(table) if schema == MAILERS_SCHEMA else None
        if journaled is None or data.num_rows == 0:
            self.inner.append(schema, table, data)
            return
        with self._lock:
            if self._transaction_depth:
                self.flush()
                self.inner.append(schema, table, data)
                return
            journal = self._journals.get(table)
            if journal is None:
                journal = self._journals[table] = JournalFile(
                    self.directory, self.run_id, journaled
                )
            journal.append(data)
            self.journaled_appends += 1
            self._pending.setdefault(table, []).append(data)
            self._pending_rows += data.num_rows
            due = (utcnow() - self._last_load).total_seconds() >= self.config.flush_seconds
            if self._pending_rows >= self.config.flush_rows or due:
                self.flush()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._before(sql)
        return self.inner.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        self._before(sql)
        return self.inner.query(sql, params)

    def replace_table(self, schema: str, table: str, query: str) -> str:
        self._before(query)
        return self.inner.replace_table(schema, table, query)

    def stream(
        self, sql: str, params: Sequence[Any] = (), batch_rows: int = 10_000
    ) -> Iterator[pa.RecordBatch]:
        self._before(sql)
        return self.inner.stream(sql, params, batch_rows)

    def ensure_table(
        self, schema: str, table: str, columns: pa.Schema, primary_key: Sequence[str] = ()
    ) -> None:
        self.inner.ensure_table(schema, table, columns, primary_key)

    def columns(self, schema: str, table: str) -> list[str] | None:
        return self.inner.columns(schema, table)

    def staged(self, data: pa.Table) -> AbstractContextManager[str]:
        return self.inner.staged(data)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            self.flush()
            self._transaction_depth += 1
        try:
            with self.inner.transaction():
                yield
        finally:
            with self._lock:
                self._transaction_depth -= 1

    def _before(self, sql: str) -> None:
        """Load the buffers before a statement that touches a journaled table."""
        # Case-folded: a dialect may spell the (lower-case) names otherwise, as Snowflake's
        # quotes them upper-case. Loading for a statement that only looks similar is safe.
        folded = sql.lower()
        if self._pending and any(name in folded for name in self._pending):
            self.flush()


@contextmanager
def send_warehouse(warehouse: Warehouse, settings: Settings, run_id: str) -> Iterator[Warehouse]:
    """The warehouse a send records its ledger through, for the duration of the send.

    Journaled (:class:`JournaledWarehouse`) when the config's ``ledger.journal`` says so
    for this warehouse, else ``warehouse`` itself; either way the journals of runs that
    ended early are loaded first, so the send's in-doubt check sees their rows.
    """
    directory = journal_dir(settings.data_dir)
    if not settings.config.ledger.enabled(settings.config.warehouse.kind):
        recover_journals(warehouse, directory)
        yield warehouse
        return
    with JournaledWarehouse(warehouse, directory, run_id, settings.config.ledger) as journaled:
        yield journaled
