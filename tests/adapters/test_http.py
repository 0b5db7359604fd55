"""HTTP plumbing shared by the HTTP API providers: what a provider's answer tells us."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from adapters.providers.http import retry_after_seconds
from mailers import clock


@pytest.mark.parametrize(("value", "seconds"), [("2", 2.0), ("0.5", 0.5), ("-3", 0.0)])
def test_retry_after_in_seconds(value: str, seconds: float) -> None:
    assert retry_after_seconds(value) == seconds


def test_retry_after_as_an_http_date_counts_from_mailers_clock(
    fixed_clock: clock.FixedClock,
) -> None:
    fixed_clock.set(datetime(2031, 12, 31, 23, 59, 30, tzinfo=UTC))

    later = format_datetime(datetime(2032, 1, 1, 0, 1, 0, tzinfo=UTC), usegmt=True)
    earlier = format_datetime(datetime(2031, 12, 31, 23, 0, 0, tzinfo=UTC), usegmt=True)

    assert retry_after_seconds(later) == 90.0
    assert retry_after_seconds(earlier) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "Mon, 99 Foo 2031"])
def test_an_unreadable_retry_after_is_none(value: str | None) -> None:
    assert retry_after_seconds(value) is None
