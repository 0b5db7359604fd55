"""The whole pipeline on BigQuery (bqemulator), marts and all, agrees row for row with DuckDB.

On each engine, on one fixed clock and the same inputs (``tests/engine_pipeline.py``): dbt
builds the segment views, the audience is resolved, the sandbox providers send, the events
are ingested, and dbt builds every model and runs every data test and unit test. On
BigQuery dbt is dbt-bigquery (the ``bigquery`` extra), speaking REST to the emulator, with
the profile's variables as Mailers sets them from the config
(:func:`orchestration.defs.dbt_profile.dbt_environment`); the pipeline writes through the BigQuery
adapter. Then every mart is read on both engines and compared row for row.

What bqemulator 1.4 cannot run of the project (docs/bigquery.md, "dbt on bqemulator"):
dbt's contract-enforced ``create or replace table ... (<columns>) as select``, which
BigQuery accepts. So the emulator's config builds the marts with contracts off, and this
test checks the contracts the way dbt does before it builds: the type BigQuery gives each
declared type (``cast(null as <declared>)``) must be the type of the built column. Behind
the ``live`` marker the same test runs on a real project, contracts enforced.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.warehouses import open_warehouse
from adapters.warehouses.bigquery import BigQueryWarehouse
from mailers.config import Settings
from orchestration.defs.dbt_profile import (
    ENFORCE_CONTRACTS_ENV,
    dbt_environment,
    dbt_executable,
    dbt_target,
)

from . import conftest
from .conftest import project_on, run_dbt_process
from .engine_pipeline import (
    MARTS,
    comparable,
    duckdb_reference,
    pipeline,
    unit_tests,
)

LIVE_PROJECT = "MAILERS_BIGQUERY_LIVE_PROJECT"
LIVE_LOCATION = "MAILERS_BIGQUERY_LIVE_LOCATION"


@pytest.fixture(params=["emulator", pytest.param("live", marks=pytest.mark.live)])
def bigquery_warehouse(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The ``warehouse:`` document the pipeline runs on: bqemulator (contracts off), or a
    real project (``MAILERS_BIGQUERY_LIVE_PROJECT``, credentials from Application Default
    Credentials; contracts enforced), whose datasets are dropped afterwards. Either way
    the datasets are renamed, as a team's naming rules would rename them: dbt must build
    and read where Mailers writes and reads (the CRM contacts in a dataset of their own)."""
    prefix = f"mailers_test_{uuid.uuid4().hex[:8]}_"
    renamed = {"dataset_prefix": prefix, "datasets": {"crm": f"{prefix}crm_source"}}
    if request.param == "emulator":
        yield {**request.getfixturevalue("bigquery_config"), **renamed}
        return
    project = os.environ.get(LIVE_PROJECT)
    if not project:
        pytest.skip(f"set {LIVE_PROJECT} (and ADC credentials) to run live BigQuery tests")
    location = os.environ.get(LIVE_LOCATION, "US")
    yield {"kind": "bigquery", "project": project, "location": location, **renamed}
    from google.cloud import bigquery

    with bigquery.Client(project=project, location=location) as client:
        for dataset in client.list_datasets():
            if dataset.dataset_id.startswith(prefix):
                client.delete_dataset(dataset.reference, delete_contents=True, not_found_ok=True)


def _marts(manifest: Path) -> dict[str, dict[str, Any]]:
    """The models of ``models/marts/`` in ``manifest``, by name."""
    nodes = json.loads(manifest.read_text())["nodes"].values()
    return {
        node["name"]: node
        for node in nodes
        if node["resource_type"] == "model" and node["fqn"][1] == "marts"
    }


def _declared(node: dict[str, Any]) -> list[tuple[str, str]]:
    """A model's contract: its declared (column, data type) pairs, in order."""
    return [(column["name"], column["data_type"]) for column in node["columns"].values()]


def _built_and_declared(
    wh: BigQueryWarehouse, mart: str, declared: list[tuple[str, str]]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Mart ``mart``'s columns as built and as its contract declares them, each as (name,
    BigQuery type): the declared types are what BigQuery makes of ``cast(null as <type>)``,
    as dbt's contract check does."""
    table = wh.client.get_table(f"{wh.client.project}.{wh.dataset('marts')}.{mart}")
    built = [(field.name, field.field_type) for field in table.schema]
    casts = ", ".join(f"cast(null as {data_type}) as `{name}`" for name, data_type in declared)
    result = wh.client.query(f"select {casts}", location=wh.config.location).result()
    return built, [(field.name, field.field_type) for field in result.schema]


@pytest.mark.timeout(900)
def test_the_marts_built_on_bigquery_match_duckdb_row_for_row(
    tmp_path: Path, bigquery_warehouse: dict[str, Any]
) -> None:
    on_duckdb, duckdb_marts = duckdb_reference(tmp_path)
    on_bigquery = project_on(tmp_path / "bigquery", bigquery_warehouse)
    environment = dbt_environment(on_bigquery)
    emulated = bool(bigquery_warehouse.get("anonymous"))
    # Contracts are off only where the emulator cannot run them.
    assert (environment.get(ENFORCE_CONTRACTS_ENV) == "false") is emulated
    target = tmp_path / "dbt-target"
    bigquery_marts = pipeline(
        on_bigquery,
        lambda *args: run_dbt_process(
            Path(dbt_executable()), dbt_target(on_bigquery), environment, args, target
        ),
    )

    for mart in MARTS:
        assert duckdb_marts[mart], f"{mart} is empty: the comparison would prove nothing"
        assert comparable(bigquery_marts[mart]) == comparable(duckdb_marts[mart]), mart

    # Every unit test ran on BigQuery too, and passed.
    on_duckdb_units = unit_tests(conftest.dbt_target_path(on_duckdb))
    on_bigquery_units = unit_tests(target)
    assert len(on_duckdb_units) >= 5
    assert on_bigquery_units == on_duckdb_units
    assert {status for status, _ in on_bigquery_units.values()} == {"pass"}

    with open_warehouse(on_bigquery, read_only=True) as wh:
        assert isinstance(wh, BigQueryWarehouse)
        datasets = {dataset.dataset_id for dataset in wh.client.list_datasets()}
    prefix = bigquery_warehouse["dataset_prefix"]
    assert {
        f"{prefix}{name}" for name in ("crm_source", "mailers", "segments", "marts")
    } <= datasets
    assert not datasets & {"crm", "mailers", "marts", "segments", f"{prefix}crm"}, datasets

    _assert_contracts_hold(
        on_bigquery,
        target / "manifest.json",
        conftest.dbt_target_path(on_duckdb) / "manifest.json",
        enforced_here=not emulated,
    )


def _assert_contracts_hold(
    settings: Settings, manifest: Path, enforced_elsewhere: Path, *, enforced_here: bool
) -> None:
    """Every mart whose contract the DuckDB build (``enforced_elsewhere``) enforced, as the
    BigQuery build (``manifest``) declares it for BigQuery, holds there, whether that build
    enforced it (``enforced_here``) or not."""
    marts = _marts(manifest)
    enforced = {
        name
        for name, n in _marts(enforced_elsewhere).items()
        if n["config"]["contract"]["enforced"]
    }
    assert enforced == set(MARTS), "every mart's contract is enforced off the emulator"
    with open_warehouse(settings, read_only=True) as wh:
        assert isinstance(wh, BigQueryWarehouse)
        for mart in sorted(enforced):
            assert marts[mart]["config"]["contract"]["enforced"] is enforced_here
            built, declared = _built_and_declared(wh, mart, _declared(marts[mart]))
            assert built == declared, mart
