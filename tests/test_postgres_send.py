"""The send path on Postgres: the same campaign window sent through the sandbox providers on
DuckDB and on a real Postgres server records the same ledger, and a second run sends
nothing on either.

The segment is a plain view here, the same SQL on both engines, so the send path is tested
without dbt; tests/test_pipeline_engines.py runs the whole pipeline, dbt included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.providers.registry import build_providers
from adapters.warehouses import open_warehouse
from mailers.audience import AudienceSpec, disposition_counts, resolve
from mailers.config import Settings
from mailers.ledger import LedgerContext, LedgerWriter, latest_rows_sql
from mailers.sending import CampaignSender, SendContext, SendReport
from mailers.tables import ensure_tables

from .conftest import UNSUBSCRIBE_KEY, eml_files, engine_project

WINDOW = "once"
CAMPAIGN = "globex.launch_newsletter"
SEGMENT_SQL = """
create view segments.seg_globex_newsletter as
select email, first_name, last_name, plan, contact_id
from crm.contacts
where brand = 'globex' and marketing_opt_in
"""


def _project(root: Path, warehouse: dict[str, Any] | None) -> Settings:
    settings = engine_project(root, warehouse, 300)
    with open_warehouse(settings) as wh:
        wh.execute("create schema if not exists segments")
        wh.execute(SEGMENT_SQL)
    return settings


def _send(settings: Settings, run_id: str) -> tuple[SendReport, dict[str, int]]:
    ref = settings.campaign(CAMPAIGN)
    with open_warehouse(settings) as wh:
        ensure_tables(wh)
        ledger = LedgerWriter(wh, LedgerContext.of(ref, WINDOW, run_id))
        table = resolve(wh, AudienceSpec.of(ref, WINDOW), ledger.settled_keys_sql())
        counts = disposition_counts(wh, table)
        sender = CampaignSender(
            wh,
            SendContext(settings, ref, WINDOW, run_id, UNSUBSCRIBE_KEY),
            build_providers(settings, ref.workspace),
        )
        return sender.run(table), counts


def _latest(settings: Settings) -> dict[str, tuple[str, str | None]]:
    with open_warehouse(settings, read_only=True) as wh:
        rows = wh.query(
            f"select message_key, status, reason from ({latest_rows_sql(wh)}) as latest"
        ).to_pylist()
    return {row["message_key"]: (row["status"], row["reason"]) for row in rows}


@pytest.mark.timeout(300)
def test_a_window_sent_on_postgres_matches_duckdb(
    tmp_path: Path, postgres_config: dict[str, Any]
) -> None:
    stories = {}
    for engine, warehouse in (("duckdb", None), ("postgres", postgres_config)):
        settings = _project(tmp_path / engine, warehouse)
        assert settings.config.warehouse.kind == engine
        first, counts = _send(settings, "run-1")
        assert 20 < first.counts["accepted"] <= counts["to_send"], engine
        assert len(eml_files(settings)) == first.counts["accepted"], engine

        second, again = _send(settings, "run-2")
        assert second.counts["accepted"] == 0, engine
        # Only what failed to render (retryable) is left to send; the rest is settled.
        assert again.get("to_send", 0) == first.counts["render_failed"], engine
        assert (
            again["already_settled"]
            == counts["to_send"]
            + counts["skipped_suppressed"]
            + (counts["skipped_invalid_address"] + counts["skipped_missing_address"])
            - first.counts["render_failed"]
        ), engine
        stories[engine] = _latest(settings)

    assert stories["postgres"] == stories["duckdb"]
    assert {status for status, _ in stories["duckdb"].values()} >= {"accepted", "skipped"}
