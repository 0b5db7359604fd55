"""The pipeline the engine tests run on DuckDB and on an emulated warehouse, and how their
marts are compared: on one fixed clock and the same inputs, dbt builds the segment views,
the audience is resolved, the sandbox providers send (their events land as files), the
events are ingested, and dbt builds every model and runs every data test; then every mart
is read.

dbt is whatever the caller passes: the main venv's dbt on DuckDB, or a dbt run as a
process against the emulator's server, as it would run against the real warehouse
(:func:`tests.conftest.run_dbt_process`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapters import demo_data
from adapters.providers.registry import bulk_event_parser, event_parser
from adapters.warehouses import open_warehouse
from mailers import clock
from mailers.audit import AuditAction, AuditRecord, append_audit
from mailers.completeness import dbt_vars
from mailers.config import Settings
from mailers.ingest import ingest
from mailers.ledger_journal import send_warehouse
from mailers.tables import ensure_tables

from .conftest import project_on, run_dbt, send_on

START = datetime(2026, 11, 23, 8, 30, tzinfo=UTC)
"""The fixed instant each engine's pipeline starts at (the clock moves only by the sends'
own pacing waits, the same on both)."""
SENDS = (("globex.launch_newsletter", "once"), ("acme.pro_tips", "2026-11-23T08:00:00Z"))
"""Each campaign sent and its window: ``acme.pro_tips``'s is :data:`START`'s hour."""
MARTS = (
    "dim_campaigns",
    "dim_suppressions",
    "fct_campaign_deliverability_daily",
    "fct_deliverability_daily",
    "fct_email_events",
    "fct_message_completeness",
    "fct_messages",
    "fct_send_audit",
)
RANDOM_COLUMNS = frozenset({"audit_id", "row_hash"})
"""An audit record's id is a fresh UUID, and its chain hash covers it."""
LANDING_SUFFIX = re.compile(r"-[0-9a-f]{8}\.jsonl$")
"""A landing file is named by its instant and 8 random hex digits (mailers/landing.py), so
two landings of one instant never collide."""
CONFIG_HASH = "same-config-on-both-engines"
"""The audit records' config hash: the two configs differ in their ``warehouse:`` only."""

Dbt = Callable[..., object]
"""Runs ``dbt ARGS`` of the project on one engine, failing the test unless it succeeds."""


def duckdb_reference(tmp_path: Path) -> tuple[Settings, dict[str, list[dict[str, Any]]]]:
    """The pipeline on DuckDB in ``tmp_path/duckdb``, dbt from the main venv: its settings
    and every mart's rows, which the other engine's must equal."""
    settings = project_on(tmp_path / "duckdb", None)
    return settings, pipeline(settings, lambda *args: run_dbt(settings, *args))


def pipeline(settings: Settings, dbt: Dbt) -> dict[str, list[dict[str, Any]]]:
    """Seed, segments, sends, events, marts on ``settings``' warehouse, on a clock of its
    own (so its stamps start afresh too); every mart's rows."""
    pinned = clock.FixedClock(START)
    with clock.use_clock(pinned):
        return _run_pipeline(settings, dbt, pinned)


def _run_pipeline(
    settings: Settings, dbt: Dbt, pinned: clock.FixedClock
) -> dict[str, list[dict[str, Any]]]:
    with open_warehouse(settings) as wh:
        ensure_tables(wh)
        demo_data.seed(wh, 400)
    dbt("run", "--select", "+path:models/segments")
    for campaign, window in SENDS:
        ref = settings.campaign(campaign)
        run_id = f"run-{ref.name}"
        with open_warehouse(settings) as opened, send_warehouse(opened, settings, run_id) as wh:
            report = send_on(wh, settings, campaign, window, run_id, sleep=pinned.advance)
            assert report.counts["accepted"] > 20, (campaign, report.counts)
            append_audit(
                wh,
                [
                    AuditRecord(
                        run_id=run_id,
                        actor="test",
                        action=AuditAction.SEND,
                        config_hash=CONFIG_HASH,
                        counts=report.counts,
                        workspace=ref.workspace,
                        stream=ref.config.stream,
                        campaign=ref.name,
                        send_window=window,
                    )
                ],
            )
    with open_warehouse(settings) as wh, bulk_event_parser() as bulk:
        loaded = ingest(wh, settings.landing_dir, event_parser, bulk=bulk)
        assert loaded.counts["events_new"] > 50, loaded.counts
        append_audit(
            wh,
            [
                AuditRecord(
                    run_id="run-ingest",
                    actor="test",
                    action=AuditAction.INGEST_EVENTS,
                    config_hash=CONFIG_HASH,
                    counts=loaded.counts,
                )
            ],
        )
    dbt("build", "--vars", json.dumps(dbt_vars(settings.config.completeness)))
    with open_warehouse(settings, read_only=True) as wh:
        return {
            mart: wh.query(f"select * from {wh.relation('marts', mart)}").to_pylist()
            for mart in MARTS
        }


def comparable(rows: list[dict[str, Any]]) -> list[tuple[tuple[str, Any], ...]]:
    """Rows as sorted tuples of (column, value), in a stable order, with what is random by
    design set aside (:data:`RANDOM_COLUMNS`, the landing files' random suffix); a
    whole-number ``Decimal`` (Snowflake's NUMBER) as the int DuckDB gives."""

    def value(column: str, v: Any) -> Any:
        if isinstance(v, Decimal) and v == v.to_integral_value():
            return int(v)
        if column == "source_file" and isinstance(v, str):
            return LANDING_SUFFIX.sub("-<random>.jsonl", v)
        return v

    return sorted(
        (
            tuple(sorted((k, value(k, v)) for k, v in row.items() if k not in RANDOM_COLUMNS))
            for row in rows
        ),
        key=repr,
    )


def unit_tests(target: Path) -> dict[str, tuple[str, str]]:
    """The unit tests of dbt's last run in ``target``: name -> (status, message)."""
    results = json.loads((target / "run_results.json").read_text())["results"]
    return {
        result["unique_id"]: (result["status"], result.get("message") or "")
        for result in results
        if result["unique_id"].startswith("unit_test.")
    }


def compiled(target: Path, unique_id: str) -> str:
    """The SQL dbt compiled for unit test ``unique_id`` in ``target`` (its run_results.json
    holds none for a unit test that errored, its ``compiled/`` tree does)."""
    name = unique_id.rsplit(".", 1)[-1]
    (path,) = (target / "compiled").rglob(f"{name}.sql")
    return path.read_text()
