"""Time in one place: UTC, timezone-naive, microsecond precision, as warehouses store it."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now in UTC without tzinfo (warehouse ``TIMESTAMP`` columns hold UTC by convention)."""
    return datetime.now(UTC).replace(tzinfo=None)
