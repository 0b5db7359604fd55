"""The analyst layer of the dbt project on a real DuckDB file: source freshness of the raw
Mailers tables and the marts' enforced contracts.

dbt judges freshness against the warehouse's own clock (``current_timestamp``), which no
var can move, so the rows here are stamped relative to the real wall clock with margins of
days: the verdicts hold on any date and on a loaded machine.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.settings import load
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.config import Settings
from mailers.tables import ensure_tables
from orchestration.defs.dbt_profile import dbt_executable, dbt_target
from tests.conftest import run_dbt, write_config


def _dbt(settings: Settings, target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """dbt against the settings' warehouse, its artifacts in ``target``; not checked."""
    project = str(settings.dbt_project_dir)
    return subprocess.run(
        [dbt_executable(), *args, "--project-dir", project, "--profiles-dir", project],
        env={
            **os.environ,
            "MAILERS_DUCKDB_PATH": str(settings.warehouse_path),
            "DBT_TARGET_PATH": str(target),
            "DBT_LOG_PATH": str(target),
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def _warehouse(tmp_path: Path) -> Settings:
    settings = load(write_config(tmp_path))
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
    return settings


def test_source_freshness_judges_each_raw_table_by_its_own_thresholds(tmp_path: Path) -> None:
    settings = _warehouse(tmp_path)
    now = datetime.now(UTC).replace(tzinfo=None)
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        # events an hour old: pass; the last send 3 days ago: warn (after 2, error after 8);
        # the last run 10 days ago: error (after 7)
        warehouse.execute(
            "insert into mailers.events (event_id, event_type, occurred_at, provider, "
            "provider_account, raw_payload, ingested_at) "
            "values ('e1', 'delivered', ?, 'sandbox', 'a', '{}', ?)",
            [now - timedelta(hours=1), now - timedelta(hours=1)],
        )
        warehouse.execute(
            "insert into mailers.send_ledger (ledger_id, message_key, status, workspace, "
            "stream, campaign, send_window, run_id, recorded_at) "
            "values ('l1', 'm1', 'accepted', 'acme', 'lifecycle', 'tips', 'w', 'r1', ?)",
            [now - timedelta(days=3)],
        )
        warehouse.execute(
            "insert into mailers.audit_log (audit_id, recorded_at, run_id, actor, action, "
            "config_hash, counts, detail, seq, prev_hash, row_hash) "
            "values ('a1', ?, 'r1', 'cli:test', 'send', 'h', '{}', '{}', 1, '0', '1')",
            [now - timedelta(days=10)],
        )
    target = tmp_path / "dbt_target"

    completed = _dbt(settings, target, "source", "freshness", "--target", dbt_target(settings))

    # an error verdict fails the command, as a scheduler running it should see
    assert completed.returncode == 1, completed.stdout[-3000:]
    results = json.loads((target / "sources.json").read_text())["results"]
    statuses = {row["unique_id"].rsplit(".", 1)[-1]: row["status"] for row in results}
    assert statuses == {"events": "pass", "send_ledger": "warn", "audit_log": "error"}


def test_a_mart_whose_column_types_drift_from_its_contract_is_not_built(tmp_path: Path) -> None:
    settings = _warehouse(tmp_path)
    run_dbt(settings, "run", "--select", "+fct_message_completeness")
    drifted = {"double": {"duckdb": "float"}, "naive_timestamp": {"duckdb": "timestamp"}}

    completed = _dbt(
        settings,
        tmp_path / "dbt_target",
        "run",
        "--select",
        "fct_message_completeness",
        "--vars",
        json.dumps({"mailers_types": drifted}),
    )

    assert completed.returncode == 1
    assert "enforced contract that failed" in completed.stdout
    assert "completeness_rate" in completed.stdout and "data type mismatch" in completed.stdout
