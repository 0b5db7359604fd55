"""Send windows: one per one-off campaign, one per cron tick for a recurring one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailers.config import CampaignConfig, CampaignRef, ScheduleConfig, StreamKind
from mailers.errors import MailersError, WindowError
from mailers.windows import (
    ONE_OFF_WINDOW,
    WindowRequest,
    is_valid_cron,
    next_tick,
    requested_window,
    send_window,
)

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


def campaign(schedule: ScheduleConfig | None, name: str = "pro_tips") -> CampaignRef:
    config = CampaignConfig(
        stream=StreamKind.LIFECYCLE,
        segment="seg_acme_active_pro",
        template="pro_tips",
        identity="news",
        schedule=schedule,
    )
    return CampaignRef(workspace="acme", name=name, config=config)


PRO_TIPS = campaign(WEEKLY_BERLIN)
LAUNCH = campaign(None, "launch")
# A Wednesday: the current window is Monday 2026-11-30 09:00 Berlin (08:00Z).
NOW = utc("2026-12-02T10:00:00")
CURRENT = "2026-11-30T08:00:00Z"


@pytest.mark.parametrize(
    "spelling",
    [
        "2026-11-30T08:00:00Z",
        "2026-11-30T08:00:00",
        "2026-11-30T08:00:00+00:00",
        "2026-11-30T09:00:00+01:00",
        "2026-11-30T03:00:00-05:00",
        "2026-11-30T08:00:00.000Z",
        "2026-11-30T08:00:00.000000+00:00",
        "2026-11-30 08:00:00Z",
        "2026-11-30T08:00Z",
        "  2026-11-30T08:00:00Z\n",
    ],
)
def test_every_spelling_of_a_tick_is_the_one_canonical_window(spelling: str) -> None:
    request = requested_window(PRO_TIPS, spelling, NOW)

    assert request == WindowRequest("acme.pro_tips", CURRENT, CURRENT)
    assert not request.is_backfill


def test_a_one_off_campaign_has_only_once() -> None:
    assert requested_window(LAUNCH, "once", NOW) == WindowRequest("acme.launch", "once", "once")


@pytest.mark.parametrize(
    "value", ["2026-11-30T08:00:00Z", "0 9 * * 1", "yesterday", "", "ONCE", "once-2"]
)
def test_a_one_off_campaign_refuses_any_other_window(value: str) -> None:
    with pytest.raises(WindowError) as refused:
        requested_window(LAUNCH, value, NOW)

    message = str(refused.value)
    assert "acme.launch" in message
    assert repr(value) in message
    assert "only send window is 'once'" in message


def test_a_time_that_is_not_a_tick_is_refused_naming_the_ticks_around_it() -> None:
    with pytest.raises(WindowError) as refused:
        requested_window(PRO_TIPS, "2026-11-30T08:30:00Z", NOW)

    message = str(refused.value)
    assert "acme.pro_tips" in message
    assert "'2026-11-30T08:30:00Z'" in message
    assert "'0 9 * * 1' (Europe/Berlin)" in message
    assert "nearest ticks are 2026-11-30T08:00:00Z and 2026-12-07T08:00:00Z (not begun yet)" in (
        message
    )


def test_a_fraction_of_a_second_off_a_tick_is_not_that_tick() -> None:
    with pytest.raises(WindowError, match="nearest ticks are 2026-11-30T08:00:00Z and"):
        requested_window(PRO_TIPS, "2026-11-30T08:00:00.5Z", NOW)


def test_the_wall_clock_time_without_its_offset_is_read_as_utc_and_refused() -> None:
    """09:00 is the tick in Berlin; written without an offset it means 09:00Z, not a tick."""
    with pytest.raises(WindowError, match="'2026-11-30T09:00:00' is not a tick"):
        requested_window(PRO_TIPS, "2026-11-30T09:00:00", NOW)


@pytest.mark.parametrize(
    "value",
    ["yesterday", "once", "0 9 * * 1", "", "2026-11-30", "1764489600", "2026-W49-1T08:00:00"],
)
def test_a_value_that_is_no_instant_is_refused_naming_the_current_ticks(value: str) -> None:
    with pytest.raises(WindowError) as refused:
        requested_window(PRO_TIPS, value, NOW)

    message = str(refused.value)
    assert "acme.pro_tips" in message
    assert repr(value) in message
    assert "YYYY-MM-DDTHH:MM:SSZ" in message
    assert f"nearest ticks are {CURRENT} and 2026-12-07T08:00:00Z (not begun yet)" in message


def test_once_for_a_recurring_campaign_says_it_is_for_one_off_campaigns() -> None:
    with pytest.raises(WindowError, match="window of one-off campaigns only"):
        requested_window(PRO_TIPS, "once", NOW)


def test_a_future_tick_is_refused_naming_the_current_window() -> None:
    with pytest.raises(WindowError) as refused:
        requested_window(PRO_TIPS, "2026-12-07T08:00:00Z", NOW)

    message = str(refused.value)
    assert "acme.pro_tips" in message
    assert "2026-12-07T08:00:00Z has not begun yet" in message
    assert f"the current window is {CURRENT}" in message


def test_a_future_tick_in_another_spelling_is_named_as_given() -> None:
    with pytest.raises(
        WindowError,
        match=r"'2026-12-07T09:00:00\+01:00' \(2026-12-07T08:00:00Z\) has not begun yet",
    ):
        requested_window(PRO_TIPS, "2026-12-07T09:00:00+01:00", NOW)


def test_a_past_tick_is_a_backfill_that_needs_the_flag() -> None:
    request = requested_window(PRO_TIPS, "2026-11-23T09:00:00+01:00", NOW)

    assert request == WindowRequest("acme.pro_tips", "2026-11-23T08:00:00Z", CURRENT)
    assert request.is_backfill
    with pytest.raises(WindowError) as refused:
        request.authorize(backfill=False, how="add the flag --backfill")
    message = str(refused.value)
    assert "acme.pro_tips" in message
    assert f"2026-11-23T08:00:00Z is not the current one ({CURRENT})" in message
    assert message.endswith("add the flag --backfill")
    request.authorize(backfill=True, how="unused")


def test_the_current_window_needs_no_flag() -> None:
    requested_window(PRO_TIPS, CURRENT, NOW).authorize(backfill=False, how="unused")
    requested_window(LAUNCH, "once", NOW).authorize(backfill=False, how="unused")


def test_the_current_window_starts_exactly_on_its_tick() -> None:
    on_tick = utc("2026-11-30T08:00:00")
    assert requested_window(PRO_TIPS, CURRENT, on_tick).current == CURRENT
    with pytest.raises(WindowError, match="has not begun yet"):
        requested_window(PRO_TIPS, CURRENT, on_tick - timedelta(seconds=1))


def test_window_errors_are_mailers_errors() -> None:
    assert issubclass(WindowError, MailersError)


def test_next_tick_is_strictly_after() -> None:
    assert next_tick(WEEKLY_BERLIN, utc("2026-11-30T08:00:00")) == "2026-12-07T08:00:00Z"
    assert next_tick(WEEKLY_BERLIN, utc("2026-11-30T07:59:59")) == "2026-11-30T08:00:00Z"
    # Across the switch to summer time the next Monday's 09:00 is 07:00Z.
    assert next_tick(WEEKLY_BERLIN, utc("2026-03-24T00:00:00")) == "2026-03-30T07:00:00Z"


HOURLY_BERLIN = ScheduleConfig(cron="0 * * * *", timezone="Europe/Berlin")


@pytest.mark.parametrize("schedule", [DAILY_0230_BERLIN, HOURLY_BERLIN, WEEKLY_BERLIN])
@pytest.mark.parametrize("start", ["2026-03-28T12:00:00", "2026-10-24T12:00:00"])
def test_ticks_accepted_are_exactly_the_windows_across_clock_changes(
    schedule: ScheduleConfig, start: str
) -> None:
    """Every window is accepted, next_tick walks them one by one, and nothing else passes."""
    ref = campaign(schedule)
    moment, end = utc(start), utc(start) + timedelta(days=2)
    windows = set()
    while moment < end:
        windows.add(send_window(schedule, moment))
        moment += timedelta(minutes=15)
    now = end + timedelta(days=30)
    walked, tick = [], min(windows)
    while tick <= max(windows):
        walked.append(tick)
        tick = next_tick(schedule, utc(tick.removesuffix("Z")))
    assert walked == sorted(windows)
    for window in windows:
        assert requested_window(ref, window, now).window == window
    moment = utc(start)
    while moment < end:
        spelled = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        if spelled not in windows:
            with pytest.raises(WindowError):
                requested_window(ref, spelled, now)
        moment += timedelta(minutes=15)


def test_the_repeated_autumn_hour_is_not_a_second_tick() -> None:
    ref = campaign(DAILY_0230_BERLIN)
    now = utc("2026-11-01T00:00:00")
    # 02:30 Berlin happens at 00:30Z (summer time), then again at 01:30Z (winter time).
    assert requested_window(ref, "2026-10-25T02:30:00+02:00", now).window == (
        "2026-10-25T00:30:00Z"
    )
    with pytest.raises(WindowError, match="nearest ticks are 2026-10-25T00:30:00Z and "):
        requested_window(ref, "2026-10-25T02:30:00+01:00", now)
