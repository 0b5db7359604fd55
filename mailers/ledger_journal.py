"""The ledger journal: ledger rows durable on local disk first, in the warehouse in bulk.

A send records every message twice around its provider call (``dispatching`` before it,
the outcome after it). On DuckDB each of those appends is cheap; on BigQuery or Snowflake
two statements per provider call are slow, cost money and run into per-table quotas
(BigQuery's load jobs per table per day). The journal keeps the guarantee the ledger gives
(a record of what is about to be handed over is durable before the call) and makes the
warehouse writes bulk:

* :class:`JournaledWarehouse` wraps the run's :class:`~mailers.warehouse.Warehouse`. An
  ``append`` to the ledger table is written to the run's journal file (one Arrow IPC
  record batch, fsync'd before ``append`` returns) and buffered; the buffer is loaded into
  the warehouse in one statement every :attr:`JournalConfig.flush_rows` rows or
  :attr:`JournalConfig.flush_seconds`, before any statement that reads or writes the ledger
  through the wrapper (so every ledger read of the run, such as the settled-keys check, the
  usage behind caps or ``plan``, sees every row the run recorded), and when the run ends.
* A journal file belongs to one live writer, which holds an ``flock`` on it. A run killed
  before its last load leaves the file behind; :func:`recover_journals` (called when a
  journal is opened, and by ``plan``) loads every journal no live writer holds and removes
  it, so the next run, and its in-doubt check, sees the killed run's ``dispatching`` rows.
* Loading is idempotent: rows are appended only when their ``ledger_id`` is not stored
  yet, looking only at stored rows within the batch's ``recorded_at`` range, so a load
  retried after an error that hid its success, or a journal recovered twice, adds nothing.

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
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc

from mailers.clock import utcnow
from mailers.config import Settings
from mailers.journal_config import JournalConfig
from mailers.ledger import LEDGER_SCHEMA, LEDGER_TABLE
from mailers.warehouse import MAILERS_SCHEMA, Dialect, Warehouse

log = logging.getLogger(__name__)

JOURNAL_DIR = "ledger-journal"
"""The journals' folder in the data directory."""

SUFFIX = ".arrows"
"""A closed-over journal file's name ends so (Arrow IPC stream format)."""


def journal_dir(data_dir: Path) -> Path:
    """Where the ledger journals of a data directory live."""
    return data_dir / JOURNAL_DIR


class JournalFile:
    """One writer's append-only journal: Arrow record batches, each fsync'd when written.

    The file is created under a hidden name, locked, then renamed into place, so a
    recoverer never sees a journal that is not yet locked by its writer.
    """

    def __init__(self, directory: Path, run_id: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)[:80]
        name = f"{utcnow():%Y%m%dT%H%M%S%f}-{safe}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        hidden = directory / f".{name}.new"
        self._handle: BinaryIO = open(hidden, "xb")  # noqa: SIM115 - held for the writer's life
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX)
        self.path = directory / name
        os.rename(hidden, self.path)
        _fsync_dir(directory)
        self._writer = pa.ipc.new_stream(self._handle, LEDGER_SCHEMA)
        self._sync()
        self.rows = 0

    def append(self, table: pa.Table) -> None:
        """Write ``table``'s rows as one record batch; durable when this returns."""
        batch = table.select(LEDGER_SCHEMA.names).cast(LEDGER_SCHEMA).combine_chunks()
        self._writer.write_batch(batch.to_batches()[0] if batch.num_rows else batch)
        self._sync()
        self.rows += table.num_rows

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


def read_journal(path: Path) -> pa.Table:
    """Every complete record batch of a journal file (a torn last one is left out)."""
    batches: list[pa.RecordBatch] = []
    with open(path, "rb") as handle:
        try:
            reader = pa.ipc.open_stream(handle)
        except (pa.ArrowInvalid, OSError):
            return LEDGER_SCHEMA.empty_table()  # killed before its schema was written
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError):
                break  # the batch a kill tore: its append never returned
    return pa.Table.from_batches(batches, LEDGER_SCHEMA)


def load_rows(warehouse: Warehouse, rows: pa.Table) -> int:
    """Append the ledger ``rows`` not stored yet (by ``ledger_id``); how many were new.

    Only stored rows within ``rows``' ``recorded_at`` range are compared, so the cost
    does not grow with the ledger's history.
    """
    if rows.num_rows == 0:
        return 0
    ledger = warehouse.relation(MAILERS_SCHEMA, LEDGER_TABLE)
    columns = ", ".join(warehouse.dialect.quote(name) for name in LEDGER_SCHEMA.names)
    low, high = (
        _literal(pc.min(rows["recorded_at"]).as_py()),
        _literal(pc.max(rows["recorded_at"]).as_py()),
    )
    with warehouse.staged(rows.select(LEDGER_SCHEMA.names)) as staged:
        return warehouse.execute(
            f"insert into {ledger} ({columns}) select {columns} from {staged} as s "
            f"where not exists (select 1 from {ledger} as l where l.ledger_id = s.ledger_id "
            f"and l.recorded_at between {low} and {high})"
        )


def _literal(moment: datetime) -> str:
    return f"cast('{moment.isoformat(sep=' ')}' as timestamp)"


def recover_journals(warehouse: Warehouse, directory: Path) -> int:
    """Load and remove every journal in ``directory`` that no live writer holds.

    Returns how many ledger rows were new to the warehouse. A journal that cannot be
    loaded stays in place (the error propagates): its rows are never dropped.
    """
    if not directory.is_dir():
        return 0
    loaded = 0
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        with _unheld(path) as handle:
            if handle is None:
                continue  # its writer is alive, or another process is recovering it
            rows = read_journal(path)
            loaded += load_rows(warehouse, rows)
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
    """A :class:`~mailers.warehouse.Warehouse` whose ledger appends go through a journal.

    Everything else is passed to ``inner``. Use it as a context manager (or call
    :meth:`close`): leaving loads what is buffered and removes the journal; a load that
    fails leaves the journal for the next run to recover, and raises.
    """

    def __init__(
        self,
        inner: Warehouse,
        directory: Path,
        run_id: str,
        config: JournalConfig | None = None,
    ) -> None:
        self.inner = inner
        self.config = config or JournalConfig()
        self.recovered = recover_journals(inner, directory)
        """Rows of killed runs' journals loaded when this journal was opened."""
        self.journal = JournalFile(directory, run_id)
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._last_load = utcnow()
        self._lock = threading.RLock()
        self._transaction_depth = 0
        self._ledger = inner.relation(MAILERS_SCHEMA, LEDGER_TABLE)
        self.loads = 0
        """Statements that loaded buffered ledger rows into the warehouse."""
        self.journaled_appends = 0
        """Ledger appends the journal took (each would have been a warehouse statement)."""

    @property
    def dialect(self) -> Dialect:
        return self.inner.dialect

    def relation(self, schema: str, table: str) -> str:
        return self.inner.relation(schema, table)

    def __enter__(self) -> JournaledWarehouse:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is None:
            self.close()
            return
        # The body failed: load what it recorded if the warehouse takes it, but never let
        # that load's own error hide the body's (a failed load keeps the journal).
        try:
            self.close()
        except Exception as err:
            log.warning("ledger journal %s kept for the next run: %s", self.journal.path, err)

    def close(self) -> None:
        """Load what is buffered; then remove the journal (kept if the load fails)."""
        try:
            self.flush()
        except BaseException:
            self.journal.close(remove=False)
            raise
        self.journal.close(remove=True)

    def flush(self) -> int:
        """Load the buffered ledger rows into the warehouse now; how many were new."""
        with self._lock:
            if not self._pending:
                return 0
            rows = pa.concat_tables(self._pending)
            added = load_rows(self.inner, rows)
            self.loads += 1
            self._pending, self._pending_rows = [], 0
            self._last_load = utcnow()
            return added

    def append(self, schema: str, table: str, data: pa.Table) -> None:
        if (schema, table) != (MAILERS_SCHEMA, LEDGER_TABLE) or data.num_rows == 0:
            self.inner.append(schema, table, data)
            return
        with self._lock:
            if self._transaction_depth:
                self.flush()
                self.inner.append(schema, table, data)
                return
            self.journal.append(data)
            self.journaled_appends += 1
            self._pending.append(data)
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
        """Load the buffer before a statement that touches the ledger."""
        if self._pending and LEDGER_TABLE in sql:
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
