"""Warm-up curves: how many messages a new domain, identity or account may send each day.

A curve (:class:`~mailers.policy_config.WarmupCurve`) starts on ``start_date`` (day one) in
its owner's time zone and is either an explicit list of daily volumes or a geometric ramp
(``start``, times ``growth`` each day, up to ``ceiling``). Once the list ends, or the ramp
reaches its ceiling, the owner is warm: the curve no longer limits (other caps still do).
Before day one the curve allows nothing, so configuring a curve that starts next Monday
holds the owner's mail back until then. A curve without a start date starts on the first
day a send runs under it (:mod:`mailers.warmup_starts`).

The same shape can cap one mailbox provider (Gmail, Yahoo, Microsoft) within the curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

from mailers.policy_config import CurveShape, WarmupCurve

FOREVER = 3650
"""How far ahead :func:`next_day_with_room` looks (days) before giving up."""


def shape_cap(shape: CurveShape, day_number: int) -> int | None:
    """Messages allowed on day ``day_number`` (1 is the first day); ``None``: no limit.

    Day numbers below 1 allow nothing.
    """
    if day_number < 1:
        return 0
    if shape.daily is not None:
        return shape.daily[day_number - 1] if day_number <= len(shape.daily) else None
    ramp = shape.ramp
    assert ramp is not None  # the model guarantees one shape
    volume = _ramp_volume(ramp.start, ramp.growth, day_number)
    return None if volume >= ramp.ceiling else math.floor(volume)


def _ramp_volume(start: int, growth: float, day_number: int) -> float:
    # Rounded first: 200 * 1.4 ** 2 is 391.99999999999994 in floats, and day three of the
    # common x1.4 schedule allows 392.
    return round(start * growth ** (day_number - 1), 6)


def full_volume_day(shape: CurveShape) -> int:
    """The first day number on which ``shape`` no longer limits."""
    if shape.daily is not None:
        return len(shape.daily) + 1
    ramp = shape.ramp
    assert ramp is not None
    # The smallest d >= 1 with a volume at the ceiling: the logarithm's estimate, then
    # stepped with the same rounding shape_cap uses, so the two never disagree.
    day = max(1, math.ceil(math.log(ramp.ceiling / ramp.start, ramp.growth)) + 1)
    while day > 1 and _ramp_volume(ramp.start, ramp.growth, day - 1) >= ramp.ceiling:
        day -= 1
    while _ramp_volume(ramp.start, ramp.growth, day) < ramp.ceiling:
        day += 1
    return day


def day_number(curve: WarmupCurve, day: date) -> int:
    """``day``'s number on the curve (1 on ``start_date``; 0 or less before it).

    A curve without a start date has not started: ``day`` would be its first.
    """
    if curve.start_date is None:
        return 1
    return (day - curve.start_date).days + 1


@dataclass(frozen=True)
class CurveDay:
    """What a curve says about one day."""

    day_number: int
    cap: int | None
    """Messages allowed that day; ``None`` once the owner is warm."""
    days_to_full: int
    """Days from this one until the curve no longer limits (0 when already warm)."""


def curve_day(curve: WarmupCurve, day: date, mailbox_provider: str | None = None) -> CurveDay:
    """The curve's cap on ``day``, overall or for one mailbox provider."""
    shape: CurveShape = curve
    if mailbox_provider is not None:
        shape = curve.mailbox_providers[mailbox_provider]
    number = day_number(curve, day)
    return CurveDay(
        day_number=number,
        cap=shape_cap(shape, number),
        days_to_full=max(0, full_volume_day(shape) - number),
    )


def next_day_with_room(
    curve: WarmupCurve, after: date, mailbox_provider: str | None = None
) -> date:
    """The first day after ``after`` on which the curve allows at least one message."""
    for offset in range(1, FOREVER):
        day = after + timedelta(days=offset)
        cap = curve_day(curve, day, mailbox_provider).cap
        if cap is None or cap > 0:
            return day
    raise ValueError(f"the warm-up curve allows nothing in the {FOREVER} days after {after}")
