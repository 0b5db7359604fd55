"""What a run is about: its send window and who or what triggered it (from run tags)."""

from __future__ import annotations

import getpass
from datetime import datetime

import dagster as dg

from mailers import clock
from mailers.config import CampaignRef
from mailers.errors import WindowError
from mailers.windows import WindowRequest, requested_window, send_window

SEND_WINDOW_TAG = "mailers/send_window"
"""Set on a run to send (or re-send the rest of) a specific window, e.g. in a backfill."""

BACKFILL_TAG = "mailers/backfill"
"""Set to ``true`` beside ``mailers/send_window`` to send a window other than the current one."""

ACTOR_TAG = "mailers/actor"
"""Set by the ``mailers`` CLI to name who ran it."""


def run_window(context: dg.AssetExecutionContext, campaign: CampaignRef) -> str:
    """The send window of this run for a campaign (see :func:`run_send_window`)."""
    return run_send_window(context, campaign).window


def run_send_window(context: dg.AssetExecutionContext, campaign: CampaignRef) -> WindowRequest:
    """The send window of this run for a campaign, checked before anything is read or sent.

    An explicit ``mailers/send_window`` tag wins: it must be a window of the campaign
    (:func:`mailers.windows.requested_window`), and one other than the current window also
    needs ``mailers/backfill=true``. Else a scheduled run's tick; else the latest tick at the
    run's creation, so every asset of one run agrees on the window. Raises
    :class:`~mailers.errors.WindowError`.
    """
    tags = context.run.tags
    backfill = _backfill_flag(campaign, tags.get(BACKFILL_TAG))
    explicit = tags.get(SEND_WINDOW_TAG)
    if explicit is not None:
        request = requested_window(campaign, explicit, clock.now())
        request.authorize(
            backfill=backfill,
            how=f"run it with the tags {SEND_WINDOW_TAG}={request.window} {BACKFILL_TAG}=true",
        )
        return request
    scheduled = tags.get("dagster/scheduled_execution_time")
    if scheduled:
        moment = datetime.fromisoformat(scheduled)
    else:
        records = context.instance.get_run_records(
            filters=dg.RunsFilter(run_ids=[context.run.run_id]), limit=1
        )
        moment = clock.from_system(records[0].create_timestamp) if records else clock.now()
    return WindowRequest.current_of(campaign, send_window(campaign.config.schedule, moment))


def _backfill_flag(campaign: CampaignRef, value: str | None) -> bool:
    if value is None:
        return False
    flag = value.strip().lower()
    if flag not in {"true", "false"}:
        raise WindowError(
            f"campaign {campaign.qualified_name}: run tag {BACKFILL_TAG}={value!r} must be "
            "'true' or 'false'"
        )
    return flag == "true"


def run_actor(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> str:
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
