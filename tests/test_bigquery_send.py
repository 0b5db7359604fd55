"""The send path on BigQuery (bqemulator): the same campaign window sent through the sandbox
providers on DuckDB and on BigQuery records the same ledger, and a second run sends nothing.

``mailers.config.WarehouseConfig`` does not list ``bigquery`` yet, so the BigQuery warehouse
is opened from its own config (``connect``) beside the sandbox project's settings. The
segment is a plain view (dbt's BigQuery target is later work of issue 11).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters import demo_data
from adapters.providers.registry import build_providers
from adapters.settings import load
from adapters.warehouses import OpenWarehouse, connect, open_warehouse
from adapters.warehouses.bigquery import BigQueryWarehouse
from mailers.audience import AudienceSpec, disposition_counts, resolve
from mailers.bigquery_config import BigQueryWarehouseConfig
from mailers.config import Settings
from mailers.ledger import LedgerContext, LedgerWriter, latest_rows_sql
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


def _open(settings: Settings, bigquery: BigQueryWarehouseConfig | None) -> OpenWarehouse:
    return open_warehouse(settings) if bigquery is None else connect(bigquery, settings.data_dir)


def _project(root: Path, bigquery: BigQueryWarehouseConfig | None) -> Settings:
    root.mkdir()
    settings = load(write_config(root, lambda config: None))
    with _open(settings, bigquery) as wh:
        ensure_tables(wh)
        demo_data.seed(wh, 300)
        wh.execute("create schema if not exists segments")
        wh.execute(_segment_sql(wh))
    return settings


def _send(
    settings: Settings, bigquery: BigQueryWarehouseConfig | None, run_id: str
) -> tuple[SendReport, dict[str, int]]:
    ref = settings.campaign(CAMPAIGN)
    with _open(settings, bigquery) as wh:
        ensure_tables(wh)
        if isinstance(wh, BigQueryWarehouse):
            wh.load_jobs = 0
        ledger = LedgerWriter(wh, LedgerContext.of(ref, WINDOW, run_id))
        table = resolve(wh, AudienceSpec.of(ref, WINDOW), ledger.settled_keys_sql())
        counts = disposition_counts(wh, table)
        sender = CampaignSender(
            wh,
            SendContext(settings, ref, WINDOW, run_id, UNSUBSCRIBE_KEY),
            build_providers(settings, ref.workspace),
        )
        report = sender.run(table)
        if isinstance(wh, BigQueryWarehouse):
            # Bulk writes: load jobs grow with provider calls (two each), not with messages.
            handed = report.counts["accepted"] + report.counts["rejected"]
            assert wh.load_jobs <= 1 + 2 * max(1, handed // 10), (wh.load_jobs, handed)
        return report, counts


def _latest(settings: Settings, bigquery: BigQueryWarehouseConfig | None) -> dict[str, Any]:
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
        ("bigquery", BigQueryWarehouseConfig.model_validate(bigquery_config)),
    ):
        settings = _project(tmp_path / engine, bigquery)
        first, counts = _send(settings, bigquery, "run-1")
        assert 20 < first.counts["accepted"] <= counts["to_send"], engine
        second, again = _send(settings, bigquery, "run-2")
        assert second.counts["accepted"] == 0, engine
        assert again.get("to_send", 0) == first.counts["render_failed"], engine
        stories[engine] = _latest(settings, bigquery)

    assert stories["bigquery"] == stories["duckdb"]
