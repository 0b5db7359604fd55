"""Mailgun webhook bodies and polled events-API items as canonical events.

Event structure: https://documentation.mailgun.com/docs/mailgun/user-manual/events/
event-structure. An event name not mapped below becomes ``unknown`` with the raw event
kept.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from adapters.providers.mailgun.settings import KIND
from adapters.providers.payloads import domain_of, json_object, mapping, naive_utc, text
from mailers.events import BounceClass, CanonicalEvent, EventType, derive_event_id
from mailers.messages import MessageRef

EventClass = tuple[EventType, BounceClass | None]

EVENT_TYPES: dict[str, EventClass] = {
    "delivered": (EventType.DELIVERED, None),
    "rejected": (EventType.REJECTED, None),
    "opened": (EventType.OPENED, None),
    "clicked": (EventType.CLICKED, None),
    "unsubscribed": (EventType.UNSUBSCRIBED, None),
    "complained": (EventType.COMPLAINED, None),
}
"""Mailgun event name → canonical (type, bounce class), for every event but ``failed``.

``accepted`` (Mailgun queued the message) and ``stored`` (inbound) are deliberately absent:
they are not delivery outcomes and the canonical vocabulary has no word for them, so they
become ``unknown`` with the raw event kept. Event list:
https://documentation.mailgun.com/docs/mailgun/user-manual/events/event-types
"""

FAILED_BY_REASON: dict[str, EventClass] = {
    # "Too old" (delivery-status code 602): Mailgun retried temporary failures for 8 hours
    # and gave up. The address was never shown not to exist: a soft bounce. Historically
    # sent with severity "temporary", now "permanent"; the reason decides either way.
    # https://help.mailgun.com/hc/en-us/articles/28956111811355-Will-Mailgun-retry-my-failed-messages
    "old": (EventType.BOUNCED, BounceClass.SOFT),
    # Dropped without trying because the address is on a suppression list: a bounce list
    # entry is a past hard bounce; unsubscribes and complaints are not bounces.
    # https://documentation.mailgun.com/docs/mailgun/user-manual/tracking-messages/tracking-failures
    "suppress-bounce": (EventType.BOUNCED, BounceClass.HARD),
    "suppress-unsubscribe": (EventType.FAILED, None),
    "suppress-complaint": (EventType.FAILED, None),
}
"""``failed`` events whose ``reason`` decides the canonical type (checked first)."""

FAILED_BY_SEVERITY: dict[str, EventClass] = {
    # Permanent failures are not retried: Mailgun counts them as hard bounces.
    "permanent": (EventType.BOUNCED, BounceClass.HARD),
    # Temporary failures are retried by Mailgun (10 min, 15 min, ... for 8 hours).
    "temporary": (EventType.DEFERRED, None),
}
"""Other ``failed`` events by ``severity``; without one they are ``failed``."""


def parse(payload: bytes, account: str) -> list[CanonicalEvent]:
    """Canonical events from a Mailgun webhook body or one polled events-API item.

    ``event`` and ``timestamp`` are always there; ``id`` is "unique within a day", so the
    event id is ``mailgun:<UTC day>:<id>``, stable across webhook retries and polls of the
    same event. A payload that is not a JSON object, or an event without a numeric
    ``timestamp``, raises ``ValueError``.
    """
    data = json_object(payload)
    event = data.get("event-data", data)
    if not isinstance(event, dict):
        raise ValueError("'event-data' is not an object")
    occurred = _occurred_at(event.get("timestamp"))
    name = event.get("event")
    event_type, bounce_class = classify(event)
    headers = mapping(mapping(event.get("message")).get("headers"))
    message_id = text(headers.get("message-id"))
    if message_id:
        message_id = message_id.strip("<>")
    recipient = text(event.get("recipient"))
    raw_id = event.get("id")
    if isinstance(raw_id, str) and raw_id:
        event_id = f"{KIND}:{occurred:%Y%m%d}:{raw_id}"
    else:
        event_id = derive_event_id(
            KIND, str(name), repr(event.get("timestamp")), recipient or "", message_id or ""
        )
    return [
        CanonicalEvent(
            event_id=event_id,
            event_type=event_type,
            bounce_class=bounce_class,
            occurred_at=occurred,
            provider=KIND,
            provider_account=account,
            provider_message_id=message_id,
            **MessageRef.from_metadata(event.get("user-variables")).fields(),
            recipient=recipient,
            sending_domain=domain_of(headers.get("from")),
            reason=_reason(event, event_type),
            url=text(event.get("url")) if name == "clicked" else None,
            raw_payload=json.dumps(event),
        )
    ]


def classify(event: dict[str, Any]) -> EventClass:
    """The canonical (type, bounce class) of one Mailgun event; unknown if unmapped."""
    name = event.get("event")
    if name == "failed":
        reason, severity = event.get("reason"), event.get("severity")
        if isinstance(reason, str) and reason in FAILED_BY_REASON:
            return FAILED_BY_REASON[reason]
        if isinstance(severity, str) and severity in FAILED_BY_SEVERITY:
            return FAILED_BY_SEVERITY[severity]
        return EventType.FAILED, None
    if isinstance(name, str):
        return EVENT_TYPES.get(name, (EventType.UNKNOWN, None))
    return EventType.UNKNOWN, None


def _occurred_at(value: Any) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("the event has no numeric 'timestamp'")
    try:
        seconds = float(value)
    except ValueError as err:
        raise ValueError(f"the event timestamp {value!r} is not epoch seconds") from err
    return naive_utc(datetime.fromtimestamp(seconds, UTC))


def _reason(event: dict[str, Any], event_type: EventType) -> str | None:
    name = event.get("event")
    if name == "failed":
        status = mapping(event.get("delivery-status"))
        code = status.get("code")
        detail_text = text(status.get("message")) or text(status.get("description"))
        parts = [str(code) if code not in (None, "", 0) else None, detail_text]
        detail = " ".join(p for p in parts if p)
        tags = "/".join(t for t in (text(event.get("severity")), text(event.get("reason"))) if t)
        if detail and tags:
            return f"{detail} ({tags})"
        return detail or tags or "delivery failed"
    if name == "rejected":
        reject = mapping(event.get("reject"))
        parts = [text(reject.get("reason")), text(reject.get("description"))]
        return ": ".join(p for p in parts if p) or "rejected by Mailgun"
    if event_type is EventType.COMPLAINED:
        return "the recipient reported the message as spam (feedback loop)"
    return None
