"""Assemble the code location from the config: campaigns become assets, jobs, schedules."""

from __future__ import annotations

import dagster as dg

from adapters.settings import load
from orchestration.defs.automation import jobs_and_schedules
from orchestration.defs.campaigns import all_campaign_assets, sends_key
from orchestration.defs.completeness import overdue_feedback
from orchestration.defs.control import control_definitions
from orchestration.defs.dbt import dbt_definitions
from orchestration.defs.pause_rules import rules_definitions
from orchestration.defs.records import external_tables, ledger_asset, provider_events
from orchestration.defs.resources import MailersResource
from orchestration.defs.webhooks_out import webhooks_definitions


def build_definitions(config_path: str | None = None) -> dg.Definitions:
    """Definitions for one config file (default: ``$MAILERS_CONFIG`` or ``./mailers.yaml``)."""
    settings = load(config_path)
    campaigns = all_campaign_assets(settings)
    sends = [sends_key(ref) for ref in settings.campaigns()]
    core = dg.Definitions(
        assets=[*external_tables, *campaigns, ledger_asset(sends), provider_events],
        asset_checks=[overdue_feedback],
        resources={"mailers": MailersResource(config_path=str(settings.path))},
        # Every step touches the one DuckDB file: running them in one process is faster
        # than a process per step and keeps a single writer.
        executor=dg.in_process_executor,
    )
    return dg.Definitions.merge(
        core,
        dbt_definitions(settings),
        jobs_and_schedules(settings),
        control_definitions,
        rules_definitions(settings),
        webhooks_definitions(settings),
    )
