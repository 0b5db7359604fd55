"""The ledger journal: durable before an append returns, in the warehouse in bulk, loaded
exactly once, and a killed writer's rows recovered by the next."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from adapters.warehouses import connect
from mailers.affinity import FirstSend, affinity_sql, record_first_sends
from mailers.config import WarehouseConfig
from mailers.errors import WarehouseError
from mailers.journal_config import JournalConfig
from mailers.ledger import LEDGER_TABLE, LedgerContext, LedgerEntry, LedgerStatus, LedgerWriter
from mailers.ledger_journal import (
    JOURNALED_TABLES,
    JournaledWarehouse,
    JournalFile,
    load_rows,
    read_journal,
    recover_journals,
)
from mailers.tables import LANDED_FILES_SCHEMA, ensure_tables
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

REPO = Path(__file__).resolve().parents[2]
CONTEXT = LedgerContext("acme", "lifecycle", "pro_tips", "once", "run-1")


class CountingWarehouse:
    """A DuckDB warehouse that counts the statements and appends that reach it."""

    def __init__(self, inner: Warehouse) -> None:
        self.inner = inner
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def execute(self, sql: str, params: Any = ()) -> int:
        if sql.lstrip().lower().startswith("insert"):
            self.writes += 1
        return self.inner.execute(sql, params)

    def append(self, schema: str, table: str, data: pa.Table) -> None:
        self.writes += 1
        self.inner.append(schema, table, data)


@pytest.fixture
def warehouse(tmp_path: Path, engine_config: WarehouseConfig) -> Iterator[Warehouse]:
    """A warehouse with Mailers' tables, on each engine in turn."""
    with connect(engine_config, tmp_path) as opened:
        ensure_tables(opened)
        yield opened


def entries(first: int, count: int, status: LedgerStatus = LedgerStatus.DISPATCHING) -> list[Any]:
    return [
        LedgerEntry(message_key=f"k{n:05d}", status=status, recipient=f"r{n}@example.com")
        for n in range(first, first + count)
    ]


def stored(warehouse: Warehouse) -> int:
    return int(warehouse.query(f"select count(*) from mailers.{LEDGER_TABLE}").column(0)[0].as_py())


def test_rows_are_buffered_then_loaded_in_bulk(warehouse: Warehouse, tmp_path: Path) -> None:
    counting = CountingWarehouse(warehouse)
    journaled = JournaledWarehouse(
        counting,
        tmp_path / "journal",
        "run-1",
        JournalConfig(flush_rows=250),  # type: ignore[arg-type]
    )
    writer = LedgerWriter(journaled, CONTEXT)
    for start in range(0, 1000, 10):  # 100 provider calls of 10 messages
        writer.record(entries(start, 10))
    assert journaled.journaled_appends == 100
    assert counting.writes == 4  # one load per 250 rows, not one statement per call
    assert stored(warehouse) == 1000
    writer.record(entries(1000, 5))
    assert stored(warehouse) == 1000  # buffered, durable only in the journal
    journaled.close()
    assert stored(warehouse) == 1005
    assert counting.writes == 5
    assert list((tmp_path / "journal").iterdir()) == []  # loaded: the journal is removed


def test_a_ledger_read_through_the_wrapper_sees_every_recorded_row(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    with JournaledWarehouse(warehouse, tmp_path / "journal", "run-1") as journaled:
        writer = LedgerWriter(journaled, CONTEXT)
        writer.record(entries(0, 3))
        assert stored(warehouse) == 0
        # The settled-keys check (and any other ledger read) loads the buffer first.
        settled = journaled.query(writer.settled_keys_sql())
        assert sorted(settled["message_key"].to_pylist()) == ["k00000", "k00001", "k00002"]
        assert journaled.loads == 1
        # Statements that do not touch the ledger leave the buffer alone.
        writer.record(entries(3, 1))
        journaled.query("select count(*) from mailers.events")
        assert journaled.loads == 1


def test_appends_inside_a_transaction_commit_or_roll_back_with_it(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    with JournaledWarehouse(warehouse, tmp_path / "journal", "run-1") as journaled:
        writer = LedgerWriter(journaled, CONTEXT)
        writer.record(entries(0, 2))
        with pytest.raises(RuntimeError), journaled.transaction():
            writer.record(entries(2, 2))
            raise RuntimeError("the statement after it failed")
        assert stored(warehouse) == 2  # the buffer was loaded; the transaction's rows not
        with journaled.transaction():
            writer.record(entries(4, 2))
        assert stored(warehouse) == 4


def test_a_killed_writers_rows_are_recovered_once(warehouse: Warehouse, tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from mailers.ledger import LedgerContext, LedgerEntry, LedgerStatus, LedgerWriter\n"
        "from mailers.ledger_journal import JOURNALED_TABLES, JournalFile\n"
        "journal = JournalFile(Path(sys.argv[1]), 'doomed', JOURNALED_TABLES['send_ledger'])\n"
        "for n in range(3):\n"
        "    journal.append(LedgerWriter.table_of(LedgerContext('acme', 'lifecycle', 'pro_tips',"
        " 'once', 'doomed'), [LedgerEntry(message_key=f'k{n}', status=LedgerStatus.DISPATCHING,"
        " recipient='r@example.com')]))\n"
        "print('recorded', flush=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(directory)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"recorded"
        # While its writer lives, a journal is not someone else's to load.
        assert recover_journals(warehouse, directory) == 0
        assert len(list(directory.glob("*.arrows"))) == 1
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert recover_journals(warehouse, directory) == 3
    assert list(directory.glob("*.arrows")) == []
    rows = warehouse.query(f"select message_key, status from mailers.{LEDGER_TABLE}").to_pylist()
    assert sorted(r["message_key"] for r in rows) == ["k0", "k1", "k2"]
    assert {r["status"] for r in rows} == {"dispatching"}
    assert recover_journals(warehouse, directory) == 0


def test_a_torn_last_batch_is_left_out(tmp_path: Path) -> None:
    journal = JournalFile(tmp_path, "run-1", JOURNALED_TABLES[LEDGER_TABLE])
    journal.append(LedgerWriter.table_of(CONTEXT, entries(0, 4)))
    whole = journal.path.stat().st_size
    journal.append(LedgerWriter.table_of(CONTEXT, entries(4, 4)))
    with open(journal.path, "r+b") as handle:
        handle.truncate(whole + (journal.path.stat().st_size - whole) // 2)
    assert read_journal(journal.path)["message_key"].to_pylist() == [f"k{n:05d}" for n in range(4)]
    journal.close(remove=False)


def test_a_journal_killed_before_its_schema_reads_empty(tmp_path: Path) -> None:
    empty = tmp_path / "x.send_ledger.arrows"
    empty.write_bytes(b"")
    assert read_journal(empty).num_rows == 0


def test_loading_the_same_rows_twice_adds_nothing(warehouse: Warehouse) -> None:
    rows = LedgerWriter.table_of(CONTEXT, entries(0, 50))
    assert load_rows(warehouse, rows) == 50
    assert load_rows(warehouse, rows) == 0  # a retried load, or a journal recovered twice
    assert stored(warehouse) == 50


def test_a_failed_load_keeps_the_journal_for_the_next_run(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    directory = tmp_path / "journal"
    journaled = JournaledWarehouse(warehouse, directory, "run-1")
    LedgerWriter(journaled, CONTEXT).record(entries(0, 7))
    warehouse.execute(f"alter table mailers.{LEDGER_TABLE} rename to ledger_away")
    with pytest.raises(WarehouseError):
        journaled.close()
    assert len(list(directory.glob("*.arrows"))) == 1
    warehouse.execute(f"alter table mailers.ledger_away rename to {LEDGER_TABLE}")
    assert recover_journals(warehouse, directory) == 7
    assert list(directory.glob("*.arrows")) == []


def test_a_body_that_fails_still_loads_what_it_recorded(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError), JournaledWarehouse(warehouse, tmp_path, "run-1") as journaled:
        LedgerWriter(journaled, CONTEXT).record(entries(0, 2))
        raise RuntimeError("the provider call after it failed")
    assert stored(warehouse) == 2


def test_other_tables_write_straight_through(warehouse: Warehouse, tmp_path: Path) -> None:
    with JournaledWarehouse(warehouse, tmp_path, "run-1") as journaled:
        journaled.append(
            MAILERS_SCHEMA,
            "landed_files",
            pa.Table.from_pylist(
                [
                    {
                        "source_file": "a.jsonl",
                        "provider_account": "pm",
                        "event_count": 1,
                        "loaded_at": datetime(2026, 1, 5),
                    }
                ],
                schema=LANDED_FILES_SCHEMA,
            ),
        )
        assert (
            warehouse.query("select count(*) from mailers.landed_files").column(0)[0].as_py() == 1
        )
        assert journaled.journaled_appends == 0


def test_the_config_turns_the_journal_on_for_remote_warehouses() -> None:
    assert not JournalConfig().enabled("duckdb")
    assert not JournalConfig().enabled("postgres")
    assert JournalConfig().enabled("bigquery")
    assert JournalConfig(journal="on").enabled("duckdb")
    assert not JournalConfig(journal="off").enabled("snowflake")


def test_first_sends_are_journaled_and_loaded_once(warehouse: Warehouse, tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    sends = [FirstSend(f"R{n}@example.com", "pm", "news", f"k{n}") for n in range(4)]
    journaled = JournaledWarehouse(warehouse, directory, "run-1")
    record_first_sends(journaled, "acme", "lifecycle", sends)
    LedgerWriter(journaled, CONTEXT).record(entries(0, 4, LedgerStatus.ACCEPTED))
    assert {p.name.split(".")[-2] for p in directory.glob("*.arrows")} == {
        "send_ledger",
        "recipient_affinity",
    }
    # Killed here: the next run recovers both tables' rows, once.
    for journal in journaled.journals:
        journal.close(remove=False)
    assert recover_journals(warehouse, directory) == 8
    assert recover_journals(warehouse, directory) == 0
    firsts = warehouse.query(affinity_sql(warehouse, "acme", "lifecycle"))
    assert sorted(firsts["recipient"].to_pylist()) == [f"r{n}@example.com" for n in range(4)]
