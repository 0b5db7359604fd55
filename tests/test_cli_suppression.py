"""``mailers suppression``: why, add, import and remove, with a real second process holding
the warehouse's write lock (as a running send does)."""

from __future__ import annotations

import getpass
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.settings import load
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers import clock
from mailers.config import Settings
from mailers.control import ControlJournal, load_control
from mailers.suppression_blocks import PendingBlocks
from mailers.tables import ensure_tables
from orchestration.cli import app
from tests.conftest import UNSUBSCRIBE_KEY, query, write_config
from tests.core.test_ingest import event, land

HOLD_WAREHOUSE = """
import sys
import duckdb
connection = duckdb.connect(sys.argv[1])
print("holding", flush=True)
sys.stdin.readline()
connection.close()
"""


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MAILERS_UNSUBSCRIBE_KEY", UNSUBSCRIBE_KEY)
    loaded = load(write_config(tmp_path))
    with DuckDBWarehouse(loaded.warehouse_path) as warehouse:
        ensure_tables(warehouse)
    return loaded


def run(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["suppression", *args, "--config", str(settings.path)])
    return result.exit_code, result.output


@contextmanager
def held(settings: Settings) -> Iterator[None]:
    """Another process holds the warehouse open for writing (DuckDB's only write lock)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_WAREHOUSE, str(settings.warehouse_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "holding"
        yield
    finally:
        assert process.stdin is not None
        process.stdin.write("\n")
        process.stdin.close()
        process.wait(timeout=60)


def test_add_why_and_remove_explain_every_block(
    settings: Settings, fixed_clock: clock.FixedClock
) -> None:
    code, out = run(settings, "why", "Ann@example.com")
    assert (code, out.strip()) == (0, "ann@example.com is not suppressed")
    landing = settings.landing_dir
    occurred = clock.utcnow() - timedelta(days=1)
    bounce = event("sbx-b", "bounce", "ann@example.com")
    bounce["timestamp"] = occurred.isoformat() + "+00:00"
    land(landing, "1.jsonl", bounce)
    from adapters.providers.registry import event_parser
    from mailers.ingest import ingest

    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ingest(warehouse, landing, event_parser)

    code, out = run(
        settings,
        "add",
        "ann@example.com",
        "--scope",
        "stream:globex.lifecycle",
        "--reason",
        "asked globex support",
        "--actor",
        "alice",
    )
    assert code == 0, out
    assert "suppressed ann@example.com at stream:globex.lifecycle" in out
    assert "loaded 1 control record(s)" in out

    code, out = run(settings, "why", "ann@example.com")
    assert code == 0, out
    assert "ann@example.com is suppressed by 2 entries" in out
    assert (
        f"blocked at workspace:acme by bounce (event sbx-b via acme_sandbox_a) since "
        f"{occurred:%Y-%m-%d %H:%M:%S} UTC"
    ) in out
    assert "blocked at stream:globex.lifecycle by manual (alice) since" in out
    assert ": asked globex support" in out
    code, out = run(
        settings, "why", "ann@example.com", "--workspace", "globex", "--stream", "transactional"
    )
    assert (code, out.strip()) == (
        0,
        "ann@example.com is not suppressed in globex on transactional",
    )

    code, out = run(
        settings, "remove", "ann@example.com", "--scope", "workspace:acme", "--reason", " "
    )
    assert code == 1 and "needs a reason" in out
    code, out = run(settings, "remove", "ann@example.com", "--scope", "global", "--reason", "r")
    assert code == 1 and "no active suppression at scope global" in out
    fixed_clock.advance(60)
    code, out = run(
        settings,
        "remove",
        "ann@example.com",
        "--scope",
        "workspace:acme",
        "--reason",
        "mailbox exists again",
        "--actor",
        "bob",
    )
    assert code == 0, out
    assert "removed ann@example.com at workspace:acme: lifted 1 entry (bounce" in out

    code, out = run(settings, "why", "ann@example.com", "--workspace", "acme")
    assert code == 0, out
    assert "ann@example.com is not suppressed in acme" in out
    assert "lifted: workspace:acme by bounce (event sbx-b via acme_sandbox_a)" in out
    assert "removed by bob at" in out and ": mailbox exists again" in out
    actions = [r["action"] for r in query(settings, "select action from mailers.audit_log")]
    assert actions == ["suppression_add", "suppression_remove"]


def test_removing_a_complaint_needs_the_override(
    settings: Settings, fixed_clock: clock.FixedClock
) -> None:
    from adapters.providers.registry import event_parser
    from mailers.ingest import ingest

    complaint = event("sbx-c", "complaint", "angry@example.com")
    complaint["timestamp"] = (clock.utcnow() - timedelta(days=1)).isoformat() + "+00:00"
    land(settings.landing_dir, "1.jsonl", complaint)
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ingest(warehouse, settings.landing_dir, event_parser)

    code, out = run(
        settings, "remove", "angry@example.com", "--scope", "workspace:acme", "--reason", "r"
    )
    assert code == 1
    assert "by a complaint (entry" in out and "event sbx-c" in out
    assert "--override-complaint" in out
    assert query(settings, "select * from mailers.suppressions where action = 'remove'") == []

    code, out = run(
        settings,
        "remove",
        "angry@example.com",
        "--scope",
        "workspace:acme",
        "--reason",
        "confirmed in writing",
        "--override-complaint",
    )
    assert code == 0, out
    code, out = run(settings, "why", "angry@example.com")
    assert "is not suppressed" in out and "lifted: workspace:acme by complaint" in out


def test_import_a_csv_or_a_relation_and_bad_rows_are_named(
    settings: Settings, tmp_path: Path
) -> None:
    good = tmp_path / "list.csv"
    good.write_text("address\nx@example.com\ny@example.com\n")
    code, out = run(
        settings, "import", str(good), "--scope", "workspace:acme", "--reason", "old ESP"
    )
    assert code == 0, out
    assert "imported 2 suppressions at workspace:acme from file:" in out
    code, out = run(settings, "why", "x@example.com")
    assert f"by import (file:{good.resolve()}:2 by " in out

    bad = tmp_path / "bad.csv"
    bad.write_text("address\nz@example.com\nzz@@example\n")
    code, out = run(settings, "import", str(bad), "--scope", "global", "--reason", "r")
    assert code == 1
    assert "line 3: invalid address 'zz@@example'" in out and "nothing was imported" in out
    code, out = run(settings, "why", "z@example.com")
    assert "is not suppressed" in out

    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        warehouse.execute("create schema crm_exports")
        warehouse.execute("create table crm_exports.dnm as select 'w@example.com' as email")
    code, out = run(
        settings, "import", "--relation", "crm_exports.dnm", "--scope", "global", "--reason", "CRM"
    )
    assert code == 0, out
    code, out = run(settings, "why", "w@example.com", "--workspace", "globex")
    assert "blocked at global by import (relation:crm_exports.dnm by " in out
    code, out = run(
        settings, "import", str(good), "--relation", "a.b", "--scope", "global", "--reason", "r"
    )
    assert code == 2 and "either FILE.csv or --relation" in out


def test_add_while_a_send_holds_the_warehouse_lands_as_a_control_record_loaded_once_later(
    settings: Settings,
) -> None:
    journal = ControlJournal(settings.data_dir)
    blocks = PendingBlocks(journal)
    with held(settings):
        code, out = run(
            settings, "add", "late@example.com", "--scope", "workspace:acme", "--reason", "phone"
        )
        assert code == 0, out
        assert "the warehouse is locked by another process" in out
        assert "a running send applies it before its next batch" in out
        assert "loaded into mailers.suppressions when the send ends" in out
        # What the running send sees before its next batch:
        assert blocks.blocked("acme", "lifecycle", ["Late@example.com"]) == {"Late@example.com"}

        code, out = run(settings, "why", "late@example.com")
        assert code == 0, out
        assert "showing only control records not loaded yet" in out
        assert "blocked at workspace:acme by manual" in out and "(pending control record)" in out

        code, out = run(
            settings, "remove", "late@example.com", "--scope", "workspace:acme", "--reason", "r"
        )
        assert code == 0, out
        assert "a running send keeps blocking the address until then" in out
        assert blocks.blocked("acme", "lifecycle", ["late@example.com"]) == {"late@example.com"}

        code, out = run(
            settings, "import", str(settings.path), "--scope", "global", "--reason", "r"
        )
        assert code == 1 and "import needs the warehouse" in out and "nothing was imported" in out

    # The send ended: its loader (or the next command) loads the records exactly once.
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        assert load_control(warehouse, journal) == 2
        assert load_control(warehouse, journal) == 0
    rows = query(
        settings, "select action, actor, control_id from mailers.suppressions order by created_at"
    )
    assert [r["action"] for r in rows] == ["add", "remove"]
    assert len({r["control_id"] for r in rows}) == 2
    assert blocks.blocked("acme", "lifecycle", ["late@example.com"]) == set()
    code, out = run(settings, "why", "late@example.com")
    assert "is not suppressed" in out and "lifted: workspace:acme by manual" in out


def test_dim_suppressions_honours_removals_and_builds_with_its_tests(
    settings: Settings, tmp_path: Path, fixed_clock: clock.FixedClock
) -> None:
    from adapters.providers.registry import event_parser
    from mailers.ingest import ingest
    from tests.conftest import run_dbt

    def at(payload: dict[str, object], days_ago: float) -> dict[str, object]:
        moment = clock.utcnow() - timedelta(days=days_ago)
        return {**payload, "timestamp": moment.isoformat() + "+00:00"}

    land(
        settings.landing_dir,
        "1.jsonl",
        at(event("sbx-b1", "bounce", "gone@example.com"), 3),
        at(event("sbx-c", "complaint", "angry@example.com"), 3),
    )
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ingest(warehouse, settings.landing_dir, event_parser)
    for address in ("gone@example.com", "angry@example.com"):
        code, out = run(
            settings,
            "remove",
            address,
            "--scope",
            "workspace:acme",
            "--reason",
            "fixed",
            *(["--override-complaint"] if address.startswith("angry") else []),
        )
        assert code == 0, out
    code, out = run(settings, "add", "kept@example.com", "--scope", "global", "--reason", "legal")
    assert code == 0, out
    fixed_clock.advance(3600)
    land(settings.landing_dir, "2.jsonl", at(event("sbx-b2", "bounce", "gone@example.com"), 0))
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ingest(warehouse, settings.landing_dir, event_parser)

    run_dbt(
        settings,
        "build",
        "--select",
        "stg_mailers__suppressions",
        "dim_suppressions",
        "stg_mailers__audit_log",
        "fct_send_audit",
    )

    dim = {
        (r["address"], r["source"]): r
        for r in query(settings, "select * from marts.dim_suppressions")
    }
    gone = dim[("gone@example.com", "bounce")]
    assert (gone["is_active"], gone["occurrences"], gone["lifted_occurrences"]) == (True, 2, 1)
    assert gone["active_since"] > gone["first_seen_at"] and gone["first_origin"] == "sbx-b1"
    angry = dim[("angry@example.com", "complaint")]
    assert (angry["is_active"], angry["active_since"], angry["lifted_occurrences"]) == (
        False,
        None,
        1,
    )
    kept = dim[("kept@example.com", "manual")]
    assert (kept["is_active"], kept["scope"]) == (True, "global")
    assert kept["first_added_by"] == f"cli:{getpass.getuser()}"
    assert kept["first_origin"].startswith("control:")
    assert len(dim) == 3  # removals are not suppressions
