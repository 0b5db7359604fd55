"""The Snowflake warehouse adapter: the warehouse contract on fakesnow and on a live account.

``engine`` runs each contract test on fakesnow (snowflake-connector-python patched onto an
in-memory DuckDB per test) and, with the ``live`` marker, on a real account when
``SNOWFLAKE_ACCOUNT``, ``SNOWFLAKE_USER``, ``SNOWFLAKE_PASSWORD`` (or
``SNOWFLAKE_PRIVATE_KEY``), ``SNOWFLAKE_WAREHOUSE`` and optionally ``SNOWFLAKE_ROLE`` are
set; the live run creates a database ``MAILERS_TEST_<random>`` and drops it afterwards.

fakesnow is not in the project's environment: every release that supports DuckDB 2 pins
``sqlglot~=30.22.0``, while dagster-dbt's ``sqlglot[rs]`` holds sqlglot at 30.30.0, so
those tests skip there with that reason. Where fakesnow differs from Snowflake the test
says so (``FAKESNOW_GAP``).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from datetime import datetime

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from adapters.warehouses.snowflake import (
    CAPABILITIES,
    SnowflakeDialect,
    SnowflakeWarehouse,
    open_snowflake,
)
from mailers.addresses import ADDRESS_PATTERN, WHITESPACE
from mailers.errors import ConfigError, SecretMissing, WarehouseError
from mailers.events import EVENTS_SCHEMA, EVENTS_TABLE
from mailers.ledger import LEDGER_SCHEMA, LEDGER_TABLE
from mailers.snowflake_config import SnowflakeWarehouseConfig
from mailers.tables import OWNED_TABLES, ensure_tables
from mailers.warehouse import MAILERS_SCHEMA, WORK_SCHEMA

try:
    import fakesnow
    import snowflake.connector
except ImportError as err:
    fakesnow = None
    MISSING = (
        f"fakesnow / snowflake-connector-python not installed ({err}): every fakesnow "
        "release for duckdb 2 pins sqlglot~=30.22.0, and dagster-dbt holds sqlglot at 30.30.0"
    )
else:
    MISSING = ""

LIVE_VARIABLES = ("SNOWFLAKE_ACCOUNT", "SNOWFLAKE_USER", "SNOWFLAKE_WAREHOUSE")
FAKESNOW_GAP = "fakesnow gap"


def _live_config(database: str) -> SnowflakeWarehouseConfig:
    auth = (
        {"private_key": {"env": "SNOWFLAKE_PRIVATE_KEY"}}
        if os.environ.get("SNOWFLAKE_PRIVATE_KEY")
        else {"password": {"env": "SNOWFLAKE_PASSWORD"}}
    )
    return SnowflakeWarehouseConfig.model_validate(
        {
            "kind": "snowflake",
            "account": os.environ["SNOWFLAKE_ACCOUNT"],
            "user": os.environ["SNOWFLAKE_USER"],
            "warehouse": os.environ["SNOWFLAKE_WAREHOUSE"],
            "role": os.environ.get("SNOWFLAKE_ROLE"),
            "database": database,
            **auth,
        }
    )


@pytest.fixture(params=["fakesnow", pytest.param("live", marks=pytest.mark.live)])
def engine(request: pytest.FixtureRequest) -> str:
    if MISSING:
        pytest.skip(MISSING)
    if request.param == "live" and not all(os.environ.get(v) for v in LIVE_VARIABLES):
        pytest.skip(f"live Snowflake tests need {', '.join(LIVE_VARIABLES)}")
    return str(request.param)


@pytest.fixture
def warehouse(engine: str) -> Iterator[SnowflakeWarehouse]:
    if engine == "fakesnow":
        assert fakesnow is not None
        with fakesnow.patch():
            connection = snowflake.connector.connect(
                database="MAILERS_TEST", schema="PUBLIC", paramstyle="qmark", autocommit=True
            )
            with SnowflakeWarehouse(connection, label="fakesnow") as wh:
                yield wh
        return
    database = f"MAILERS_TEST_{uuid.uuid4().hex[:10].upper()}"
    admin = open_snowflake(_live_config(os.environ.get("SNOWFLAKE_DATABASE", "SNOWFLAKE")))
    admin.execute(f'create transient database "{database}"')
    try:
        admin.execute(f'use database "{database}"')
        with open_snowflake(_live_config(database)) as wh:
            yield wh
    finally:
        admin.execute(f'drop database if exists "{database}"')
        admin.close()


def gap(warehouse: SnowflakeWarehouse, reason: str) -> None:
    """Mark the running test as a known fakesnow difference (it still runs live)."""
    if warehouse.label == "fakesnow":
        pytest.xfail(f"{FAKESNOW_GAP}: {reason}")


def ledger_rows(count: int) -> pa.Table:
    now = datetime(2026, 11, 23, 8, 0, 0, 123456)
    rows = [
        {
            "ledger_id": f"id{i}",
            "message_key": f"key{i}",
            "status": "accepted",
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


def event_rows(count: int) -> pa.Table:
    base = {name: None for name in EVENTS_SCHEMA.names}
    rows = [
        {
            **base,
            "event_id": f"ev{i}",
            "event_type": "bounced" if i % 2 else "delivered",
            "bounce_class": "hard" if i % 2 else None,
            "occurred_at": datetime(2026, 11, 23, 9, 0, i, 0 if i == 0 else 500 + i),
            "provider": "postmark",
            "provider_account": "acme_postmark",
            "message_key": f"key{i}",
            # Verbatim, including what VARIANT would rewrite: spacing and a duplicate key.
            "raw_payload": f'{{"RecordType": "Bounce",  "ID": {i}, "ID": 7}}',
            "ingested_at": datetime(2026, 11, 23, 10, 0, 0),
        }
        for i in range(count)
    ]
    return pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA)


def count(warehouse: SnowflakeWarehouse, relation: str) -> int:
    return int(warehouse.query(f"select count(*) as n from {relation}")["n"][0].as_py())


def test_ensure_table_creates_schema_and_is_idempotent(warehouse: SnowflakeWarehouse) -> None:
    warehouse.ensure_table(MAILERS_SCHEMA, LEDGER_TABLE, LEDGER_SCHEMA)
    warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, ledger_rows(3))

    warehouse.ensure_table(MAILERS_SCHEMA, LEDGER_TABLE, LEDGER_SCHEMA)

    assert warehouse.columns(MAILERS_SCHEMA, LEDGER_TABLE) == LEDGER_SCHEMA.names
    # Unquoted, as dbt's sources and the core's SQL name it.
    assert count(warehouse, "mailers.send_ledger") == 3


def test_ensure_table_adds_missing_columns(warehouse: SnowflakeWarehouse) -> None:
    old = pa.schema(list(LEDGER_SCHEMA)[:5])
    warehouse.ensure_table(MAILERS_SCHEMA, LEDGER_TABLE, old)

    warehouse.ensure_table(MAILERS_SCHEMA, LEDGER_TABLE, LEDGER_SCHEMA)

    assert warehouse.columns(MAILERS_SCHEMA, LEDGER_TABLE) == LEDGER_SCHEMA.names


def test_ensure_table_enforces_not_null(warehouse: SnowflakeWarehouse) -> None:
    warehouse.ensure_table(MAILERS_SCHEMA, LEDGER_TABLE, LEDGER_SCHEMA)

    with pytest.raises(WarehouseError, match="Snowflake"):
        warehouse.execute(
            "insert into mailers.send_ledger (ledger_id, message_key) values (?, ?)", ["i", "k"]
        )


def test_primary_keys_are_declared_but_not_enforced(warehouse: SnowflakeWarehouse) -> None:
    gap(warehouse, "DuckDB under fakesnow enforces primary keys; Snowflake does not")
    schema = pa.schema([pa.field("k", pa.string(), nullable=False)])
    warehouse.ensure_table("s", "keyed", schema, primary_key=["k"])

    warehouse.append("s", "keyed", pa.table({"k": ["a", "a"]}, schema=schema))

    assert not CAPABILITIES.enforces_primary_keys
    assert count(warehouse, "s.keyed") == 2


def test_append_and_query_round_trip_the_ledger_schema(warehouse: SnowflakeWarehouse) -> None:
    warehouse.ensure_table(MAILERS_SCHEMA, LEDGER_TABLE, LEDGER_SCHEMA)
    data = ledger_rows(5)

    warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, data)

    result = warehouse.query(
        f"select * from {warehouse.relation(MAILERS_SCHEMA, LEDGER_TABLE)} order by ledger_id"
    )
    assert result.schema.names == LEDGER_SCHEMA.names
    assert [f.type for f in result.schema] == [f.type for f in LEDGER_SCHEMA]
    assert result.to_pylist() == data.to_pylist()


def test_events_round_trip_keeps_raw_payloads_verbatim(warehouse: SnowflakeWarehouse) -> None:
    warehouse.ensure_table(MAILERS_SCHEMA, EVENTS_TABLE, EVENTS_SCHEMA)
    data = event_rows(4)

    warehouse.append(MAILERS_SCHEMA, EVENTS_TABLE, data)

    result = warehouse.query("select * from mailers.events order by event_id")
    assert [f.type for f in result.schema] == [f.type for f in EVENTS_SCHEMA]
    assert result.to_pylist() == data.to_pylist()


def test_json_columns_are_variant_and_queryable(warehouse: SnowflakeWarehouse) -> None:
    schema = pa.schema([pa.field("id", pa.string()), pa.field("payload", pa.json_())])
    warehouse.ensure_table("s", "docs", schema)
    data = pa.table(
        {
            "id": ["a", "b"],
            "payload": pa.array(['{"kind": "x", "n": [1, 2]}', None], pa.json_()),
        },
        schema=schema,
    )

    warehouse.append("s", "docs", data)

    kinds = warehouse.query("select id, payload:kind::varchar as kind from s.docs order by id")
    assert kinds.to_pylist() == [{"id": "a", "kind": "x"}, {"id": "b", "kind": None}]
    types = warehouse.query(
        "select data_type from information_schema.columns "
        "where table_schema = 'S' and table_name = 'DOCS' and column_name = 'PAYLOAD'"
    )
    assert types["data_type"].to_pylist() == ["VARIANT"]


def test_append_matches_columns_by_name(warehouse: SnowflakeWarehouse) -> None:
    warehouse.ensure_table(MAILERS_SCHEMA, LEDGER_TABLE, LEDGER_SCHEMA)
    data = ledger_rows(2)

    warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, data.select(list(reversed(data.column_names))))

    result = warehouse.query("select * from mailers.send_ledger order by ledger_id")
    assert result.to_pylist() == data.to_pylist()


def test_append_of_nothing_is_a_no_op(warehouse: SnowflakeWarehouse) -> None:
    warehouse.ensure_table(MAILERS_SCHEMA, LEDGER_TABLE, LEDGER_SCHEMA)

    warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, ledger_rows(0))

    assert count(warehouse, "mailers.send_ledger") == 0


def test_append_to_missing_table_is_a_warehouse_error(warehouse: SnowflakeWarehouse) -> None:
    with pytest.raises(WarehouseError, match="send_ledger"):
        warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, ledger_rows(1))


def test_append_is_one_bulk_load_not_row_inserts(warehouse: SnowflakeWarehouse) -> None:
    warehouse.ensure_table(MAILERS_SCHEMA, LEDGER_TABLE, LEDGER_SCHEMA)
    statements: list[str] = []
    run = warehouse._run

    def recording(sql: str, params: object) -> object:
        statements.append(sql.split()[0].lower())
        return run(sql, params)  # type: ignore[arg-type]

    warehouse._run = recording  # type: ignore[method-assign]
    warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, ledger_rows(1_000))

    assert statements == ["put", "copy", "remove"]
    assert count(warehouse, "mailers.send_ledger") == 1_000


def test_query_with_parameters(warehouse: SnowflakeWarehouse) -> None:
    result = warehouse.query("select ? + 1 as n, ? as s", [41, "x"])

    assert result.to_pylist() == [{"n": 42, "s": "x"}]


def test_stream_yields_bounded_batches_covering_all_rows(warehouse: SnowflakeWarehouse) -> None:
    warehouse.ensure_table("s", "t", pa.schema([pa.field("i", pa.int64())]))
    warehouse.append("s", "t", pa.table({"i": pa.array(range(25), pa.int64())}))

    batches = list(warehouse.stream("select i from s.t order by i", batch_rows=7))

    assert all(isinstance(batch, pa.RecordBatch) for batch in batches)
    assert all(0 < batch.num_rows <= 7 for batch in batches)
    assert [v for b in batches for v in b.column("i").to_pylist()] == list(range(25))


def test_stream_is_not_disturbed_by_writes_between_batches(warehouse: SnowflakeWarehouse) -> None:
    warehouse.ensure_table("s", "t", pa.schema([pa.field("i", pa.int64())]))
    warehouse.ensure_table("s", "log", pa.schema([pa.field("i", pa.int64())]))
    warehouse.append("s", "t", pa.table({"i": pa.array(range(30), pa.int64())}))
    seen = 0

    for batch in warehouse.stream("select i from s.t", batch_rows=10):
        seen += batch.num_rows
        warehouse.append("s", "log", pa.table({"i": pa.array([batch.num_rows], pa.int64())}))

    assert seen == 30
    assert warehouse.query("select sum(i) as n from s.log")["n"].to_pylist() == [30]


def test_bad_sql_is_a_warehouse_error(warehouse: SnowflakeWarehouse) -> None:
    with pytest.raises(WarehouseError, match="Snowflake"):
        warehouse.execute("select * from no_such_table")
    with pytest.raises(WarehouseError):
        warehouse.query("selec 1")
    with pytest.raises(WarehouseError):
        list(warehouse.stream("select * from no_such_table"))


def test_columns_of_tables_views_and_missing_relations(warehouse: SnowflakeWarehouse) -> None:
    warehouse.execute("create schema s")
    warehouse.execute("create table s.t (b varchar, a bigint)")
    warehouse.execute("create view s.v as select a from s.t")

    assert warehouse.columns("s", "t") == ["b", "a"]
    assert warehouse.columns("s", "v") == ["a"]
    assert warehouse.columns("s", "missing") is None
    assert warehouse.columns("no_schema", "t") is None


def test_execute_returns_changed_row_counts(warehouse: SnowflakeWarehouse) -> None:
    assert warehouse.execute("create schema s") == 0
    assert warehouse.execute("create table s.t (i bigint)") == 0
    assert (
        warehouse.execute("insert into s.t select seq4() from table(generator(rowcount => 12))")
        == 12
    )
    assert warehouse.execute("insert into s.t values (?)", [100]) == 1
    assert warehouse.execute("update s.t set i = i + 1 where i < 3") == 3
    assert warehouse.execute("delete from s.t where i >= 10") == 3


def test_transaction_commits(warehouse: SnowflakeWarehouse) -> None:
    warehouse.ensure_table("s", "t", pa.schema([pa.field("i", pa.int64())]))

    with warehouse.transaction():
        warehouse.execute("insert into s.t values (1)")
        warehouse.execute("insert into s.t values (2)")

    assert count(warehouse, "s.t") == 2


def test_transaction_rolls_back_appends_on_exception(warehouse: SnowflakeWarehouse) -> None:
    warehouse.ensure_table("s", "t", pa.schema([pa.field("i", pa.int64())]))
    warehouse.execute("insert into s.t values (0)")

    with pytest.raises(RuntimeError, match="boom"), warehouse.transaction():
        warehouse.execute("insert into s.t values (1)")
        warehouse.append("s", "t", pa.table({"i": pa.array([2, 3], pa.int64())}))
        raise RuntimeError("boom")

    assert warehouse.query("select i from s.t")["i"].to_pylist() == [0]
    assert warehouse.execute("insert into s.t values (4)") == 1


def test_nested_transaction_joins_the_outer(warehouse: SnowflakeWarehouse) -> None:
    warehouse.ensure_table("s", "t", pa.schema([pa.field("i", pa.int64())]))

    with pytest.raises(RuntimeError), warehouse.transaction():
        with warehouse.transaction():
            warehouse.execute("insert into s.t values (1)")
        raise RuntimeError("outer fails")

    assert count(warehouse, "s.t") == 0


def test_ddl_inside_a_transaction_is_refused(warehouse: SnowflakeWarehouse) -> None:
    with pytest.raises(WarehouseError, match="DDL inside a transaction"), warehouse.transaction():
        warehouse.execute("create table s_x (i int)")

    assert warehouse.columns("public", "s_x") is None


def test_staged_data_is_queryable_only_inside_the_block(warehouse: SnowflakeWarehouse) -> None:
    data = pa.table({"email": ["a@example.com", "b@example.com"], "n": [1, 2]})
    warehouse.ensure_table("s", "copy", data.schema)

    with warehouse.staged(data) as name:
        inside = warehouse.query(f"select email, n from {name} order by n").to_pylist()
        copied = warehouse.execute(f"insert into s.copy select * from {name}")

    assert inside == [{"email": "a@example.com", "n": 1}, {"email": "b@example.com", "n": 2}]
    assert copied == 2
    assert count(warehouse, "s.copy") == 2
    assert count(warehouse, name) == 0


def test_staged_inside_a_transaction_rolls_back_with_it(warehouse: SnowflakeWarehouse) -> None:
    gap(
        warehouse,
        "staging (PUT + COPY into the scratch table) inside an open transaction aborts "
        "fakesnow's DuckDB transaction; not isolated further, the live run checks it",
    )
    data = pa.table({"x": pa.array([1, 2, 3], pa.int64())})
    warehouse.ensure_table("s", "t", data.schema)
    # The scratch table is created (DDL) by the first staged block, outside the transaction.
    with warehouse.staged(pa.table({"x": pa.array([0], pa.int64())})):
        pass

    with pytest.raises(RuntimeError), warehouse.transaction():
        with warehouse.staged(data) as name:
            warehouse.execute(f"insert into s.t select x from {name}")
        raise RuntimeError("after the staged block")

    assert count(warehouse, "s.t") == 0


def test_staged_names_are_unique_and_typed(warehouse: SnowflakeWarehouse) -> None:
    data = pa.table(
        {"x": pa.array([1], pa.int64()), "sent_at": pa.array([datetime(2026, 1, 2, 3, 4, 5, 6)])}
    )

    with warehouse.staged(data) as first, warehouse.staged(data) as second:
        assert first != second
        assert warehouse.query(f"select * from {first}").to_pylist() == data.to_pylist()


def test_relation_quotes_identifiers_as_snowflake_stores_them(
    warehouse: SnowflakeWarehouse,
) -> None:
    assert warehouse.relation("mailers", "send_ledger") == '"MAILERS"."SEND_LEDGER"'
    assert warehouse.dialect.quote('we"ird') == '"we""ird"'
    assert warehouse.dialect.quote("Mixed") == '"Mixed"'


def test_replace_table(warehouse: SnowflakeWarehouse) -> None:
    warehouse.execute("create schema s")

    first = warehouse.replace_table("s", "r", "select 1 as a")
    warehouse.replace_table("s", "r", "select 2 as a union all select 3")

    assert first == '"S"."R"'
    assert warehouse.query("select a from s.r order by a")["a"].to_pylist() == [2, 3]


def test_ensure_tables_creates_every_owned_table(warehouse: SnowflakeWarehouse) -> None:
    ensure_tables(warehouse)
    ensure_tables(warehouse)

    for table, schema in OWNED_TABLES.items():
        assert warehouse.columns(MAILERS_SCHEMA, table) == schema.names, table
    assert warehouse.columns(WORK_SCHEMA, "_mailers_staged_rows") is None


def lit(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def test_dialect_agrees_with_python(warehouse: SnowflakeWarehouse) -> None:
    d = warehouse.dialect
    addresses = ["a.b@example.com", "bad@@x", "x@y.z"]
    checks = ", ".join(
        f"{d.regexp_matches(lit(a), ADDRESS_PATTERN)} as m{i}" for i, a in enumerate(addresses)
    )
    assert list(warehouse.query(f"select {checks}").to_pylist()[0].values()) == [
        True,
        False,
        False,
    ]

    payload = lit('{"account": "a1", "n": 2}')
    values = warehouse.query(
        f"select {d.regexp_group(lit('u@Ex.com'), '@([^@]*)$')} as dom, "
        f"{d.regexp_group(lit('nothing'), '@([^@]*)$')} as none_, "
        f"{d.md5_hex(lit('abc'))} as md5, "
        f"{d.sha256_hex(lit('é'))} as sha, "
        f"{d.json_text(payload, 'account')} as acc"
    ).to_pylist()[0]
    assert values == {
        "dom": "Ex.com",
        "none_": "",
        "md5": hashlib.md5(b"abc").hexdigest(),
        "sha": hashlib.sha256("é".encode()).hexdigest(),
        "acc": "a1",
    }

    padded = WHITESPACE + "x y" + WHITESPACE[::-1]
    trimmed = warehouse.query(
        f"select {d.trim_chars('v', WHITESPACE)} as t from (select ? as v)", [padded]
    )
    assert trimmed["t"].to_pylist() == [padded.strip(WHITESPACE)]


def test_star_except(warehouse: SnowflakeWarehouse) -> None:
    result = warehouse.query(
        f"select {warehouse.dialect.star_except('r', ['b'], ['a', 'b', 'c'])} "
        "from (select 1 as a, 2 as b, 3 as c) as r"
    )

    assert result.to_pylist() == [{"a": 1, "c": 3}]


def test_timestamp_text_shows_microseconds(warehouse: SnowflakeWarehouse) -> None:
    gap(warehouse, "TO_CHAR's format argument is ignored (sqlglot cannot target DuckDB)")
    moments = [datetime(2026, 1, 2, 3, 4, 5, 6), datetime(2026, 1, 2, 3, 4, 5)]
    schema = pa.schema([pa.field("at", pa.timestamp("us"))])
    warehouse.ensure_table("s", "ts", schema)
    warehouse.append("s", "ts", pa.table({"at": moments}, schema=schema))

    result = warehouse.query(
        f"select {warehouse.dialect.timestamp_text('at')} as t from s.ts order by at"
    )

    assert result["t"].to_pylist() == sorted(m.strftime("%Y-%m-%d %H:%M:%S.%f") for m in moments)


def test_read_only_warehouse_refuses_writes(engine: str) -> None:
    if engine != "fakesnow":
        pytest.skip("one read-only check is enough")
    assert fakesnow is not None
    with fakesnow.patch():
        connection = snowflake.connector.connect(database="D", schema="PUBLIC", paramstyle="qmark")
        with SnowflakeWarehouse(connection, read_only=True, label="fakesnow") as wh:
            with pytest.raises(WarehouseError, match="read-only"):
                wh.append("s", "t", pa.table({"i": [1]}))
            assert wh.query("select 1 as n")["n"].to_pylist() == [1]


def test_open_snowflake_connects_with_config(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if engine != "fakesnow":
        pytest.skip("the live fixture itself opens through open_snowflake")
    assert fakesnow is not None
    monkeypatch.setenv("SF_TEST_PASSWORD", "not-a-real-password")
    config = SnowflakeWarehouseConfig.model_validate(
        {
            "kind": "snowflake",
            "account": "acct",
            "user": "mailers",
            "database": "ANALYTICS",
            "password": {"env": "SF_TEST_PASSWORD"},
        }
    )
    with fakesnow.patch(), open_snowflake(config) as wh:
        assert wh.query("select current_database() as db")["db"].to_pylist() == ["ANALYTICS"]
        assert wh.label == "Snowflake acct/ANALYTICS as mailers"


def test_missing_connector_names_the_extra() -> None:
    if not MISSING:
        pytest.skip("the connector is installed")
    with pytest.raises(ConfigError, match=r"mailers\[snowflake\]"):
        SnowflakeWarehouse(object())


def test_dialect_quotes_literals_for_snowflake() -> None:
    d = SnowflakeDialect()

    # A backslash escapes in Snowflake string constants, so a pattern's \. is doubled.
    assert d.regexp_matches("x", r"a\.b") == r"(regexp_instr(x, 'a\\.b') > 0)"
    assert "'it''s'" in d.regexp_group("x", "it's")
    assert d.star_except("t", ["email"], ["email", "name"]) == 't.* exclude ("EMAIL")'


def config(**auth: object) -> dict[str, object]:
    return {"kind": "snowflake", "account": "a", "user": "u", "database": "DB", **auth}


def test_settings_need_exactly_one_authentication() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        SnowflakeWarehouseConfig.model_validate(config())
    with pytest.raises(ValidationError, match="exactly one"):
        SnowflakeWarehouseConfig.model_validate(
            config(password={"env": "P"}, private_key={"env": "K"})
        )
    with pytest.raises(ValidationError):
        SnowflakeWarehouseConfig.model_validate(config(password="inline-secret"))


def test_settings_password_comes_from_the_environment() -> None:
    settings = SnowflakeWarehouseConfig.model_validate(
        config(password={"env": "SF_PW"}, schema="MAILERS_SESSION", role="LOADER")
    )

    arguments = settings.connect_arguments({"SF_PW": "pw"})

    assert arguments["password"] == "pw"
    assert arguments["schema"] == "MAILERS_SESSION"
    assert arguments["role"] == "LOADER"
    with pytest.raises(SecretMissing, match="SF_PW") as missing:
        settings.connect_arguments({})
    assert "pw" not in str(missing.value).replace("SF_PW", "")


def test_settings_key_pair_from_environment_and_file(tmp_path: object) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"phrase"),
    ).decode()
    from_env = SnowflakeWarehouseConfig.model_validate(
        config(private_key={"env": "K"}, private_key_passphrase={"env": "KP"})
    )

    arguments = from_env.connect_arguments({"K": encrypted, "KP": "phrase"})

    assert arguments["private_key"] == der
    assert arguments["authenticator"] == "SNOWFLAKE_JWT"
    assert "password" not in arguments
    with pytest.raises(ConfigError, match=r"warehouse\.private_key") as wrong:
        from_env.connect_arguments({"K": encrypted, "KP": "wrong"})
    assert "PRIVATE KEY" not in str(wrong.value)

    from pathlib import Path

    missing = SnowflakeWarehouseConfig.model_validate(
        config(private_key_file=str(Path(str(tmp_path)) / "none.pem"))
    )
    with pytest.raises(ConfigError, match="cannot read"):
        missing.connect_arguments({})
