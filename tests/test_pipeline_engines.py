"""The whole pipeline on DuckDB and on a real Postgres server, and the marts row for row.

The same Dagster job (segment models → audiences → sends through the sandbox providers →
event ingestion → ``dbt build`` of staging, intermediate and marts) runs on each engine
with the same contacts, the same fixed clock and the same run id. Every model an analyst
queries (the public models, marts and segments, and the semantic layer's time spine) must
then hold the same columns of the same kinds and the same rows on both: sorted, with
instants as UTC microseconds and doubles equal within a tolerance. The semantic layer's
metrics (``mf query`` by campaign and day) on Postgres must agree with DuckDB's marts too.

A run's configuration differs between the engines (its ``warehouse:`` section and data
directory), so what is derived from it is compared as the engine's own value replaced by a
placeholder: ``config_hash`` becomes ``<config>``, the data directory in a path ``<data>``,
and the audit chain's hashes (sha256 over rows holding that hash) ``<hash>`` after each
chain is checked to link. What is random by design is a placeholder too: a landing file's
nonce (``<nonce>``) and ``audit_id`` (``<uuid>``). JSON text is compared as JSON (Postgres's
``jsonb`` spaces and orders keys its own way).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest

from adapters.settings import load
from adapters.warehouses import open_warehouse
from mailers import clock
from mailers.config import ScheduleConfig, Settings
from mailers.windows import send_window
from orchestration.defs.build import build_definitions
from orchestration.defs.dbt_profile import (
    EMULATOR_TOKEN,
    ENFORCE_CONTRACTS_ENV,
    SCHEMA_NAMES_ENV,
    SCHEMA_PREFIX_ENV,
    dbt_environment,
    dbt_executable,
    dbt_target,
)

from .conftest import engine_project, example_config, postgres_database, write_config
from .postgres_server import PASSWORD_ENV, PostgresServer

TARGET_ENV = "MAILERS_DBT_TARGET"
"""The profile's target when dbt or MetricFlow is run without ``--target``."""

CONTACTS = 600
RUN_ID = "0d5b7a52-6f0e-4c1a-9a55-000000000011"
"""One Dagster run id for both engines: it is recorded in the ledger and the audit log."""

REPO = Path(__file__).resolve().parents[1]


def analyst_models() -> list[str]:
    """Every model an analyst queries, from the project's manifest: the public ones (marts
    and segments) and all that dbt builds into ``marts`` (the semantic layer's time spine)."""
    manifest = json.loads((REPO / "dbt_project" / "target" / "manifest.json").read_text())
    return sorted(
        f"{node['schema']}.{node['name']}"
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model"
        and (node.get("access") == "public" or node["schema"] == "marts")
    )


LANDED_NONCE = re.compile(r"(\d{8}T\d{12})-[0-9a-f]{8}\.jsonl")
"""A landing file's name: its instant, then a random nonce (``mailers.landing.land``)."""

RELATIVE_TOLERANCE = 1e-12
"""For doubles only (the rate columns are ratios): the engines may round the last bit apart."""


def _family(arrow_type: pa.DataType) -> str:
    """What a column holds, whatever width or unit each engine gives it."""
    for family, test in (
        ("integer", pa.types.is_integer),
        ("double", pa.types.is_floating),
        ("text", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
        ("boolean", pa.types.is_boolean),
        ("date", pa.types.is_date),
        ("timestamp", pa.types.is_timestamp),
    ):
        if test(arrow_type):
            return family
    return str(arrow_type)


def _pinned_now() -> datetime:
    """One hour into the acme.pro_tips window before the suite's current one, so every
    campaign of the sandbox config sends and the instant is the same for both engines."""
    config = example_config()["workspaces"]["acme"]["campaigns"]["pro_tips"]["schedule"]
    schedule = ScheduleConfig(**config)
    current = datetime.fromisoformat(send_window(schedule, clock.now()))
    previous = datetime.fromisoformat(send_window(schedule, current - timedelta(seconds=1)))
    return previous + timedelta(hours=1)


def _project(root: Path, warehouse: dict[str, Any] | None) -> Settings:
    return engine_project(root, warehouse, CONTACTS)


def _run_pipeline(settings: Settings) -> None:
    defs = build_definitions(str(settings.path))
    result = defs.resolve_job_def("mailers_pipeline").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False, run_id=RUN_ID
    )
    failures = [
        str(event.step_failure_data.error) for event in result.all_events if event.is_step_failure
    ]
    assert result.success, "\n".join(failures)


def _normalise(value: Any, settings: Settings) -> Any:
    if isinstance(value, datetime):
        moment = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
        return ("instant", moment.isoformat(timespec="microseconds"))
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, str):
        value = value.replace(str(settings.data_dir), "<data>")
        return LANDED_NONCE.sub(
            r"\1-<nonce>.jsonl", value.replace(settings.config_hash, "<config>")
        )
    return value


def _rows(settings: Settings, relation: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The relation's columns as ``name: family`` and its rows, normalised and sorted."""
    with open_warehouse(settings, read_only=True) as wh:
        table = wh.query(f"select * from {relation}")
    names = table.column_names
    columns = [f"{field.name}: {_family(field.type)}" for field in table.schema]
    rows = [tuple(_normalise(row[n], settings) for n in names) for row in table.to_pylist()]
    if relation == "marts.fct_send_audit":
        rows = _audit_chain_checked(names, rows)
    return columns, sorted(rows, key=repr)


def _audit_chain_checked(names: list[str], rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Each chain links (every row's ``prev_hash`` is the ``row_hash`` of the one before);
    then both hashes as ``<hash>``, since they cover ``config_hash``, and the random
    ``audit_id`` (a uuid4) as ``<uuid>``."""
    at = {name: names.index(name) for name in ("workspace", "seq", "prev_hash", "row_hash")}
    chains: dict[Any, list[tuple[Any, ...]]] = {}
    for row in rows:
        chains.setdefault(row[at["workspace"]], []).append(row)
    for chain in chains.values():
        chain.sort(key=lambda r: r[at["seq"]])
        for before, after in itertools.pairwise(chain):
            assert after[at["prev_hash"]] == before[at["row_hash"]]
    hashes = (at["prev_hash"], at["row_hash"])
    audit_id = names.index("audit_id")
    for row in rows:
        uuid.UUID(row[audit_id])
    return [
        tuple(
            "<uuid>" if i == audit_id else "<hash>" if i in hashes and v is not None else v
            for i, v in enumerate(row)
        )
        for row in rows
    ]


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, float) and isinstance(right, float):
        return math.isclose(left, right, rel_tol=RELATIVE_TOLERANCE, abs_tol=0.0)
    if isinstance(left, str) and isinstance(right, str) and left[:1] in "{[":
        try:
            return bool(json.loads(left) == json.loads(right))
        except ValueError:
            pass
    return bool(left == right)


@pytest.fixture(scope="module")
def engines(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[dict[str, Settings]]:
    """The pipeline run once on each engine, at the same pinned instant: engine → settings."""
    now = _pinned_now()
    root = tmp_path_factory.mktemp("engines")
    with (
        pytest.MonkeyPatch.context() as patch,
        postgres_database(postgres_server) as postgres,
    ):
        patch.setenv(PASSWORD_ENV, postgres_server.password)
        runs = {}
        for engine, warehouse in (("duckdb", None), ("postgres", postgres)):
            # Seeding too: the manual suppressions are stamped with Mailers' clock.
            with clock.use_clock(clock.FixedClock(now)):
                settings = _project(root / engine, warehouse)
                assert settings.config.warehouse.kind == engine
                for name in dbt_environment(settings):  # the job exports them for dbt
                    patch.delenv(name, raising=False)
                _run_pipeline(settings)
            runs[engine] = settings
        yield runs


def test_every_analyst_model_agrees_row_for_row(engines: dict[str, Settings]) -> None:
    models = analyst_models()
    assert {"marts.fct_messages", "segments.seg_acme_active_pro"} <= set(models)
    for relation in models:
        columns, expected = _rows(engines["duckdb"], relation)
        postgres_columns, actual = _rows(engines["postgres"], relation)
        assert postgres_columns == columns, relation
        assert expected, f"{relation} is empty: the comparison would prove nothing"
        assert len(actual) == len(expected), relation
        for duck, pg in zip(expected, actual, strict=True):
            differing = {
                column: (d, p)
                for column, d, p in zip(columns, duck, pg, strict=True)
                if not _same(d, p)
            }
            assert not differing, f"{relation}: {differing}"


COUNT_METRICS = ("messages", "sent", "delivered", "complained")
RATE_METRICS = ("delivery_rate", "complaint_rate", "open_rate")
METRICS = ",".join((*COUNT_METRICS, *RATE_METRICS))


def _metrics(settings: Settings, where: Path) -> list[dict[str, str]]:
    """``mf query`` of the deliverability metrics by campaign and day on ``settings``'
    warehouse, in a copy of the project parsed against it (MetricFlow reads ``target/``)."""
    mf = Path(sys.executable).parent / "mf"
    project = where / "dbt_project"
    shutil.copytree(
        settings.dbt_project_dir, project, ignore=shutil.ignore_patterns("target", "logs")
    )
    env = {**os.environ, **dbt_environment(settings), TARGET_ENV: dbt_target(settings)}
    output = where / "metrics.csv"
    for command in (
        [dbt_executable(), "parse", "--quiet"],
        [str(mf), "query", "--metrics", METRICS, "--group-by", "cohort__campaign,metric_time__day",
         "--order", "cohort__campaign,metric_time__day", "--csv", str(output)],
    ):  # fmt: skip
        completed = subprocess.run(
            command, cwd=project, env=env, capture_output=True, text=True, check=False, timeout=300
        )
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    with output.open() as rows:
        return list(csv.DictReader(rows))


DUCKDB_METRICS = """
select campaign as cohort__campaign, day,
    sum(messages) as messages, sum(sent) as sent, sum(delivered) as delivered,
    sum(complained) as complained,
    sum(delivered) / sum(sent) as delivery_rate,
    sum(delivered_complained) / sum(delivered) as complaint_rate,
    sum(delivered_opened) / sum(delivered) as open_rate
from marts.fct_campaign_deliverability_daily
group by all
"""
"""The metrics as ``models/semantic/deliverability.yml`` defines them, over DuckDB's mart."""


def test_the_semantic_layer_on_postgres_agrees_with_the_duckdb_marts(
    engines: dict[str, Settings], tmp_path: Path
) -> None:
    """MetricFlow on Postgres against the metrics' definitions over DuckDB's cohorts (``mf``
    on DuckDB is tested in tests/test_pipeline.py)."""
    if not (Path(sys.executable).parent / "mf").exists():
        pytest.skip("dbt-metricflow is not installed (the mf command)")
    with open_warehouse(engines["duckdb"], read_only=True) as wh:
        expected = {
            (row["cohort__campaign"], row["day"].isoformat()): row
            for row in wh.query(DUCKDB_METRICS).to_pylist()
        }
    rows = _metrics(engines["postgres"], tmp_path)

    assert {campaign for campaign, _ in expected} == {"pro_tips", "launch_newsletter"}
    actual = {(row["cohort__campaign"], row["metric_time__day"][:10]): row for row in rows}
    assert actual.keys() == expected.keys()
    for key, row in actual.items():
        for metric in COUNT_METRICS:
            # Postgres's sum of a bigint is numeric, which MetricFlow prints as 199.0.
            assert float(row[metric]).is_integer(), (key, metric, row[metric])
            assert int(float(row[metric])) == expected[key][metric], (key, metric)
        for metric in RATE_METRICS:
            assert math.isclose(
                float(row[metric]), expected[key][metric], rel_tol=RELATIVE_TOLERANCE
            ), (key, metric)


SECRETS = {
    "MAILERS_PG_SECRET": "s3cret-value",
    "MAILERS_SF_KEY": "-----BEGIN PRIVATE KEY-----not-a-real-key",
    "MAILERS_SF_PASSWORD": "hunter2-sf",
}
"""Set in the environment for :func:`test_dbt_learns_the_warehouse_from_the_config`: what
Mailers hands dbt must hold none of them, only their names."""
SNOWFLAKE = {
    "kind": "snowflake",
    "account": "myorg-myaccount",
    "user": "MAILERS",
    "database": "ANALYTICS",
}
BIGQUERY = {"kind": "bigquery", "project": "acme-analytics", "location": "EU"}


@pytest.mark.parametrize(
    ("warehouse", "target", "expected"),
    [
        pytest.param(
            {
                "kind": "postgres",
                "host": "db.internal",
                "port": 6543,
                "database": "analytics",
                "user": "mailers",
                "password": {"env": "MAILERS_PG_SECRET"},
            },
            "postgres",
            {
                "MAILERS_POSTGRES_HOST": "db.internal",
                "MAILERS_POSTGRES_PORT": "6543",
                "MAILERS_POSTGRES_DBNAME": "analytics",
                "MAILERS_POSTGRES_USER": "mailers",
                "MAILERS_POSTGRES_PASSWORD_ENV": "MAILERS_PG_SECRET",
            },
            id="postgres",
        ),
        pytest.param(
            # dbt-postgres takes no connection string: its variables are the user's to set.
            {"kind": "postgres", "dsn": "host=db.internal dbname=analytics user=mailers"},
            "postgres",
            {},
            id="postgres-dsn",
        ),
        pytest.param(
            # Credentials stay the environment's (ADC or MAILERS_BIGQUERY_METHOD), and the
            # contracts are enforced (the variable is absent).
            BIGQUERY,
            "bigquery",
            {"MAILERS_BIGQUERY_PROJECT": "acme-analytics", "MAILERS_BIGQUERY_LOCATION": "EU"},
            id="bigquery",
        ),
        pytest.param(
            {
                **BIGQUERY,
                "api_endpoint": "http://127.0.0.1:9050",
                "anonymous": True,
                "dataset_prefix": "acme_",
                "datasets": {"crm": "salesforce", "segments": "audiences"},
            },
            "bigquery",
            {
                "MAILERS_BIGQUERY_PROJECT": "acme-analytics",
                "MAILERS_BIGQUERY_LOCATION": "EU",
                "MAILERS_BIGQUERY_API_ENDPOINT": "http://127.0.0.1:9050",
                SCHEMA_PREFIX_ENV: "acme_",
                SCHEMA_NAMES_ENV: '{"crm": "salesforce", "segments": "audiences"}',
                "MAILERS_BIGQUERY_METHOD": "oauth-secrets",
                "MAILERS_BIGQUERY_TOKEN": EMULATOR_TOKEN,
                ENFORCE_CONTRACTS_ENV: "false",
            },
            id="bigquery-emulator-renamed",
        ),
        pytest.param(
            {
                **SNOWFLAKE,
                "role": "MAILERS_LOADER",
                "warehouse": "MAILERS_WH",
                "private_key": {"env": "MAILERS_SF_KEY"},
                "private_key_passphrase": {"env": "MAILERS_SF_PASSPHRASE"},
            },
            "snowflake",
            {
                "MAILERS_SNOWFLAKE_ACCOUNT": "myorg-myaccount",
                "MAILERS_SNOWFLAKE_USER": "MAILERS",
                "MAILERS_SNOWFLAKE_DATABASE": "ANALYTICS",
                "MAILERS_SNOWFLAKE_ROLE": "MAILERS_LOADER",
                "MAILERS_SNOWFLAKE_WAREHOUSE": "MAILERS_WH",
                "MAILERS_SNOWFLAKE_PRIVATE_KEY_ENV": "MAILERS_SF_KEY",
                "MAILERS_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE_ENV": "MAILERS_SF_PASSPHRASE",
            },
            id="snowflake-key-pair",
        ),
        pytest.param(
            # No role or virtual warehouse: the profile leaves them out (the user's defaults).
            {
                **SNOWFLAKE,
                "password": {"env": "MAILERS_SF_PASSWORD"},
                "host": "sf-proxy.internal",
                "port": 8443,
            },
            "snowflake",
            {
                "MAILERS_SNOWFLAKE_ACCOUNT": "myorg-myaccount",
                "MAILERS_SNOWFLAKE_USER": "MAILERS",
                "MAILERS_SNOWFLAKE_DATABASE": "ANALYTICS",
                "MAILERS_SNOWFLAKE_HOST": "sf-proxy.internal",
                "MAILERS_SNOWFLAKE_PORT": "8443",
                "MAILERS_SNOWFLAKE_PROTOCOL": "https",
                "MAILERS_SNOWFLAKE_PASSWORD_ENV": "MAILERS_SF_PASSWORD",
            },
            id="snowflake-proxied-password",
        ),
    ],
)
def test_dbt_learns_the_warehouse_from_the_config(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    warehouse: dict[str, Any],
    target: str,
    expected: dict[str, str],
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    settings = load(write_config(tmp_path, lambda config: config.update(warehouse=warehouse)))

    assert dbt_target(settings) == target
    environment = dbt_environment(settings)
    assert environment == expected
    assert not set(SECRETS.values()) & set(environment.values())
