"""The JSON bodies subscribers receive, and the ids of the messages that carry them.

One event (``batch_size: 1``) is the Standard Webhooks envelope::

    {"type": "email.delivered", "timestamp": "2026-12-03T09:00:00Z", "data": {...}}

and a batch is one object holding a list of such envelopes::

    {"type": "email.batch", "timestamp": "<when the batch was made>",
     "data": {"count": 2, "events": [{"type": ..., "timestamp": ..., "data": {...}}, ...]}}

``data`` is the canonical event (``mailers.events``) without the provider's raw payload.
A message id is derived from the subscriber and its events, so a retry or a replay of the
same events sends the same ``webhook-id`` and the receiver can dedupe.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

EVENT_FIELDS = (
    "event_id",
    "event_type",
    "occurred_at",
    "provider",
    "provider_account",
    "provider_message_id",
    "message_key",
    "workspace",
    "stream",
    "campaign",
    "recipient",
    "sending_domain",
    "bounce_class",
    "reason",
    "url",
)
"""The event columns a subscriber gets (the provider's raw payload stays in the warehouse)."""

BATCH_TYPE = "email.batch"


def webhook_id(workspace: str, subscriber: str, event_ids: Sequence[str]) -> str:
    """``msg_<hex>``: the same for the same subscriber and events, whoever sends it."""
    text = "\x1f".join((workspace, subscriber, *event_ids))
    return "msg_" + hashlib.sha256(text.encode()).hexdigest()[:32]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def envelope(event: Mapping[str, Any]) -> dict[str, Any]:
    """One event as ``{type, timestamp, data}``; ``event`` is a row of ``mailers.events``."""
    data = {name: event.get(name) for name in EVENT_FIELDS}
    data["occurred_at"] = _iso(event["occurred_at"])
    return {"type": f"email.{event['event_type']}", "timestamp": data["occurred_at"], "data": data}


def body(events: Sequence[Mapping[str, Any]], made_at: datetime, batched: bool) -> bytes:
    """The request body for ``events``: one envelope, or (``batched``) a batch object."""
    if not events:
        raise ValueError("a message needs at least one event")
    if not batched:
        if len(events) != 1:
            raise ValueError("an unbatched message carries exactly one event")
        document = envelope(events[0])
    else:
        document = {
            "type": BATCH_TYPE,
            "timestamp": _iso(made_at),
            "data": {"count": len(events), "events": [envelope(e) for e in events]},
        }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
