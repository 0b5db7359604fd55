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

    Ticks are cron times on the local wall clock. A wall time that occurs twice (autumn
    clock change) counts once, at its first occurrence; one that does not exist (spring)
    counts at the moment it would have been, by the offset before the change. So windows
    never move backwards and a daily schedule has one window every day.
    """
    if schedule is None:
        return ONE_OFF_WINDOW
    zone = ZoneInfo(schedule.timezone)
    moment = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    wall = moment.astimezone(zone).replace(tzinfo=None, microsecond=0)
    # croniter's get_prev is strictly before its start: start one second later so that a
    # run exactly on a tick belongs to that tick. The tick after that is a candidate too:
    # in the repeated autumn hour, the wall clock is behind a tick that already happened.
    ticks = croniter(schedule.cron, wall + timedelta(seconds=1))
    previous: datetime = ticks.get_prev(datetime)
    following: datetime = croniter(schedule.cron, previous).get_next(datetime)
    candidates = [_on_clock(previous, zone), _on_clock(following, zone)]
    passed = [tick for tick in candidates if tick <= moment]
    if not passed:
        earlier: datetime = croniter(schedule.cron, previous).get_prev(datetime)
        passed = [_on_clock(earlier, zone)]
    return max(passed).strftime("%Y-%m-%dT%H:%M:%SZ")


def _on_clock(wall: datetime, zone: ZoneInfo) -> datetime:
    """A naive wall-clock time in ``zone`` as UTC (first occurrence when ambiguous)."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def is_valid_cron(expression: str) -> bool:
    """Whether ``expression`` is a five-field cron expression croniter understands."""
    return len(expression.split()) == 5 and croniter.is_valid(expression)
