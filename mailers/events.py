"""Canonical email events: one vocabulary for every provider's feedback.

Provider adapters map their payloads onto :class:`CanonicalEvent`; anything they cannot
classify becomes ``unknown`` (never an exception), and the raw payload is always kept
verbatim beside the normalized fields so a mapping fix can be replayed later.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import pyarrow as pa

EVENTS_TABLE = "events"


class EventType(StrEnum):
    """The fixed vocabulary of canonical event types."""

    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    REJECTED = "rejected"
    FAILED = "failed"
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    UNKNOWN = "unknown"


class BounceClass(StrEnum):
    """Hard bounces are permanent (suppress the address); soft ones are transient."""

    HARD = "hard"
    SOFT = "soft"


@dataclass(frozen=True, slots=True)
class CanonicalEvent:
    """One provider event, normalized. ``raw_payload`` is the provider's JSON, verbatim."""

    event_id: str
    event_type: EventType
    occurred_at: datetime
    provider: str
    provider_account: str
    raw_payload: str
    provider_message_id: str | None = None
    message_key: str | None = None
    workspace: str | None = None
    stream: str | None = None
    campaign: str | None = None
    recipient: str | None = None
    sending_domain: str | None = None
    bounce_class: BounceClass | None = None
    reason: str | None = None
    url: str | None = None

    def as_row(self) -> dict[str, Any]:
        """The event as a row of :data:`EVENTS_SCHEMA` (less the ingestion columns)."""
        row = asdict(self)
        row["event_type"] = str(self.event_type)
        row["bounce_class"] = str(self.bounce_class) if self.bounce_class else None
        return row


def derive_event_id(provider: str, *parts: str) -> str:
    """A stable event id for providers that send none: a hash of provider and payload parts."""
    digest = hashlib.sha256("\x1f".join((provider, *parts)).encode()).hexdigest()
    return f"{provider}:{digest[:40]}"


EVENTS_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("bounce_class", pa.string()),
        pa.field("occurred_at", pa.timestamp("us"), nullable=False),
        pa.field("provider", pa.string(), nullable=False),
        pa.field("provider_account", pa.string(), nullable=False),
        pa.field("provider_message_id", pa.string()),
        pa.field("message_key", pa.string()),
        pa.field("workspace", pa.string()),
        pa.field("stream", pa.string()),
        pa.field("campaign", pa.string()),
        pa.field("recipient", pa.string()),
        pa.field("sending_domain", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("url", pa.string()),
        pa.field("raw_payload", pa.string(), nullable=False),
        pa.field("source_file", pa.string()),
        pa.field("ingested_at", pa.timestamp("us"), nullable=False),
    ]
)
"""Columns of ``mailers.events``: append-only; ingestion loads each ``event_id`` once, and a
replay appends an event again when a mapping fix changed it (the current row of each id:
:func:`mailers.current_events.current_events_sql`)."""
