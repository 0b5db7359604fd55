"""A run's first step checks that every secret the run needs is set, before dbt or a send.

Which campaigns a run covers follows from the sends assets in it; event polling from the
events asset. The segment dbt models (the first step of every send job and of the
pipeline) run the check, so a missing variable fails the run before dbt, naming every
missing variable at once; each sends step checks its own campaign's again, in case a run
starts there.
"""

from __future__ import annotations

import dagster as dg

from mailers.config import CampaignRef, Settings
from mailers.errors import SecretMissing
from mailers.preflight import require_environment
from orchestration.defs.campaigns import sends_key
from orchestration.defs.records import EVENTS_KEY


def run_campaigns(context: dg.AssetExecutionContext, settings: Settings) -> list[CampaignRef]:
    """The campaigns whose sends asset this run materializes."""
    keys = context.job_def.asset_layer.selected_asset_keys
    return [ref for ref in settings.campaigns() if sends_key(ref) in keys]


def require_run_environment(context: dg.AssetExecutionContext, settings: Settings) -> None:
    """Fail the step, naming every unset variable this run's campaigns (and polling) need."""
    polling = EVENTS_KEY in context.job_def.asset_layer.selected_asset_keys
    try:
        require_environment(settings, run_campaigns(context, settings), polling=polling)
    except SecretMissing as err:
        raise dg.Failure(description=f"this run cannot start: {err}") from err
