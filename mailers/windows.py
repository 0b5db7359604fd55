"""Send windows: a one-off campaign has one; a recurring one has one per schedule tick.

The window id goes into every message key, so a re-run inside the same window finds the
ledger rows of the first run and sends nothing twice, while the next tick starts afresh.
That only holds if one window has one spelling: :func:`requested_window` turns any value a
user or a run tag gives into the canonical id, or refuses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from mailers.config import CampaignRef, ScheduleConfig
from mailers.errors import WindowError

ONE_OFF_WINDOW = "once"

TICK_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
"""The one spelling of a recurring campaign's window: its tick in UTC, to the second."""

_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
"""A date and a time of day at least; :meth:`datetime.fromisoformat` checks the rest."""


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
    return max(passed).strftime(TICK_FORMAT)


def _on_clock(wall: datetime, zone: ZoneInfo) -> datetime:
    """A naive wall-clock time in ``zone`` as UTC (first occurrence when ambiguous)."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def is_valid_cron(expression: str) -> bool:
    """Whether ``expression`` is a five-field cron expression croniter understands."""
    return len(expression.split()) == 5 and croniter.is_valid(expression)


@dataclass(frozen=True)
class WindowRequest:
    """A campaign window someone asked for, in its canonical spelling.

    ``current`` is the campaign's window at the moment of asking: any other (earlier)
    window is a backfill.
    """

    campaign: str
    window: str
    current: str

    @classmethod
    def current_of(cls, campaign: CampaignRef, window: str) -> WindowRequest:
        """A window taken as the current one (a scheduled run's tick, the latest tick)."""
        return cls(campaign.qualified_name, window, window)

    @property
    def is_backfill(self) -> bool:
        return self.window != self.current

    def authorize(self, *, backfill: bool, how: str) -> None:
        """Refuse a backfill that was not asked for explicitly; ``how`` says how to ask."""
        if self.is_backfill and not backfill:
            raise WindowError(
                f"campaign {self.campaign}: send window {self.window} is not the current one "
                f"({self.current}); sending a past window is a backfill and must be asked "
                f"for explicitly: {how}"
            )


def requested_window(campaign: CampaignRef, value: str, now: datetime) -> WindowRequest:
    """Validate ``value`` as a window of ``campaign`` at ``now``; canonical spelling.

    A one-off campaign has only ``once``. A recurring campaign accepts a tick its schedule
    produces (the ticks :func:`send_window` returns) that is not after the current window,
    written as any ISO-8601 spelling of that instant (no offset means UTC); the result is
    ``YYYY-MM-DDTHH:MM:SSZ``. Anything else raises :class:`WindowError` naming the campaign,
    the value and the ticks nearest to it.
    """
    name = campaign.qualified_name
    schedule = campaign.config.schedule
    now = (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(UTC)
    current = send_window(schedule, now)
    text = value.strip()
    if schedule is None:
        if text != ONE_OFF_WINDOW:
            raise WindowError(
                f"campaign {name} is a one-off campaign: its only send window is "
                f"{ONE_OFF_WINDOW!r}, not {value!r}"
            )
        return WindowRequest(name, ONE_OFF_WINDOW, ONE_OFF_WINDOW)
    described = f"its schedule {schedule.cron!r} ({schedule.timezone})"
    instant = _instant(text)
    if instant is None:
        hint = (
            f" ({ONE_OFF_WINDOW!r} is the window of one-off campaigns only)"
            if text == ONE_OFF_WINDOW
            else ""
        )
        raise WindowError(
            f"campaign {name}: send window {value!r} is not a tick of {described}{hint}; "
            f"windows are written YYYY-MM-DDTHH:MM:SSZ (UTC); "
            f"{_nearest(schedule, _tick(current), now)}"
        )
    before = send_window(schedule, instant)
    if _tick(before) != instant:
        raise WindowError(
            f"campaign {name}: send window {value!r} is not a tick of {described}; "
            f"{_nearest(schedule, _tick(before), now)}"
        )
    if instant > _tick(current):
        said = before if text == before else f"{value!r} ({before})"
        raise WindowError(
            f"campaign {name}: send window {said} has not begun yet; the current window "
            f"is {current}"
        )
    return WindowRequest(name, before, current)


def next_tick(schedule: ScheduleConfig, at: datetime) -> str:
    """The first window of ``schedule`` that begins after ``at`` (aware or UTC-naive)."""
    zone = ZoneInfo(schedule.timezone)
    moment = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    wall = moment.astimezone(zone).replace(tzinfo=None, microsecond=0)
    ticks = croniter(schedule.cron, wall)
    # A wall tick can map to a moment at or before ``at`` in the repeated autumn hour (its
    # first occurrence has passed): skip to the next one.
    while True:
        candidate = _on_clock(ticks.get_next(datetime), zone)
        if candidate > moment:
            return candidate.strftime(TICK_FORMAT)


def _nearest(schedule: ScheduleConfig, before: datetime, now: datetime) -> str:
    """``before`` and the tick after it, said as the nearest ticks, future ones marked."""
    ticks = [before, _tick(next_tick(schedule, before))]
    said = [
        tick.strftime(TICK_FORMAT) + (" (not begun yet)" if tick > now else "") for tick in ticks
    ]
    return f"the nearest ticks are {said[0]} and {said[1]}"


def _instant(text: str) -> datetime | None:
    """``text`` as an aware UTC instant (no offset: UTC), or ``None`` when it is not one."""
    if not _INSTANT.match(text):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _tick(window: str) -> datetime:
    return datetime.strptime(window, TICK_FORMAT).replace(tzinfo=UTC)
