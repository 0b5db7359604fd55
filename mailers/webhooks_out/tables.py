"""The append-only tables of webhooks out (registered in :data:`mailers.tables.OWNED_TABLES`).

``webhook_messages`` holds each message as sent (body included, so a retry sends the same
bytes); ``webhook_attempts`` every attempt; ``webhook_dead_letters`` the deliveries given
up; ``webhook_marks`` each subscriber's high-water mark in ``mailers.events`` (by
``ingested_at``, then ``event_id``), so a run reads only events after it.
"""

from __future__ import annotations

import pyarrow as pa

MESSAGES_TABLE = "webhook_messages"
ATTEMPTS_TABLE = "webhook_attempts"
DEAD_LETTERS_TABLE = "webhook_dead_letters"
MARKS_TABLE = "webhook_marks"

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
    ]
)

WEBHOOK_TABLES: dict[str, pa.Schema] = {
    MESSAGES_TABLE: MESSAGES_SCHEMA,
    ATTEMPTS_TABLE: ATTEMPTS_SCHEMA,
    DEAD_LETTERS_TABLE: DEAD_LETTERS_SCHEMA,
    MARKS_TABLE: MARKS_SCHEMA,
}
