"""The append-only tables of webhooks out (registered in :data:`mailers.tables.OWNED_TABLES`).

``webhook_messages`` holds each message as sent (body included, so a retry sends the same
bytes); ``webhook_attempts`` every attempt; ``webhook_dead_letters`` the deliveries given
up; ``webhook_marks`` each subscriber's high-water mark in ``mailers.events`` (the
highest ``ingested_at`` it was sent), and ``webhook_sent_events`` which events each
subscriber was sent: a run reads the events after its mark less
:data:`~mailers.webhooks_out.delivery.LATE_COMMIT_WINDOW` that it was not sent, so events
that an ingestion committed after a later-stamped one are still delivered.
"""

from __future__ import annotations

import pyarrow as pa

MESSAGES_TABLE = "webhook_messages"
ATTEMPTS_TABLE = "webhook_attempts"
DEAD_LETTERS_TABLE = "webhook_dead_letters"
MARKS_TABLE = "webhook_marks"
SENT_EVENTS_TABLE = "webhook_sent_events"

_KEY = [
    pa.field("delivery_id", pa.string(), nullable=False),
    pa.field("webhook_id", pa.string(), nullable=False),
    pa.field("workspace", pa.string(), nullable=False),
    pa.field("subscriber", pa.string(), nullable=False),
    pa.field("event_ids", pa.string(), nullable=False),
]

MESSAGES_SCHEMA = pa.schema(
    [
        *_KEY,
        pa.field("event_count", pa.int64(), nullable=False),
        pa.field("body", pa.string(), nullable=False),
        pa.field("replay", pa.bool_(), nullable=False),
        pa.field("created_at", pa.timestamp("us"), nullable=False),
    ]
)
"""One row per delivery; ``event_ids`` is a JSON list."""

ATTEMPTS_SCHEMA = pa.schema(
    [
        *_KEY,
        pa.field("attempt", pa.int64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("latency_ms", pa.float64()),
        pa.field("response_code", pa.int64()),
        pa.field("error", pa.string()),
        pa.field("first_attempted_at", pa.timestamp("us"), nullable=False),
        pa.field("attempted_at", pa.timestamp("us"), nullable=False),
        pa.field("next_attempt_at", pa.timestamp("us")),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)
"""One row per attempt: ``status`` is ``delivered``, ``retrying`` or ``dead_lettered``."""

DEAD_LETTERS_SCHEMA = pa.schema(
    [
        *_KEY,
        pa.field("attempts", pa.int64(), nullable=False),
        pa.field("last_response_code", pa.int64()),
        pa.field("last_error", pa.string()),
        pa.field("first_attempted_at", pa.timestamp("us"), nullable=False),
        pa.field("dead_at", pa.timestamp("us"), nullable=False),
    ]
)

MARKS_SCHEMA = pa.schema(
    [
        pa.field("workspace", pa.string(), nullable=False),
        pa.field("subscriber", pa.string(), nullable=False),
        pa.field("ingested_at", pa.timestamp("us"), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("recorded_at", pa.timestamp("us"), nullable=False),
        pa.field("tracked_from", pa.timestamp("us")),
    ]
)
"""``tracked_from``: ``webhook_sent_events`` holds every event sent to the subscriber with a
later ``ingested_at`` (null in a mark an older Mailers wrote, which tracked nothing)."""

SENT_EVENTS_SCHEMA = pa.schema(
    [
        pa.field("workspace", pa.string(), nullable=False),
        pa.field("subscriber", pa.string(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("ingested_at", pa.timestamp("us"), nullable=False),
        pa.field("delivery_id", pa.string(), nullable=False),
        pa.field("recorded_at", pa.timestamp("us"), nullable=False),
    ]
)
"""One row per event per subscriber, written with the delivery that carries it (not for
replays); ``ingested_at`` is the event's, so a run reads only the recent rows."""

WEBHOOK_TABLES: dict[str, pa.Schema] = {
    MESSAGES_TABLE: MESSAGES_SCHEMA,
    ATTEMPTS_TABLE: ATTEMPTS_SCHEMA,
    DEAD_LETTERS_TABLE: DEAD_LETTERS_SCHEMA,
    MARKS_TABLE: MARKS_SCHEMA,
    SENT_EVENTS_TABLE: SENT_EVENTS_SCHEMA,
}
