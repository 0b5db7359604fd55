"""The send path on BigQuery (bqemulator): the same campaign window sent through the sandbox
providers on DuckDB and on BigQuery records the same ledger, and a second run sends nothing.

On BigQuery the send journals its ledger (``ledger.journal: auto``), so its load jobs stay a
handful per run however many provider calls it makes. The segment is a plain view here;
``tests/test_bigquery_pipeline.py`` builds it, and everything after the send, with dbt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters import demo_data
from adapters.providers.registry import build_providers
from adapters.settings import load
from adapters.warehouses import OpenWarehouse, open_warehouse
from adapters.warehouses.bigquery import BigQueryWarehouse
from mailers.audience import AudienceSpec, disposition_counts, resolve
from mailers.config import Settings
from mailers.ledger import LedgerContext, LedgerWriter, latest_rows_sql
from mailers.ledger_journal import JournaledWarehouse, send_warehouse
from mailers.sending import CampaignSender, SendContext, SendReport
from mailers.tables import ensure_tables

from .conftest import UNSUBSCRIBE_KEY, write_config

WINDOW = "once"
CAMPAIGN = "globex.launch_newsletter"


def _segment_sql(wh: OpenWarehouse) -> str:
    return f"""
create view {wh.relation("segments", "seg_globex_newsletter")} as
select email, first_name, last_name, plan, contact_id
from {wh.relation("crm", "contacts")}
where brand = 'globex' and marketing_opt_in
"""


def _open(settings: Settings, bigquery: dict[str, Any] | None) -> OpenWarehouse:
    return open_warehouse(settings)


def _project(root: Path, bigquery: dict[str, Any] | None) -> Settings:
    root.mkdir()

    def on_engine(config: dict[str, Any]) -> None:
        # Small provider calls, so the run makes many: each would be two ledger writes.
        for account in config["workspaces"]["globex"]["provider_accounts"].values():
            account["batch_size"] = 10
        if bigquery is not None:
            config["warehouse"] = bigquery

    settings = load(write_config(root, on_engine))
    with _open(settings, bigquery) as wh:
        ensure_tables(wh)
        demo_data.seed(wh, 300)
        wh.execute("create schema if not exists segments")
        wh.execute(_segment_sql(wh))
    return settings


def _send(
    settings: Settings, bigquery: dict[str, Any] | None, run_id: str
) -> tuple[SendReport, dict[str, int]]:
    ref = settings.campaign(CAMPAIGN)
    with _open(settings, bigquery) as opened, send_warehouse(opened, settings, run_id) as wh:
        ensure_tables(wh)
        if isinstance(opened, BigQueryWarehouse):
            assert isinstance(wh, JournaledWarehouse)  # ledger.journal: auto
            opened.load_jobs = 0
        ledger = LedgerWriter(wh, LedgerContext.of(ref, WINDOW, run_id))
        table = resolve(wh, AudienceSpec.of(ref, WINDOW), ledger.settled_keys_sql())
        counts = disposition_counts(wh, table)
        sender = CampaignSender(
            wh,
            SendContext(settings, ref, WINDOW, run_id, UNSUBSCRIBE_KEY),
            build_providers(settings, ref.workspace),
        )
        report = sender.run(table)
        if isinstance(opened, BigQueryWarehouse):
            # Journaled: the run's ledger and affinity rows reach BigQuery in a few loads,
            # not two per provider call.
            assert isinstance(wh, JournaledWarehouse)
            calls = wh.journaled_appends
            print(f"\n{run_id}: {calls} journaled appends, {opened.load_jobs} load jobs so far")
            assert opened.load_jobs <= 6, (opened.load_jobs, calls)
            if report.counts["accepted"]:  # ten messages a call: 2 appends per call
                assert calls >= report.counts["accepted"] // 10, calls
    if isinstance(opened, BigQueryWarehouse):
        print(f"{run_id}: {opened.load_jobs} load jobs in all, {wh.loads} journal loads")
        assert wh.loads <= 6
    return report, counts


def _latest(settings: Settings, bigquery: dict[str, Any] | None) -> dict[str, Any]:
    with _open(settings, bigquery) as wh:
        rows = wh.query(
            f"select message_key, status, reason from ({latest_rows_sql(wh)}) as latest"
        ).to_pylist()
    return {row["message_key"]: (row["status"], row["reason"]) for row in rows}


@pytest.mark.timeout(600)
def test_a_window_sent_on_bigquery_matches_duckdb(
    tmp_path: Path, bigquery_config: dict[str, Any]
) -> None:
    stories = {}
    for engine, bigquery in (
        ("duckdb", None),
        ("bigquery", bigquery_config),
    ):
        settings = _project(tmp_path / engine, bigquery)
        first, counts = _send(settings, bigquery, "run-1")
        assert 20 < first.counts["accepted"] <= counts["to_send"], engine
        second, again = _send(settings, bigquery, "run-2")
        assert second.counts["accepted"] == 0, engine
        assert again.get("to_send", 0) == first.counts["render_failed"], engine
        stories[engine] = _latest(settings, bigquery)

    assert stories["bigquery"] == stories["duckdb"]
