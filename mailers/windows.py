"""Send windows: a one-off campaign has one; a recurring one has one per schedule tick.

The window id goes into every message key, so a re-run inside the same window finds the
ledger rows of the first run and sends nothing twice, while the next tick starts afresh.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from mailers.config import ScheduleConfig

ONE_OFF_WINDOW = "once"


def send_window(schedule: ScheduleConfig | None, at: datetime) -> str:
    """The window a run at ``at`` (aware or UTC-naive) belongs to.

    For a recurring campaign that is the latest cron tick at or before ``at``, written as
    UTC ISO-8601 (``2026-11-26T09:00:00Z``); a scheduled run passes its tick time, a manual
    run the current time, so a manual re-run inside a window sends nothing new.
    """
    if schedule is None:
        return ONE_OFF_WINDOW
    moment = at if at.tzinfo else at.replace(tzinfo=UTC)
    local = moment.astimezone(ZoneInfo(schedule.timezone))
    # croniter's get_prev is strictly before its start: start one second later so that a
    # run exactly on a tick belongs to that tick.
    start = local.replace(microsecond=0) + timedelta(seconds=1)
    tick: datetime = croniter(schedule.cron, start).get_prev(datetime)
    return tick.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_valid_cron(expression: str) -> bool:
    """Whether ``expression`` is a five-field cron expression croniter understands."""
    return len(expression.split()) == 5 and croniter.is_valid(expression)
