"""The Snowflake warehouse adapter beyond the shared warehouse contract
(``tests/adapters/test_warehouse_contract.py`` runs that on Snowflake too): unquoted names,
VARIANT, verbatim raw payloads, bulk loads, DDL and transactions, settings.

``engine`` runs each test on fakesnow (snowflake-connector-python patched onto an in-memory
DuckDB per test) and, with the ``live`` marker, on a real account when the variables of
``tests.conftest.SNOWFLAKE_LIVE_VARIABLES`` are set; the live run creates a database
``MAILERS_TEST_<random>`` and drops it afterwards. Where fakesnow differs from Snowflake the
test says so (``FAKESNOW_GAP``) and is a strict xfail there: it runs, and must fail.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

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
from mailers.errors import ConfigError, SecretMissing, WarehouseError
from mailers.events import EVENTS_SCHEMA, EVENTS_TABLE
from mailers.ledger import LEDGER_SCHEMA, LEDGER_TABLE
from mailers.snowflake_config import SnowflakeWarehouseConfig
from mailers.tables import OWNED_TABLES, ensure_tables
from mailers.warehouse import MAILERS_SCHEMA, WORK_SCHEMA

FAKESNOW_GAP = "fakesnow gap"


@pytest.fixture(params=["fakesnow", pytest.param("live", marks=pytest.mark.live)])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def warehouse(request: pytest.FixtureRequest, engine: str) -> Iterator[SnowflakeWarehouse]:
    fixture = "snowflake_config" if engine == "fakesnow" else "snowflake_live_config"
    config = SnowflakeWarehouseConfig.model_validate(request.getfixturevalue(fixture))
    with open_snowflake(config) as wh:
        yield wh


def gap(request: pytest.FixtureRequest, engine: str, reason: str) -> None:
    """Mark the running test as a known fakesnow difference (it still runs live)."""
    if engine == "fakesnow":
        request.applymarker(pytest.mark.xfail(reason=f"{FAKESNOW_GAP}: {reason}", strict=True))


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


def test_primary_keys_are_declared_but_not_enforced(
    request: pytest.FixtureRequest, engine: str, warehouse: SnowflakeWarehouse
) -> None:
    gap(request, engine, "DuckDB under fakesnow enforces primary keys; Snowflake does not")
    schema = pa.schema([pa.field("k", pa.string(), nullable=False)])
    warehouse.ensure_table("s", "keyed", schema, primary_key=["k"])

    warehouse.append("s", "keyed", pa.table({"k": ["a", "a"]}, schema=schema))

    assert not CAPABILITIES.enforces_primary_keys
    assert count(warehouse, "s.keyed") == 2


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

    assert statements == ["put", "copy"]
    assert count(warehouse, "mailers.send_ledger") == 1_000


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


def test_transaction_rolls_back_appends_on_exception(warehouse: SnowflakeWarehouse) -> None:
    warehouse.ensure_table("s", "t", pa.schema([pa.field("i", pa.int64())]))
    warehouse.execute("insert into s.t values (0)")

    with pytest.raises(RuntimeError, match="boom"), warehouse.transaction():
        warehouse.execute("insert into s.t values (1)")
        warehouse.append("s", "t", pa.table({"i": pa.array([2, 3], pa.int64())}))
        raise RuntimeError("boom")

    assert warehouse.query("select i from s.t")["i"].to_pylist() == [0]
    assert warehouse.execute("insert into s.t values (4)") == 1


def test_ddl_inside_a_transaction_is_refused(warehouse: SnowflakeWarehouse) -> None:
    with pytest.raises(WarehouseError, match="DDL inside a transaction"), warehouse.transaction():
        warehouse.execute("create table s_x (i int)")

    assert warehouse.columns("public", "s_x") is None


def test_staged_inside_a_transaction_rolls_back_with_it(warehouse: SnowflakeWarehouse) -> None:
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


def test_ensure_tables_creates_every_owned_table(warehouse: SnowflakeWarehouse) -> None:
    ensure_tables(warehouse)
    ensure_tables(warehouse)

    for table, schema in OWNED_TABLES.items():
        assert warehouse.columns(MAILERS_SCHEMA, table) == schema.names, table
    assert warehouse.columns(WORK_SCHEMA, "_mailers_staged_rows") is None


def test_connect_opens_the_configured_database(
    snowflake_config: dict[str, Any], tmp_path: Path
) -> None:
    from adapters.warehouses import connect

    config = SnowflakeWarehouseConfig.model_validate({**snowflake_config, "database": "ANALYTICS"})
    with connect(config, tmp_path) as wh:
        assert wh.query("select current_database() as db")["db"].to_pylist() == ["ANALYTICS"]
        assert isinstance(wh, SnowflakeWarehouse)
        assert wh.label == "Snowflake fakesnow/ANALYTICS as mailers"


def test_missing_connector_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_connector(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "snowflake" or name.startswith("snowflake."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_connector)
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


def test_an_endpoint_and_a_network_timeout_are_passed_to_the_connector() -> None:
    derived = SnowflakeWarehouseConfig.model_validate(config(password={"env": "SF_PW"}))
    assert not {"host", "port", "protocol"} & derived.connect_arguments({"SF_PW": "pw"}).keys()
    proxied = SnowflakeWarehouseConfig.model_validate(
        config(password={"env": "SF_PW"}, host="sf-proxy.internal", port=8443)
    )
    arguments = proxied.connect_arguments({"SF_PW": "pw"})
    assert (arguments["host"], arguments["port"], arguments["protocol"]) == (
        "sf-proxy.internal",
        8443,
        "https",
    )
    assert "network_timeout" not in arguments  # the connector's own: retries without end
    bounded = SnowflakeWarehouseConfig.model_validate(
        config(password={"env": "SF_PW"}, network_timeout_seconds=600)
    )
    assert bounded.connect_arguments({"SF_PW": "pw"})["network_timeout"] == 600
    with pytest.raises(ValidationError, match="port and protocol go with host"):
        SnowflakeWarehouseConfig.model_validate(config(password={"env": "P"}, protocol="http"))
    with pytest.raises(ValidationError, match="protocol"):
        SnowflakeWarehouseConfig.model_validate(
            config(password={"env": "P"}, host="h", protocol="ftp")
        )


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

    missing = SnowflakeWarehouseConfig.model_validate(
        config(private_key_file=str(Path(str(tmp_path)) / "none.pem"))
    )
    with pytest.raises(ConfigError, match="cannot read"):
        missing.connect_arguments({})
