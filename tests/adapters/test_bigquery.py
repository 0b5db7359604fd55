"""The BigQuery warehouse beyond the shared contract (tests/adapters/test_warehouse_contract.py):
Mailers' own tables, Arrow round trips, datasets per schema, load jobs, the Storage Read API,
JSON columns; on bqemulator (tests/bigquery_emulator.py), and live behind ``-m live``."""

from __future__ import annotations

import builtins
import json
import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from adapters.warehouses.bigquery import JSON_METADATA, BigQueryWarehouse, open_bigquery
from mailers.bigquery_config import BigQueryWarehouseConfig
from mailers.claims import CLAIMS_KEY, CLAIMS_TABLE
from mailers.errors import ConfigError, WarehouseError
from mailers.events import EVENTS_SCHEMA, EVENTS_TABLE
from mailers.ledger import LEDGER_SCHEMA, LEDGER_TABLE
from mailers.tables import OWNED_TABLES, ensure_tables
from mailers.warehouse import MAILERS_SCHEMA, WORK_SCHEMA

MOMENT = datetime(2026, 11, 23, 8, 0, 0, 123456)

OFFLINE = {"kind": "bigquery", "project": "test-proj", "api_endpoint": "http://127.0.0.1:9"}
"""A config that needs no server (for what fails before any request)."""


def config_of(document: dict[str, Any], **overrides: Any) -> BigQueryWarehouseConfig:
    return BigQueryWarehouseConfig.model_validate({**document, **overrides})


@pytest.fixture
def warehouse(bigquery_config: dict[str, Any]) -> Iterator[BigQueryWarehouse]:
    with open_bigquery(config_of(bigquery_config)) as wh:
        yield wh


def full_rows(schema: pa.Schema, count: int) -> pa.Table:
    """Rows with every column set (``None`` only in every third row's nullable columns)."""
    rows = []
    for i in range(count):
        row: dict[str, Any] = {}
        for field in schema:
            if field.nullable and i % 3 == 2:
                row[field.name] = None
            elif pa.types.is_timestamp(field.type):
                row[field.name] = MOMENT.replace(minute=i % 60)
            elif pa.types.is_string(field.type):
                row[field.name] = f"{field.name}-{i:03d} ✉ 'q' \"d\"\n"
            else:
                raise AssertionError(f"extend full_rows for {field}")
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema)


def test_ensure_tables_creates_every_owned_table_and_is_idempotent(
    warehouse: BigQueryWarehouse,
) -> None:
    ensure_tables(warehouse)
    ensure_tables(warehouse)

    for table, schema in OWNED_TABLES.items():
        assert warehouse.columns(MAILERS_SCHEMA, table) == schema.names, table
    assert warehouse.client.get_dataset(f"{warehouse.config.project}.{WORK_SCHEMA}")
    claims = warehouse.client.get_table(warehouse._table_id(MAILERS_SCHEMA, CLAIMS_TABLE))
    if claims.table_constraints is None:
        pytest.xfail("bqemulator 1.4 drops table constraints (real BigQuery keeps them)")
    assert tuple(claims.table_constraints.primary_key.columns) == CLAIMS_KEY


def test_owned_tables_declare_not_null_columns_as_required(warehouse: BigQueryWarehouse) -> None:
    ensure_tables(warehouse)

    table = warehouse.client.get_table(warehouse._table_id(MAILERS_SCHEMA, LEDGER_TABLE))
    modes = {f.name: f.mode for f in table.schema}
    assert modes == {f.name: "NULLABLE" if f.nullable else "REQUIRED" for f in LEDGER_SCHEMA}
    types = {f.name: f.field_type for f in table.schema}
    assert types["recorded_at"] == "TIMESTAMP"
    assert types["message_key"] == "STRING"


@pytest.mark.parametrize(
    ("table", "schema"), [(EVENTS_TABLE, EVENTS_SCHEMA), (LEDGER_TABLE, LEDGER_SCHEMA)]
)
def test_arrow_round_trip_of_events_and_ledger(
    warehouse: BigQueryWarehouse, bigquery_config: dict[str, Any], table: str, schema: pa.Schema
) -> None:
    ensure_tables(warehouse)
    data = full_rows(schema, 12)

    warehouse.append(MAILERS_SCHEMA, table, data)

    order = schema.names[0]
    queried = warehouse.query(
        f"select * from {warehouse.relation(MAILERS_SCHEMA, table)} order by {order}"
    )
    assert queried.schema.names == schema.names
    assert [f.type for f in queried.schema] == [f.type for f in schema]
    assert queried.to_pylist() == data.to_pylist()
    # The same table read directly through the Storage Read API (bqemulator serves it for
    # tables, not for query results).
    with open_bigquery(config_of(bigquery_config, storage_read_api=True)) as reader:
        assert reader.storage_client is not None
        direct = reader.read_table(MAILERS_SCHEMA, table).sort_by(order)
    assert [f.type for f in direct.schema] == [f.type for f in schema]
    assert direct.to_pylist() == data.to_pylist()


def test_each_append_is_one_load_job(warehouse: BigQueryWarehouse) -> None:
    ensure_tables(warehouse)

    for _ in range(3):
        warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, full_rows(LEDGER_SCHEMA, 400))
    warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, full_rows(LEDGER_SCHEMA, 0))

    assert warehouse.load_jobs == 3
    ledger = warehouse.relation(MAILERS_SCHEMA, LEDGER_TABLE)
    assert warehouse.query(f"select count(*) as n from {ledger}").to_pylist() == [{"n": 1200}]


def test_append_names_a_column_the_table_lacks(warehouse: BigQueryWarehouse) -> None:
    ensure_tables(warehouse)
    data = full_rows(LEDGER_SCHEMA, 1).append_column("surprise", pa.array(["x"]))

    with pytest.raises(WarehouseError, match="surprise"):
        warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, data)


def test_append_names_a_null_in_a_required_column(warehouse: BigQueryWarehouse) -> None:
    ensure_tables(warehouse)
    data = full_rows(LEDGER_SCHEMA, 1).set_column(
        LEDGER_SCHEMA.get_field_index("run_id"), "run_id", pa.array([None], pa.string())
    )

    with pytest.raises(WarehouseError, match="run_id"):
        warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, data)
    assert warehouse.load_jobs == 0


def test_datasets_follow_prefix_and_map(bigquery_config: dict[str, Any]) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    config = config_of(bigquery_config, dataset_prefix=prefix, datasets={"segments": "crm"})
    with open_bigquery(config) as wh:
        ensure_tables(wh)
        wh.execute("create schema if not exists segments")
        wh.ensure_table("segments", "people", pa.schema([pa.field("email", pa.string())]))

        names = {d.dataset_id for d in wh.client.list_datasets()}
        assert {f"{prefix}mailers", f"{prefix}mailers_work", "crm"} <= names
        assert "mailers" not in names
        assert wh.relation("segments", "people") == "`test-proj.crm.people`"
        assert wh.client.get_dataset(f"test-proj.{prefix}mailers").location == "US"


def test_relation_quotes_project_dataset_and_table() -> None:
    from adapters.warehouses.bigquery import BigQueryDialect

    assert BigQueryDialect().quote("my-proj.ds.t`x") == "`my-proj.ds.t\\`x`"


def test_transaction_append_goes_through_staging_and_rolls_back(
    warehouse: BigQueryWarehouse,
) -> None:
    ensure_tables(warehouse)
    ledger = warehouse.relation(MAILERS_SCHEMA, LEDGER_TABLE)

    with pytest.raises(RuntimeError), warehouse.transaction():
        warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, full_rows(LEDGER_SCHEMA, 5))
        assert warehouse.query(f"select count(*) as n from {ledger}").to_pylist() == [{"n": 5}]
        raise RuntimeError("boom")

    assert warehouse.query(f"select count(*) as n from {ledger}").to_pylist() == [{"n": 0}]
    staging = [
        t.table_id
        for t in warehouse.client.list_tables(f"{warehouse.config.project}.{WORK_SCHEMA}")
    ]
    assert staging == []


def test_staged_table_expires_should_the_process_die(warehouse: BigQueryWarehouse) -> None:
    before = datetime.now().astimezone()
    with warehouse.staged(pa.table({"a": [1, 2]})) as staged:
        table_id = staged.strip("`")
        rows = warehouse.query(f"select sum(a) as s from {staged}").to_pylist()
        expires = warehouse.client.get_table(table_id).expires

    assert rows == [{"s": 3}]
    if expires is None:
        pytest.xfail("bqemulator 1.4 keeps no table expiration (real BigQuery does)")
    minutes = (expires - before).total_seconds() / 60
    assert 0 < minutes <= warehouse.config.staging_expiration_minutes + 1


def test_json_marked_field_is_a_json_column(warehouse: BigQueryWarehouse) -> None:
    schema = pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("payload", pa.string(), metadata={JSON_METADATA: b"true"}),
        ]
    )
    warehouse.ensure_table(MAILERS_SCHEMA, "payloads", schema)
    documents = [json.dumps({"event": "delivered", "n": 3}), None]
    warehouse.append(MAILERS_SCHEMA, "payloads", pa.table({"id": ["a", "b"], "payload": documents}))

    table = warehouse.client.get_table(warehouse._table_id(MAILERS_SCHEMA, "payloads"))
    assert {f.name: f.field_type for f in table.schema}["payload"] == "JSON"
    relation = warehouse.relation(MAILERS_SCHEMA, "payloads")
    event = warehouse.dialect.json_text("payload", "event")
    rows = warehouse.query(f"select id, {event} as event from {relation} order by id")
    assert rows.to_pylist() == [{"id": "a", "event": "delivered"}, {"id": "b", "event": None}]


def test_raw_payloads_stay_verbatim_text(warehouse: BigQueryWarehouse) -> None:
    """Event ids are derived from the raw text and replays re-parse it, so it is a STRING
    column (a JSON column would re-serialize it, and SMTP payloads are not JSON at all)."""
    ensure_tables(warehouse)
    table = warehouse.client.get_table(warehouse._table_id(MAILERS_SCHEMA, EVENTS_TABLE))
    assert {f.name: f.field_type for f in table.schema}["raw_payload"] == "STRING"


def test_read_only_refuses_writes_before_any_job(bigquery_config: dict[str, Any]) -> None:
    with open_bigquery(config_of(bigquery_config), read_only=True) as reader:
        for write in (
            lambda: reader.execute("delete from x where true"),
            lambda: reader.ensure_table(MAILERS_SCHEMA, LEDGER_TABLE, LEDGER_SCHEMA),
            lambda: reader.append(MAILERS_SCHEMA, LEDGER_TABLE, full_rows(LEDGER_SCHEMA, 1)),
            lambda: reader.replace_table(MAILERS_SCHEMA, "t", "select 1 as a"),
        ):
            with pytest.raises(WarehouseError, match="read-only"):
                write()
        assert list(reader.client.list_datasets()) == []


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_google(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("google.cloud"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_google)
    with pytest.raises(ConfigError, match=r"mailers\[bigquery\]"):
        open_bigquery(config_of(OFFLINE, anonymous=True))


def test_credentials_come_from_the_environment_and_stay_out_of_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BigQueryWarehouseConfig(kind="bigquery", project="my-project-1")
    missing = tmp_path / "absent.json"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(missing))
    with pytest.raises(WarehouseError, match=r"absent\.json"):
        open_bigquery(config)

    secret = "SECRETKEYMATERIAL0123456789"
    key = tmp_path / "key.json"
    key.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "my-project-1",
                "private_key_id": "k1",
                "private_key": f"-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----",
                "client_email": "mailers@my-project-1.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    with pytest.raises(WarehouseError, match="my-project-1") as caught:
        open_bigquery(config)
    assert secret not in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "fault"),
    [
        ({"project": "Not_A_Project"}, "project id"),
        ({"datasets": {"mailers": "has-hyphen"}}, "dataset names"),
        ({"dataset_prefix": "bad-"}, "dataset_prefix"),
        ({"api_endpoint": None, "anonymous": True}, "anonymous"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_settings_name_what_is_wrong(overrides: dict[str, Any], fault: str) -> None:
    config_of(OFFLINE)
    with pytest.raises(ValidationError, match=fault):
        config_of(OFFLINE, **overrides)


LIVE_PROJECT = "MAILERS_BIGQUERY_LIVE_PROJECT"
LIVE_LOCATION = "MAILERS_BIGQUERY_LIVE_LOCATION"


@pytest.fixture
def live_warehouse() -> Iterator[BigQueryWarehouse]:
    """A real project (credentials from Application Default Credentials), in datasets of a
    fresh prefix that are deleted afterwards."""
    project = os.environ.get(LIVE_PROJECT)
    if not project:
        pytest.skip(f"set {LIVE_PROJECT} (and ADC credentials) to run live BigQuery tests")
    config = BigQueryWarehouseConfig(
        kind="bigquery",
        project=project,
        location=os.environ.get(LIVE_LOCATION, "US"),
        dataset_prefix=f"mailers_live_{uuid.uuid4().hex[:8]}_",
    )
    with open_bigquery(config) as wh:
        try:
            yield wh
        finally:
            for schema in (MAILERS_SCHEMA, WORK_SCHEMA):
                wh.client.delete_dataset(
                    f"{project}.{wh.dataset(schema)}", delete_contents=True, not_found_ok=True
                )


@pytest.mark.live
def test_live_round_trip_transaction_and_storage_reads(live_warehouse: BigQueryWarehouse) -> None:
    wh = live_warehouse
    ensure_tables(wh)
    data = full_rows(LEDGER_SCHEMA, 30)
    ledger = wh.relation(MAILERS_SCHEMA, LEDGER_TABLE)

    with pytest.raises(RuntimeError), wh.transaction():
        wh.append(MAILERS_SCHEMA, LEDGER_TABLE, data)
        raise RuntimeError("boom")
    assert wh.query(f"select count(*) as n from {ledger}").to_pylist() == [{"n": 0}]

    wh.append(MAILERS_SCHEMA, LEDGER_TABLE, data)
    streamed = list(wh.stream(f"select * from {ledger} order by ledger_id", batch_rows=7))
    assert [b.num_rows for b in streamed] == [7, 7, 7, 7, 2]
    assert pa.Table.from_batches(streamed).to_pylist() == data.sort_by("ledger_id").to_pylist()
    assert wh.read_table(MAILERS_SCHEMA, LEDGER_TABLE).num_rows == 30


@pytest.mark.live
def test_live_primary_keys_are_not_enforced(live_warehouse: BigQueryWarehouse) -> None:
    wh = live_warehouse
    schema = pa.schema([pa.field("k", pa.string(), nullable=False)])
    wh.ensure_table(MAILERS_SCHEMA, "keyed", schema, primary_key=["k"])
    wh.append(MAILERS_SCHEMA, "keyed", pa.table({"k": ["a"]}))
    wh.append(MAILERS_SCHEMA, "keyed", pa.table({"k": ["a"]}))
    relation = wh.relation(MAILERS_SCHEMA, "keyed")
    assert wh.query(f"select count(*) as n from {relation}").to_pylist() == [{"n": 2}]
    assert wh.capabilities.enforces_primary_keys is False


def test_append_sees_columns_another_writer_added(bigquery_config: dict[str, Any]) -> None:
    schema = pa.schema([pa.field("id", pa.string(), nullable=False)])
    with open_bigquery(config_of(bigquery_config)) as first:
        first.ensure_table(MAILERS_SCHEMA, "grows", schema)
        first.append(MAILERS_SCHEMA, "grows", pa.table({"id": ["a"]}))
        with open_bigquery(config_of(bigquery_config)) as second:
            second.ensure_table(MAILERS_SCHEMA, "grows", schema.append(pa.field("n", pa.int64())))

        first.append(MAILERS_SCHEMA, "grows", pa.table({"id": ["b"], "n": [2]}))

        relation = first.relation(MAILERS_SCHEMA, "grows")
        rows = first.query(f"select id, n from {relation} order by id").to_pylist()
    assert rows == [{"id": "a", "n": None}, {"id": "b", "n": 2}]
