"""The DuckDB warehouse adapter: tables, Arrow in and out, transactions, one writer."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest

from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.errors import WarehouseError
from mailers.ledger import LEDGER_SCHEMA, LEDGER_TABLE
from mailers.warehouse import MAILERS_SCHEMA

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "warehouse.duckdb"


@pytest.fixture
def warehouse(db_path: Path) -> Iterator[DuckDBWarehouse]:
    with DuckDBWarehouse(db_path) as wh:
        yield wh


def ledger_rows(count: int, *, status: str = "accepted") -> pa.Table:
    now = datetime(2026, 11, 23, 8, 0, 0, 123456)
    rows = [
        {
            "ledger_id": f"id{i}",
            "message_key": f"key{i}",
            "status": status,
            "reason": None if i % 2 else "because",
            "workspace": "acme",
            "stream": "lifecycle",
            "campaign": "pro_tips",
            "send_window": "once",
            "recipient": f"user{i}@example.com",
            "identity": "acme_news",
            "sending_domain": "news.acme.test",
            "provider": "sandbox",
            "provider_account": "acme_sandbox_a",
            "provider_message_id": f"m{i}",
            "batch_id": "b1",
            "run_id": "run-1",
            "recorded_at": now,
        }
        for i in range(count)
    ]
    return pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA)


def test_opening_creates_parent_directories(db_path: Path) -> None:
    with DuckDBWarehouse(db_path):
        pass

    assert db_path.is_file()


def test_ensure_table_creates_schema_and_is_idempotent(warehouse: DuckDBWarehouse) -> None:
    warehouse.ensure_table(MAILERS_SCHEMA, LEDGER_TABLE, LEDGER_SCHEMA)
    warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, ledger_rows(3))

    warehouse.ensure_table(MAILERS_SCHEMA, LEDGER_TABLE, LEDGER_SCHEMA)

    assert warehouse.columns(MAILERS_SCHEMA, LEDGER_TABLE) == LEDGER_SCHEMA.names
    count = warehouse.query('select count(*) as n from "mailers"."send_ledger"')
    assert count["n"].to_pylist() == [3]


def test_ensure_table_enforces_not_null(warehouse: DuckDBWarehouse) -> None:
    warehouse.ensure_table(MAILERS_SCHEMA, LEDGER_TABLE, LEDGER_SCHEMA)

    with pytest.raises(WarehouseError):
        warehouse.execute(
            'insert into "mailers"."send_ledger" (ledger_id, message_key) values (?, ?)',
            ["id", "key"],
        )


def test_append_and_query_round_trip(warehouse: DuckDBWarehouse) -> None:
    warehouse.ensure_table(MAILERS_SCHEMA, LEDGER_TABLE, LEDGER_SCHEMA)
    data = ledger_rows(5)

    warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, data)

    result = warehouse.query(
        f"select * from {warehouse.relation(MAILERS_SCHEMA, LEDGER_TABLE)} order by ledger_id"
    )
    assert result.to_pylist() == data.to_pylist()


def test_append_matches_columns_by_name(warehouse: DuckDBWarehouse) -> None:
    warehouse.ensure_table(MAILERS_SCHEMA, LEDGER_TABLE, LEDGER_SCHEMA)
    data = ledger_rows(2)
    shuffled = data.select(list(reversed(data.column_names)))

    warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, shuffled)

    result = warehouse.query('select * from "mailers"."send_ledger" order by ledger_id')
    assert result.to_pylist() == data.to_pylist()


def test_append_of_nothing_is_a_no_op(warehouse: DuckDBWarehouse) -> None:
    warehouse.ensure_table(MAILERS_SCHEMA, LEDGER_TABLE, LEDGER_SCHEMA)

    warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, ledger_rows(0))

    assert warehouse.query('select * from "mailers"."send_ledger"').num_rows == 0


def test_append_to_missing_table_is_a_warehouse_error(warehouse: DuckDBWarehouse) -> None:
    with pytest.raises(WarehouseError, match="send_ledger"):
        warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, ledger_rows(1))


def test_query_with_parameters(warehouse: DuckDBWarehouse) -> None:
    result = warehouse.query("select ? + 1 as n, ? as s", [41, "x"])

    assert result.to_pylist() == [{"n": 42, "s": "x"}]


def test_stream_yields_bounded_batches_covering_all_rows(warehouse: DuckDBWarehouse) -> None:
    warehouse.execute("create table t as select range as i from range(25)")

    batches = list(warehouse.stream("select i from t order by i", batch_rows=7))

    assert all(isinstance(batch, pa.RecordBatch) for batch in batches)
    assert all(0 < batch.num_rows <= 7 for batch in batches)
    values = [value for batch in batches for value in batch.column("i").to_pylist()]
    assert values == list(range(25))


def test_stream_is_not_disturbed_by_writes_between_batches(warehouse: DuckDBWarehouse) -> None:
    warehouse.execute("create table t as select range as i from range(30)")
    warehouse.execute("create table log (i bigint)")
    seen = 0

    for batch in warehouse.stream("select i from t", batch_rows=10):
        seen += batch.num_rows
        warehouse.execute("insert into log values (?)", [batch.num_rows])

    assert seen == 30
    assert warehouse.query("select sum(i) as n from log")["n"].to_pylist() == [30]


def test_bad_sql_is_a_warehouse_error(warehouse: DuckDBWarehouse) -> None:
    with pytest.raises(WarehouseError, match="DuckDB"):
        warehouse.execute("select * from no_such_table")
    with pytest.raises(WarehouseError):
        warehouse.query("selec 1")
    with pytest.raises(WarehouseError):
        list(warehouse.stream("select * from no_such_table"))


def test_columns_of_tables_views_and_missing_relations(warehouse: DuckDBWarehouse) -> None:
    warehouse.execute("create schema s")
    warehouse.execute("create table s.t (b varchar, a bigint)")
    warehouse.execute("create view s.v as select a from s.t")

    assert warehouse.columns("s", "t") == ["b", "a"]
    assert warehouse.columns("s", "v") == ["a"]
    assert warehouse.columns("s", "missing") is None
    assert warehouse.columns("no_schema", "t") is None


def test_execute_returns_changed_row_counts(warehouse: DuckDBWarehouse) -> None:
    assert warehouse.execute("create table t (i bigint)") == 0
    assert warehouse.execute("insert into t select range from range(12)") == 12
    assert warehouse.execute("insert into t values (?)", [100]) == 1
    assert warehouse.execute("update t set i = i + 1 where i < 3") == 3
    assert warehouse.execute("delete from t where i >= 10") == 3
    assert warehouse.execute("insert into t select 1 where false") == 0


def test_transaction_commits(warehouse: DuckDBWarehouse) -> None:
    warehouse.execute("create table t (i bigint)")

    with warehouse.transaction():
        warehouse.execute("insert into t values (1)")
        warehouse.execute("insert into t values (2)")

    assert warehouse.query("select count(*) as n from t")["n"].to_pylist() == [2]


def test_transaction_rolls_back_on_exception(warehouse: DuckDBWarehouse) -> None:
    warehouse.execute("create table t (i bigint)")
    warehouse.execute("insert into t values (0)")

    with pytest.raises(RuntimeError, match="boom"), warehouse.transaction():
        warehouse.execute("insert into t values (1)")
        warehouse.append("main", "t", pa.table({"i": pa.array([2, 3], pa.int64())}))
        raise RuntimeError("boom")

    assert warehouse.query("select i from t")["i"].to_pylist() == [0]
    # The connection is usable afterwards.
    assert warehouse.execute("insert into t values (4)") == 1


def test_staged_data_is_queryable_only_inside_the_block(warehouse: DuckDBWarehouse) -> None:
    data = pa.table({"email": ["a@example.com", "b@example.com"], "n": [1, 2]})

    with warehouse.staged(data) as name:
        inside = warehouse.query(f"select email, n from {name} order by n").to_pylist()
        copied = warehouse.execute(f"create table copy as select * from {name}")

    assert inside == [{"email": "a@example.com", "n": 1}, {"email": "b@example.com", "n": 2}]
    assert copied == 2
    assert warehouse.query("select count(*) as n from copy")["n"].to_pylist() == [2]
    with pytest.raises(WarehouseError):
        warehouse.query(f"select * from {name}")


def test_staged_names_are_unique(warehouse: DuckDBWarehouse) -> None:
    data = pa.table({"x": [1]})

    with warehouse.staged(data) as first, warehouse.staged(data) as second:
        assert first != second


def test_relation_quotes_identifiers(warehouse: DuckDBWarehouse) -> None:
    assert warehouse.relation("mailers", "send_ledger") == '"mailers"."send_ledger"'
    assert warehouse.dialect.quote('we"ird') == '"we""ird"'


def test_data_persists_across_connections(db_path: Path) -> None:
    with DuckDBWarehouse(db_path) as first:
        first.ensure_table(MAILERS_SCHEMA, LEDGER_TABLE, LEDGER_SCHEMA)
        first.append(MAILERS_SCHEMA, LEDGER_TABLE, ledger_rows(4))

    with DuckDBWarehouse(db_path, read_only=True) as again:
        assert again.query('select count(*) as n from "mailers"."send_ledger"')["n"][0].as_py() == 4


def open_in_subprocess(path: Path, *, read_only: bool = False) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(
        f"""
        from adapters.warehouses.duckdb import DuckDBWarehouse
        from mailers.errors import WarehouseError
        try:
            DuckDBWarehouse({str(path)!r}, read_only={read_only!r}).close()
        except WarehouseError as err:
            print("WarehouseError:", err)
        else:
            print("opened")
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )


def test_second_writer_process_is_refused_while_one_is_open(db_path: Path) -> None:
    with DuckDBWarehouse(db_path) as holder:
        holder.execute("create table t (i bigint)")

        refused = open_in_subprocess(db_path)

    assert refused.stdout.startswith("WarehouseError:"), refused.stdout + refused.stderr
    assert str(db_path) in refused.stdout
    assert "one writer at a time" in refused.stdout
    # Once the holder has closed, another process opens it fine.
    assert open_in_subprocess(db_path).stdout.strip() == "opened"
