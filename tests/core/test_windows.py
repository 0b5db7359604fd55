"""Send windows: one per one-off campaign, one per cron tick for a recurring one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailers.config import ScheduleConfig
from mailers.windows import ONE_OFF_WINDOW, is_valid_cron, send_window

WEEKLY_BERLIN = ScheduleConfig(cron="0 9 * * 1", timezone="Europe/Berlin")  # Mondays 09:00


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_one_off_campaign_has_a_single_window() -> None:
    assert send_window(None, utc("2026-11-26T12:00:00")) == ONE_OFF_WINDOW == "once"
    assert send_window(None, utc("2030-01-01T00:00:00")) == "once"


@pytest.mark.parametrize(
    ("moment", "window"),
    [
        # Thursday in winter (CET, UTC+1): the Monday before, 09:00 local = 08:00Z.
        ("2026-11-26T12:00:00", "2026-11-23T08:00:00Z"),
        # Summer (CEST, UTC+2): 09:00 local = 07:00Z.
        ("2026-07-08T12:00:00", "2026-07-06T07:00:00Z"),
        # Sunday night still belongs to the previous Monday.
        ("2026-11-29T23:59:59", "2026-11-23T08:00:00Z"),
    ],
)
def test_weekly_cron_gives_latest_tick_in_utc(moment: str, window: str) -> None:
    assert send_window(WEEKLY_BERLIN, utc(moment)) == window


def test_moment_exactly_on_a_tick_belongs_to_that_tick() -> None:
    assert send_window(WEEKLY_BERLIN, utc("2026-11-30T08:00:00")) == "2026-11-30T08:00:00Z"


def test_sub_second_after_a_tick_belongs_to_that_tick() -> None:
    moment = utc("2026-11-30T08:00:00") + timedelta(microseconds=500_000)

    assert send_window(WEEKLY_BERLIN, moment) == "2026-11-30T08:00:00Z"


def test_one_second_before_a_tick_belongs_to_the_previous_tick() -> None:
    assert send_window(WEEKLY_BERLIN, utc("2026-11-30T07:59:59")) == "2026-11-23T08:00:00Z"


def test_tick_in_local_time_follows_daylight_saving() -> None:
    # The last Monday before and the first Monday after the switch to summer time.
    assert send_window(WEEKLY_BERLIN, utc("2026-03-28T00:00:00")) == "2026-03-23T08:00:00Z"
    assert send_window(WEEKLY_BERLIN, utc("2026-03-31T00:00:00")) == "2026-03-30T07:00:00Z"


def test_aware_and_naive_utc_inputs_agree() -> None:
    naive = datetime(2026, 11, 26, 12, 0, 0)
    aware_utc = naive.replace(tzinfo=UTC)
    aware_berlin = aware_utc.astimezone(ZoneInfo("Europe/Berlin"))

    assert (
        send_window(WEEKLY_BERLIN, naive)
        == send_window(WEEKLY_BERLIN, aware_utc)
        == send_window(WEEKLY_BERLIN, aware_berlin)
        == "2026-11-23T08:00:00Z"
    )


def test_default_time_zone_is_utc() -> None:
    schedule = ScheduleConfig(cron="0 9 * * *")

    assert send_window(schedule, utc("2026-11-26T08:59:59")) == "2026-11-25T09:00:00Z"
    assert send_window(schedule, utc("2026-11-26T09:00:00")) == "2026-11-26T09:00:00Z"


def test_every_window_is_a_fixed_point() -> None:
    """A scheduled run passes its tick time: that must map to the same window."""
    moment = utc("2026-01-01T00:00:00")
    while moment < utc("2026-12-31T00:00:00"):
        window = send_window(WEEKLY_BERLIN, moment)
        tick = datetime.strptime(window, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert tick <= moment
        assert send_window(WEEKLY_BERLIN, tick) == window
        moment += timedelta(hours=13)


DAILY_0230_BERLIN = ScheduleConfig(cron="30 2 * * *", timezone="Europe/Berlin")


def test_windows_never_move_backwards_across_the_autumn_clock_change() -> None:
    moments = [utc("2026-10-24T23:00:00") + timedelta(minutes=15 * i) for i in range(16)]

    windows = [send_window(DAILY_0230_BERLIN, moment) for moment in moments]

    assert windows == sorted(windows)


def test_a_daily_schedule_has_one_window_on_the_autumn_clock_change_day() -> None:
    moments = [utc("2026-10-25T00:30:00") + timedelta(minutes=15 * i) for i in range(12)]

    assert {send_window(DAILY_0230_BERLIN, moment) for moment in moments} == {
        "2026-10-25T00:30:00Z"
    }


@pytest.mark.parametrize(
    "expression", ["0 9 * * 1", "*/15 * * * *", "0 9-17 * * mon-fri", "0 0 1 * *"]
)
def test_valid_cron_expressions(expression: str) -> None:
    assert is_valid_cron(expression)


@pytest.mark.parametrize(
    "expression",
    ["", "bad", "0 9 * *", "0 9 * * 1 2026", "61 * * * *", "0 25 * * *", "@daily", "0 0 0 0 0"],
)
def test_invalid_cron_expressions(expression: str) -> None:
    assert not is_valid_cron(expression)
