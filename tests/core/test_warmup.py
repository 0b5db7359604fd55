"""Warm-up curve arithmetic: explicit lists, geometric ramps, start dates, mailbox providers."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from mailers.policy_config import CurveShape, WarmupCurve
from mailers.warmup import (
    FOREVER,
    curve_day,
    day_number,
    full_volume_day,
    next_day_with_room,
    shape_cap,
)

MONDAY = date(2026, 12, 7)


def ramp(start: int, growth: float, ceiling: int, **more: object) -> WarmupCurve:
    return WarmupCurve.model_validate(
        {"ramp": {"start": start, "growth": growth, "ceiling": ceiling}, **more}
    )


def test_an_explicit_list_limits_each_day_then_stops_limiting() -> None:
    shape = CurveShape(daily=[50, 100, 0, 400])
    assert [shape_cap(shape, d) for d in range(0, 7)] == [0, 50, 100, 0, 400, None, None]
    assert full_volume_day(shape) == 5


def test_the_common_x1_4_ramp_rounds_each_day_and_is_warm_at_its_ceiling() -> None:
    shape = ramp(200, 1.4, 20_000)
    caps = [shape_cap(shape, d) for d in range(1, 17)]
    assert caps[:5] == [200, 280, 392, 548, 768]  # 200 * 1.4**2 is 391.99... in floats
    assert caps[13] == 15_874  # day 14, the last under the ceiling
    assert caps[14:] == [None, None]
    assert full_volume_day(shape) == 15


@pytest.mark.parametrize(
    ("start", "growth", "ceiling", "full"),
    [(100, 2, 400, 3), (100, 2, 401, 4), (5, 1.5, 5, 1), (1, 1.1, 100, 50), (30, 2, 500, 6)],
)
def test_full_volume_day_is_the_first_day_the_ramp_stops_limiting(
    start: int, growth: float, ceiling: int, full: int
) -> None:
    shape = ramp(start, growth, ceiling)
    assert full_volume_day(shape) == full
    assert shape_cap(shape, full) is None
    assert full == 1 or shape_cap(shape, full - 1) is not None


def test_days_count_from_the_start_date_and_nothing_goes_before_it() -> None:
    curve = ramp(100, 2, 1000, start_date=MONDAY)
    assert day_number(curve, date(2026, 12, 5)) == -1
    before = curve_day(curve, date(2026, 12, 5))
    # 5 December to 11 December, day 5, the first at full volume.
    assert (before.cap, before.days_to_full) == (0, 6)
    assert [curve_day(curve, date(2026, 12, d)).cap for d in range(7, 13)] == [
        100,
        200,
        400,
        800,
        None,
        None,
    ]
    assert curve_day(curve, date(2026, 12, 11)).days_to_full == 0


def test_a_curve_without_a_start_date_is_on_its_first_day() -> None:
    curve = ramp(100, 2, 1000)
    assert day_number(curve, MONDAY) == 1
    assert curve_day(curve, MONDAY).cap == 100


def test_mailbox_providers_follow_their_own_shape_on_the_curve_s_days() -> None:
    curve = WarmupCurve.model_validate(
        {
            "daily": [1000, 2000],
            "start_date": MONDAY,
            "mailbox_providers": {
                "gmail": {"daily": [100, 200, 300]},
                "yahoo": {"ramp": {"start": 50, "growth": 3, "ceiling": 400}},
            },
        }
    )
    tuesday = date(2026, 12, 8)
    assert curve_day(curve, tuesday).cap == 2000
    assert curve_day(curve, tuesday, "gmail").cap == 200
    assert curve_day(curve, tuesday, "gmail").days_to_full == 2
    assert curve_day(curve, tuesday, "yahoo").cap == 150
    assert curve_day(curve, date(2026, 12, 9), "yahoo").cap is None  # 450 reaches 400
    assert curve_day(curve, date(2026, 12, 9)).cap is None  # the list ended: warm overall
    with pytest.raises(KeyError):
        curve_day(curve, tuesday, "microsoft")


def test_next_day_with_room_skips_days_that_allow_nothing() -> None:
    curve = WarmupCurve.model_validate({"daily": [10, 0, 0, 5], "start_date": MONDAY})
    assert next_day_with_room(curve, MONDAY) == date(2026, 12, 10)
    assert next_day_with_room(curve, date(2026, 12, 1)) == MONDAY  # nothing before day one
    assert next_day_with_room(curve, date(2026, 12, 10)) == date(2026, 12, 11)  # warm after


def test_next_day_with_room_gives_up_on_a_curve_that_never_allows_one() -> None:
    closed = WarmupCurve.model_validate(
        {"daily": [0], "mailbox_providers": {"gmail": {"daily": [0] * (FOREVER + 5)}}}
    )
    with pytest.raises(ValueError, match="allows nothing in the 3650 days after"):
        next_day_with_room(closed, MONDAY, "gmail")


@pytest.mark.parametrize(
    ("curve", "said"),
    [
        ({"daily": [1], "ramp": {"start": 1, "growth": 2, "ceiling": 2}}, "exactly one of"),
        ({}, "exactly one of"),
        ({"ramp": {"start": 10, "growth": 2, "ceiling": 5}}, "ceiling must be at least start"),
        ({"ramp": {"start": 10, "growth": 1, "ceiling": 50}}, "greater than 1"),
        ({"daily": []}, "at least 1 item"),
    ],
)
def test_a_malformed_curve_is_refused(curve: dict[str, object], said: str) -> None:
    with pytest.raises(ValidationError, match=said):
        WarmupCurve.model_validate(curve)
