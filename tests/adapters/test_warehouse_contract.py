"""The warehouse contract: every engine behind ``mailers.warehouse.Warehouse`` passes the same
assertions (DuckDB on a file, Postgres on a real server the tests start, BigQuery on an
emulator the tests start, Snowflake on fakesnow patched into the connector per test); where
an engine's capabilities say it differs, the test checks what it declares instead, and where
an emulator differs from its engine the test is a strict xfail naming the gap (it runs, and
must fail, so a fixed emulator is noticed)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import TypeAdapter

from adapters.warehouses import OpenWarehouse, connect
from mailers.addresses import ADDRESS_PATTERN, WHITESPACE
from mailers.config import WarehouseConfig
from mailers.errors import ConfigError, WarehouseError
from mailers.ledger import LEDGER_SCHEMA

ENGINES = [
    "duckdb",
    "postgres",
    "bigquery",
    "snowflake",
    "snowflake_wire",
    pytest.param("snowflake_live", marks=pytest.mark.live),
]
"""Where the contract runs: ``<kind>`` on the fixture ``<kind>_config`` (an emulator or a
server the tests start), ``snowflake_wire`` on fakesnow's server through the unpatched
connector, ``<kind>_live`` on a real account (skipped without one)."""

EMULATOR_GAPS = {
    ("snowflake", "timestamp_text"): "fakesnow ignores TO_CHAR's format argument",
    ("snowflake_wire", "timestamp_text"): "fakesnow ignores TO_CHAR's format argument",
}
"""(engine, what) -> how the engine's emulator differs from the engine there."""


def emulator_gap(request: pytest.FixtureRequest, target: str, what: str) -> None:
    """Expect the running test to fail on ``target``'s emulator, for the recorded reason."""
    reason = EMULATOR_GAPS.get((target, what))
    if reason is not None:
        request.applymarker(pytest.mark.xfail(reason=f"emulator gap: {reason}", strict=True))


def engine_config(request: pytest.FixtureRequest, target: str) -> Any:
    document = (
        {"kind": "duckdb", "path": "contract.duckdb"}
        if target == "duckdb"
        else request.getfixturevalue(f"{target}_config")
    )
    return TypeAdapter(WarehouseConfig).validate_python(document)


@pytest.fixture(params=ENGINES)
def target(request: pytest.FixtureRequest) -> str:
    """Where this run of a contract test goes (an entry of :data:`ENGINES`)."""
    return str(request.param)


@pytest.fixture
def engine(target: str) -> str:
    """The engine of :func:`target`, as its config's ``kind`` names it."""
    return target.removesuffix("_live").removesuffix("_wire")


@pytest.fixture
def warehouse(
    request: pytest.FixtureRequest, target: str, tmp_path: Path
) -> Iterator[OpenWarehouse]:
    with connect(engine_config(request, target), tmp_path) as wh:
        yield wh


MOMENT = datetime(2026, 11, 23, 8, 0, 0, 123456)

TRICKY_TEXT = ["plain", "", 'comma, "quote" and\nnewline', "naïve 'apostrophe' ✉", "50% \\ back"]


def ledger_rows(count: int) -> pa.Table:
    rows = [
        {
            "ledger_id": f"id{i}",
            "message_key": f"key{i:03d}",
            "status": "accepted",
            "reason": TRICKY_TEXT[i % len(TRICKY_TEXT)] if i % 3 else None,
            "workspace": "acme",
            "stream": "lifecycle",
            "campaign": "c",
            "send_window": "once",
            "recipient": f"user{i}@example.com",
            "run_id": "r",
            "recorded_at": MOMENT.replace(second=i % 60),
            "eligible_at": None,
        }
        for i in range(count)
    ]
    return pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA)


def test_capabilities_name_the_engine(warehouse: OpenWarehouse, engine: str) -> None:
    caps = warehouse.capabilities
    assert caps.engine == engine
    assert caps.transactions
    # BigQuery's and Snowflake's primary keys are declared, never enforced.
    assert caps.enforces_primary_keys is (engine not in ("bigquery", "snowflake"))
    assert caps.single_writer is (engine == "duckdb")


def test_append_then_query_round_trips_every_value(warehouse: OpenWarehouse) -> None:
    warehouse.ensure_table("mailers", "send_ledger", LEDGER_SCHEMA)
    data = ledger_rows(25)
    warehouse.append("mailers", "send_ledger", data)
    back = warehouse.query(
        f"select * from {warehouse.relation('mailers', 'send_ledger')} order by message_key"
    )
    assert back.column_names == LEDGER_SCHEMA.names
    assert back.to_pylist() == data.to_pylist()
    assert [f.type for f in back.schema] == [f.type for f in LEDGER_SCHEMA]


def test_append_takes_tables_of_many_chunks_some_empty(warehouse: OpenWarehouse) -> None:
    warehouse.ensure_table("mailers", "send_ledger", LEDGER_SCHEMA)
    data = ledger_rows(12)
    chunked = pa.concat_tables(
        [LEDGER_SCHEMA.empty_table(), data.slice(0, 5), LEDGER_SCHEMA.empty_table(), data.slice(5)]
    )
    warehouse.append("mailers", "send_ledger", chunked)
    warehouse.append("mailers", "send_ledger", LEDGER_SCHEMA.empty_table())
    back = warehouse.query(
        f"select * from {warehouse.relation('mailers', 'send_ledger')} order by message_key"
    )
    assert back.to_pylist() == data.to_pylist()


def test_stream_yields_bounded_batches_in_order(warehouse: OpenWarehouse) -> None:
    warehouse.ensure_table("mailers", "send_ledger", LEDGER_SCHEMA)
    warehouse.append("mailers", "send_ledger", ledger_rows(25))
    ledger = warehouse.relation("mailers", "send_ledger")
    batches = list(
        warehouse.stream(
            f"select message_key, reason from {ledger} where status = ? order by message_key",
            ["accepted"],
            batch_rows=10,
        )
    )
    assert [b.num_rows for b in batches] == [10, 10, 5]
    keys = [k for b in batches for k in b.column("message_key").to_pylist()]
    assert keys == sorted(f"key{i:03d}" for i in range(25))


def test_stream_survives_appends_on_the_same_warehouse(warehouse: OpenWarehouse) -> None:
    warehouse.ensure_table("mailers", "send_ledger", LEDGER_SCHEMA)
    warehouse.append("mailers", "send_ledger", ledger_rows(30))
    ledger = warehouse.relation("mailers", "send_ledger")
    seen = 0
    for batch in warehouse.stream(f"select * from {ledger} order by message_key", batch_rows=7):
        seen += batch.num_rows
        more = ledger_rows(1).to_pylist()
        more[0]["ledger_id"] = f"extra{seen}"
        warehouse.append("mailers", "send_ledger", pa.Table.from_pylist(more, LEDGER_SCHEMA))
    assert seen == 30


def test_query_parameters_and_percent_literals(warehouse: OpenWarehouse) -> None:
    result = warehouse.query(
        "select ? as a, cast(? as bigint) as n, '50%?' as lit where 'abc' like '%b%'",
        ["x'y", 7],
    )
    assert result.to_pylist() == [{"a": "x'y", "n": 7, "lit": "50%?"}]
    no_params = warehouse.query("select 'a%b' as lit where 'abc' like '%b%'")
    assert no_params.to_pylist() == [{"lit": "a%b"}]


def test_execute_counts_rows_changed(warehouse: OpenWarehouse) -> None:
    warehouse.ensure_table("mailers", "send_ledger", LEDGER_SCHEMA)
    warehouse.append("mailers", "send_ledger", ledger_rows(5))
    ledger = warehouse.relation("mailers", "send_ledger")
    copied = warehouse.execute(
        f"insert into {ledger} select * from {ledger} where message_key < ?", ["key002"]
    )
    assert copied == 2
    count = warehouse.query(f"select count(*) as n from {ledger}").to_pylist()
    assert count == [{"n": 7}]
    # The claim fence's compare-and-set reads an update's count, in a transaction.
    with warehouse.transaction():
        moved = warehouse.execute(
            f"update {ledger} set status = ? where message_key = ? and status = ?",
            ["failed", "key003", "accepted"],
        )
        again = warehouse.execute(
            f"update {ledger} set status = ? where message_key = ? and status = ?",
            ["failed", "key003", "accepted"],
        )
    assert (moved, again) == (1, 0)


def test_bad_sql_is_a_warehouse_error(warehouse: OpenWarehouse) -> None:
    with pytest.raises(WarehouseError):
        warehouse.execute("select * from mailers.no_such_table")
    with pytest.raises(WarehouseError):
        warehouse.query("selec 1")
    with pytest.raises(WarehouseError):
        list(warehouse.stream("select * from mailers.no_such_table"))


def test_empty_results_keep_their_columns(warehouse: OpenWarehouse) -> None:
    warehouse.ensure_table("mailers", "send_ledger", LEDGER_SCHEMA)
    ledger = warehouse.relation("mailers", "send_ledger")
    result = warehouse.query(f"select message_key, recorded_at from {ledger}")
    assert result.num_rows == 0
    assert result.column_names == ["message_key", "recorded_at"]


def test_ensure_table_is_idempotent_and_adds_missing_columns(warehouse: OpenWarehouse) -> None:
    old = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("n", pa.int64())])
    warehouse.ensure_table("mailers", "things", old)
    warehouse.append("mailers", "things", pa.table({"id": ["a"], "n": [1]}))
    new = old.append(pa.field("seen_at", pa.timestamp("us"))).append(pa.field("ok", pa.bool_()))
    warehouse.ensure_table("mailers", "things", new)
    warehouse.ensure_table("mailers", "things", new)
    assert warehouse.columns("mailers", "things") == ["id", "n", "seen_at", "ok"]
    rows = warehouse.query(f"select * from {warehouse.relation('mailers', 'things')}")
    assert rows.to_pylist() == [{"id": "a", "n": 1, "seen_at": None, "ok": None}]


def test_a_null_in_a_required_column_is_refused(warehouse: OpenWarehouse) -> None:
    schema = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("n", pa.int64())])
    warehouse.ensure_table("mailers", "things", schema)
    with pytest.raises(WarehouseError):
        warehouse.append("mailers", "things", pa.table({"id": pa.array([None], pa.string())}))
    assert warehouse.query(f"select * from {warehouse.relation('mailers', 'things')}").num_rows == 0


def test_primary_key_refuses_a_second_row(warehouse: OpenWarehouse) -> None:
    if not warehouse.capabilities.enforces_primary_keys:
        pytest.skip(f"{warehouse.capabilities.engine} declares primary keys it does not enforce")
    schema = pa.schema([pa.field("k", pa.string(), nullable=False), pa.field("v", pa.int64())])
    warehouse.ensure_table("mailers", "keyed", schema, primary_key=["k"])
    warehouse.append("mailers", "keyed", pa.table({"k": ["a"], "v": [1]}))
    with pytest.raises(WarehouseError):
        warehouse.append("mailers", "keyed", pa.table({"k": ["a"], "v": [2]}))
    rows = warehouse.query(f"select v from {warehouse.relation('mailers', 'keyed')}")
    assert rows.to_pylist() == [{"v": 1}]


def test_a_send_window_is_claimed_by_one_run_at_a_time(warehouse: OpenWarehouse) -> None:
    """The claim on the engine's own SQL: keyed engines refuse the second acquisition by
    key, the others through the fence, which then counts every acquisition."""
    from mailers.claims import FENCE_TABLE, WindowClaim
    from mailers.clock import FixedClock
    from mailers.errors import WindowClaimed
    from mailers.ledger import LedgerContext
    from mailers.tables import ensure_tables

    ensure_tables(warehouse)
    clock = FixedClock(datetime(2026, 11, 30, 8, 0, 5))

    def context(run_id: str) -> LedgerContext:
        return LedgerContext("acme", "lifecycle", "pro_tips", "once", run_id)

    first = WindowClaim.acquire(warehouse, context("run-a"), clock=clock)
    with pytest.raises(WindowClaimed, match="being sent by run run-a"):
        WindowClaim.acquire(warehouse, context("run-b"), clock=clock)
    first.release()
    second = WindowClaim.acquire(warehouse, context("run-b"), clock=clock)
    assert (first.generation, second.generation) == (1, 2)
    fence = warehouse.query(
        f"select max(version) as version from {warehouse.relation('mailers', FENCE_TABLE)}"
    ).to_pylist()
    fenced = not warehouse.capabilities.enforces_primary_keys
    assert fence == [{"version": 2 if fenced else None}]


def test_columns_of_tables_views_and_missing_relations(warehouse: OpenWarehouse) -> None:
    assert warehouse.columns("mailers", "nothing") is None
    assert warehouse.columns("no_such_schema", "nothing") is None
    warehouse.ensure_table("mailers", "send_ledger", LEDGER_SCHEMA)
    assert warehouse.columns("mailers", "send_ledger") == LEDGER_SCHEMA.names
    warehouse.execute("create schema if not exists segments")
    warehouse.execute(
        "create view segments.v as select recipient as email, status as plan "
        f"from {warehouse.relation('mailers', 'send_ledger')}"
    )
    assert warehouse.columns("segments", "v") == ["email", "plan"]


def test_transaction_rolls_back_on_error_and_nested_blocks_join(
    warehouse: OpenWarehouse,
) -> None:
    warehouse.ensure_table("mailers", "send_ledger", LEDGER_SCHEMA)
    ledger = warehouse.relation("mailers", "send_ledger")
    with pytest.raises(RuntimeError), warehouse.transaction():
        warehouse.append("mailers", "send_ledger", ledger_rows(3))
        with warehouse.transaction():
            warehouse.execute(f"delete from {ledger} where message_key = ?", ["key000"])
        raise RuntimeError("boom")
    assert warehouse.query(f"select count(*) as n from {ledger}").to_pylist() == [{"n": 0}]
    with warehouse.transaction():
        warehouse.append("mailers", "send_ledger", ledger_rows(3))
        with warehouse.transaction():
            warehouse.execute(f"delete from {ledger} where message_key = ?", ["key000"])
    assert warehouse.query(f"select count(*) as n from {ledger}").to_pylist() == [{"n": 2}]


def test_staged_rows_are_queryable_only_inside_the_block(
    warehouse: OpenWarehouse, engine: str
) -> None:
    data = pa.table(
        {"address": ["a@x.test", None, "b@y.test"], "n": [1, 2, 3], "seen_at": [MOMENT] * 3}
    )
    with warehouse.staged(data) as staged:
        rows = warehouse.query(f"select address, n, seen_at from {staged} order by n").to_pylist()
        name = staged
    assert rows == data.to_pylist()
    if engine == "snowflake":
        # Staged rows live in one scratch table (DML only, so a staged block inside a
        # transaction rolls back with it): the relation outlives the block, its rows do not.
        assert warehouse.query(f"select * from {name}").num_rows == 0
        return
    with pytest.raises(WarehouseError):
        warehouse.query(f"select * from {name}")


def test_replace_table_swaps_contents(warehouse: OpenWarehouse) -> None:
    warehouse.execute("create schema if not exists mailers_work")
    target = warehouse.replace_table("mailers_work", "t", "select 1 as a, 'x' as b")
    assert target == warehouse.relation("mailers_work", "t")
    warehouse.replace_table("mailers_work", "t", "select 2 as a")
    assert warehouse.query(f"select * from {target}").to_pylist() == [{"a": 2}]


def test_read_only_refuses_writes(
    request: pytest.FixtureRequest, target: str, tmp_path: Path
) -> None:
    config = engine_config(request, target)
    with connect(config, tmp_path) as writer:
        writer.ensure_table("mailers", "send_ledger", LEDGER_SCHEMA)
    with connect(config, tmp_path, read_only=True) as reader:
        assert reader.columns("mailers", "send_ledger") == LEDGER_SCHEMA.names
        with pytest.raises(WarehouseError):
            reader.append("mailers", "send_ledger", ledger_rows(1))


def _value(warehouse: OpenWarehouse, expression: str, text: str | None) -> Any:
    with warehouse.staged(pa.table({"x": pa.array([text], pa.string())})) as staged:
        return warehouse.query(f"select {expression} as v from {staged}").column(0)[0].as_py()


@pytest.mark.parametrize(
    "text", ["Ada@Example.COM", "no-at-sign", "  \tpadded@x.test \n", "ünï@çødé.test", "", None]
)
def test_dialect_functions_agree_with_python(warehouse: OpenWarehouse, text: str | None) -> None:
    d = warehouse.dialect
    x = d.quote("x")
    matched = _value(warehouse, d.regexp_matches(x, ADDRESS_PATTERN), text)
    assert matched == (None if text is None else bool(re.search(ADDRESS_PATTERN, text)))
    group = _value(warehouse, d.regexp_group(x, "@([^@]*)$"), text)
    found = None if text is None else re.search("@([^@]*)$", text)
    assert group == (None if text is None else found.group(1) if found else "")
    assert _value(warehouse, d.trim_chars(x, WHITESPACE), text) == (
        None if text is None else text.strip(WHITESPACE)
    )
    digest = None if text is None else hashlib.md5(text.encode()).hexdigest()
    assert _value(warehouse, d.md5_hex(x), text) == digest
    sha = None if text is None else hashlib.sha256(text.encode()).hexdigest()
    assert _value(warehouse, d.sha256_hex(x), text) == sha
    document = None if text is None else json.dumps({"account": text, "n": 1})
    assert _value(warehouse, d.json_text(x, "account"), document) == text


def test_timestamp_text_always_shows_microseconds(
    request: pytest.FixtureRequest, warehouse: OpenWarehouse, target: str
) -> None:
    emulator_gap(request, target, "timestamp_text")
    d = warehouse.dialect
    for moment in (MOMENT, MOMENT.replace(microsecond=0)):
        with warehouse.staged(pa.table({"t": [moment]})) as staged:
            text = warehouse.query(f"select {d.timestamp_text('t')} as v from {staged}")
        assert text.column(0)[0].as_py() == moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def test_star_except_drops_the_named_columns(warehouse: OpenWarehouse) -> None:
    d = warehouse.dialect
    data = pa.table({"a": [1], "b": ["x"], "c": [True]})
    with warehouse.staged(data) as staged:
        star = d.star_except("s", ["b"], ["a", "b", "c"])
        result = warehouse.query(f"select {star} from {staged} as s")
    assert result.to_pylist() == [{"a": 1, "c": True}]


def test_postgres_password_comes_from_the_environment(
    postgres_config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TypeAdapter(WarehouseConfig).validate_python(postgres_config)
    monkeypatch.setenv(postgres_config["password"]["env"], "wrong-password")
    with pytest.raises(WarehouseError) as caught:
        connect(config, tmp_path)
    assert "wrong-password" not in str(caught.value)
    assert postgres_config["database"] in str(caught.value)
    monkeypatch.delenv(postgres_config["password"]["env"])
    with pytest.raises(Exception, match=postgres_config["password"]["env"]):
        connect(config, tmp_path)


def test_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import builtins

    real_import = builtins.__import__

    def no_psycopg(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "psycopg" or name.startswith("psycopg."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_psycopg)
    config = TypeAdapter(WarehouseConfig).validate_python(
        {"kind": "postgres", "host": "127.0.0.1", "database": "d", "user": "u"}
    )
    with pytest.raises(ConfigError, match=r"mailers\[postgres\]"):
        connect(config, tmp_path)
