"""The whole pipeline on Snowflake (fakesnow), marts and all, agrees row for row with DuckDB.

On each engine, on one fixed clock and the same inputs: dbt builds the segment views, the
audience is resolved, the sandbox providers send (their events land as files), the events
are ingested, and dbt builds every model and runs every data test. On Snowflake dbt is
dbt-snowflake, a process of its own speaking HTTP to fakesnow's server
(``tests/fakesnow_server.py``), and the pipeline writes through the Snowflake adapter on
the real, unpatched connector to the same server (its login, Arrow result batches, ``PUT``
and ``COPY INTO``), as both would to Snowflake. Then every mart is read on both engines and
compared row for row.

What fakesnow 0.12.1 cannot run of the project (docs/snowflake.md, "fakesnow gaps"):
dbt's unit tests, which create a database-qualified temporary table; they run on DuckDB
(and on a live account) and are excluded here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.warehouses import open_warehouse
from orchestration.defs.dbt_profile import DBT_EXECUTABLE_ENV, dbt_environment

from . import conftest
from .conftest import SNOWFLAKE_PASSWORD_ENV, project_on, run_dbt_process
from .engine_pipeline import (
    MARTS,
    comparable,
    compiled,
    duckdb_reference,
    pipeline,
    unit_tests,
)
from .fakesnow_server import FakesnowServer, ensure_dbt_venv, running_fakesnow

UNIT_TESTS_EXCLUDED = ("--exclude-resource-type", "unit_test")
"""What fakesnow cannot build: dbt's unit tests (see the module docstring)."""
FAKESNOW_TEMPORARY_TABLE_ERROR = 'TEMPORARY table names can *only* use the "temp" catalog'
"""DuckDB's refusal of ``create temporary table DB.SCHEMA.NAME``, which fakesnow passes on."""


@pytest.fixture
def fakesnow_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakesnowServer]:
    pytest.importorskip("fakesnow", reason="fakesnow is in the dev extra")
    monkeypatch.setenv(SNOWFLAKE_PASSWORD_ENV, "fakesnow-takes-any-password")
    with running_fakesnow(patch_connector=False) as server:
        yield server


@pytest.mark.timeout(600)
def test_the_marts_built_on_snowflake_match_duckdb_row_for_row(
    tmp_path: Path, fakesnow_server: FakesnowServer
) -> None:
    dbt_snowflake = ensure_dbt_venv()
    on_duckdb, duckdb_marts = duckdb_reference(tmp_path)
    on_snowflake = project_on(
        tmp_path / "snowflake", fakesnow_server.warehouse_config(SNOWFLAKE_PASSWORD_ENV)
    )
    snowflake_target = tmp_path / "dbt-target"
    # dbt learns where Snowflake is from the config alone, as Mailers' dbt steps do.
    environment = dbt_environment(on_snowflake)
    assert "fakesnow-takes-any-password" not in environment.values()  # only its name

    def run_dbt(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_dbt_process(
            dbt_snowflake, "snowflake", environment, args, snowflake_target, check=check
        )

    snowflake_marts = pipeline(
        on_snowflake,
        lambda *args: run_dbt([*args, *(UNIT_TESTS_EXCLUDED if args[0] == "build" else ())]),
    )

    for mart in MARTS:
        assert duckdb_marts[mart], f"{mart} is empty: the comparison would prove nothing"
        assert comparable(snowflake_marts[mart]) == comparable(duckdb_marts[mart]), mart

    # dbt's unit tests: fakesnow cannot create the temporary table dbt-snowflake runs each
    # in, so their compiled SQL (the model over its fixture rows) runs through the adapter,
    # and must give what it gives on DuckDB, where dbt checked it against the expected rows.
    on_duckdb_units = unit_tests(conftest.dbt_target_path(on_duckdb))
    assert len(on_duckdb_units) >= 5 and {s for s, _ in on_duckdb_units.values()} == {"pass"}
    unit_run = run_dbt(["test", "--select", "test_type:unit"], check=False)
    on_snowflake_units = unit_tests(snowflake_target)
    assert on_snowflake_units.keys() == on_duckdb_units.keys(), unit_run.stdout[-3000:]
    for name, (status, message) in on_snowflake_units.items():
        # Strict: once fakesnow runs them, drop UNIT_TESTS_EXCLUDED and this detour.
        assert status == "error" and FAKESNOW_TEMPORARY_TABLE_ERROR in message, (name, message)
    with (
        open_warehouse(on_duckdb, read_only=True) as duck,
        open_warehouse(on_snowflake, read_only=True) as snow,
    ):
        for name in on_duckdb_units:
            on_duck = duck.query(compiled(conftest.dbt_target_path(on_duckdb), name)).to_pylist()
            on_snow = snow.query(compiled(snowflake_target, name)).to_pylist()
            assert on_duck, f"unit test {name} gives no rows: the comparison would prove nothing"
            assert comparable(on_snow) == comparable(on_duck), name


@pytest.mark.timeout(600)
def test_dagster_builds_the_segments_on_snowflake_with_the_dbt_it_is_given(
    tmp_path: Path, fakesnow_server: FakesnowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dbt-snowflake cannot share Mailers' venv, so a user names its executable in
    ``MAILERS_DBT_EXECUTABLE``; Dagster's dbt step then parses and builds on the snowflake
    target with the variables Mailers derives from the config alone."""
    import dagster as dg

    from orchestration.defs.build import build_definitions

    monkeypatch.setenv(DBT_EXECUTABLE_ENV, str(ensure_dbt_venv()))
    settings = conftest.engine_project(
        tmp_path / "project", fakesnow_server.warehouse_config(SNOWFLAKE_PASSWORD_ENV), 200
    )
    segment = dg.AssetKey(["segments", settings.campaign("acme.pro_tips").config.segment])
    defs = build_definitions(str(settings.path))
    # Every segment model and what it reads: the first step of every send job.
    segments = dg.AssetSelection.groups("segments").upstream()
    upstream = segments.resolve(defs.resolve_asset_graph())
    result = defs.resolve_job_def("mailers_pipeline").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        asset_selection=sorted(upstream),
        raise_on_error=False,
    )
    failures = [str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure]
    assert result.success, "\n".join(failures)
    assert segment in {e.asset_key for e in result.get_asset_materialization_events()}
    with open_warehouse(settings, read_only=True) as wh:
        relation = wh.relation("segments", segment.path[-1])
        (row,) = wh.query(f"select count(*) as n from {relation}").to_pylist()
    assert row["n"] > 0
