"""What a run is about: its send window and who or what triggered it (from run tags)."""

from __future__ import annotations

import getpass
from datetime import datetime

import dagster as dg

from mailers import clock
from mailers.config import CampaignRef
from mailers.windows import send_window

SEND_WINDOW_TAG = "mailers/send_window"
"""Set on a run to send (or re-send the rest of) a specific window, e.g. in a backfill."""

ACTOR_TAG = "mailers/actor"
"""Set by the ``mailers`` CLI to name who ran it."""


def run_window(context: dg.AssetExecutionContext, campaign: CampaignRef) -> str:
    """The send window of this run for a campaign.

    An explicit ``mailers/send_window`` tag wins; else a scheduled run's tick; else the
    run's creation time on Mailers' clock (:func:`mailers.clock.from_system`), so every
    asset of one run agrees on the window.
    """
    tags = context.run.tags
    if explicit := tags.get(SEND_WINDOW_TAG):
        return explicit
    scheduled = tags.get("dagster/scheduled_execution_time")
    if scheduled:
        moment = datetime.fromisoformat(scheduled)
    else:
        records = context.instance.get_run_records(
            filters=dg.RunsFilter(run_ids=[context.run.run_id]), limit=1
        )
        moment = clock.from_system(records[0].create_timestamp) if records else clock.now()
    return send_window(campaign.config.schedule, moment)


def run_actor(context: dg.AssetExecutionContext) -> str:
    """Who or what triggered this run, for the audit log."""
    tags = context.run.tags
    if actor := tags.get(ACTOR_TAG):
        return actor
    for tag, label in (
        ("dagster/schedule_name", "schedule"),
        ("dagster/sensor_name", "sensor"),
        ("dagster/backfill", "backfill"),
    ):
        if value := tags.get(tag):
            return f"dagster:{label}:{value}"
    if user := tags.get("dagster/user"):
        return f"dagster:user:{user}"
    return f"dagster:manual:{getpass.getuser()}"
