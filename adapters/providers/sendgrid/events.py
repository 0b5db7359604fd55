"""SendGrid Event Webhook bodies as canonical events.

A body is a JSON array of events; our ``custom_args`` come back as top-level keys of
every event. The per-message provider id is rebuilt as at sending
(:func:`~adapters.providers.sendgrid.sending.provider_message_id`) from the event's
``sg_message_id``, whose first ``.``-separated part is the request's ``X-Message-Id``,
and its message key; the verbatim ``sg_message_id`` stays in ``raw_payload``.
https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from adapters.providers.payloads import naive_utc, text
from adapters.providers.sendgrid.sending import provider_message_id
from adapters.providers.sendgrid.settings import KIND
from mailers.clock import utcnow
from mailers.events import BounceClass, CanonicalEvent, EventType, derive_event_id
from mailers.messages import MessageRef

EVENT_TYPES: dict[str, tuple[EventType, BounceClass | None]] = {
    "delivered": (EventType.DELIVERED, None),
    "deferred": (EventType.DEFERRED, None),
    # A ``bounce`` event's class comes from BOUNCE_TYPES and BOUNCE_CLASSIFICATIONS below.
    "bounce": (EventType.BOUNCED, BounceClass.HARD),
    # SendGrid would not send to this recipient (suppressed, invalid, over quota).
    "dropped": (EventType.REJECTED, None),
    "spamreport": (EventType.COMPLAINED, None),
    "open": (EventType.OPENED, None),
    "click": (EventType.CLICKED, None),
    "unsubscribe": (EventType.UNSUBSCRIBED, None),
    "group_unsubscribe": (EventType.UNSUBSCRIBED, None),
    # No canonical type: ``processed`` repeats the ledger's ``accepted``, and a group
    # resubscribe is not a suppression. Kept as ``unknown`` with their payloads, never lost.
    "processed": (EventType.UNKNOWN, None),
    "group_resubscribe": (EventType.UNKNOWN, None),
}
"""SendGrid ``event`` → canonical (type, bounce class); anything else maps to ``unknown``."""

BOUNCE_TYPES: dict[str, BounceClass] = {
    "bounce": BounceClass.HARD,
    "blocked": BounceClass.SOFT,
}
"""A ``bounce`` event's ``type``: a permanent bounce, or a block (temporary; SendGrid does
not suppress blocked addresses). Absent or unknown types count as hard, as SendGrid's
``bounce`` event is documented as permanent."""

BOUNCE_CLASSIFICATIONS: dict[str, BounceClass] = {
    "Invalid Address": BounceClass.HARD,
    "Technical Failure": BounceClass.SOFT,
    "Content": BounceClass.SOFT,
    "Reputation": BounceClass.SOFT,
    "Frequency or Volume Too High": BounceClass.SOFT,
}
"""``bounce_classification`` overrides ``type`` where it says whose fault it was: a mailbox
that does not exist is hard even when reported as a block, and a rejection of our content,
reputation or volume must not suppress the recipient everywhere. ``Mailbox Unavailable``
and ``Unclassified`` leave the ``type`` to decide.
https://www.twilio.com/docs/sendgrid/ui/analytics-and-reporting/bounce-and-block-classifications
"""

_REASON_FIELDS: dict[str, str] = {
    "bounce": "reason",
    "dropped": "reason",
    "deferred": "response",
}
"""Which field of an event holds the receiving server's (or SendGrid's) explanation."""

_COMPLAINT_REASON = "SendGrid spamreport: the recipient marked the message as spam"


def parse(payload: bytes, account: str) -> list[CanonicalEvent]:
    """Canonical events from one landed Event Webhook body (a JSON array of events).

    One event per element; an element that is not an object becomes an ``unknown`` event of
    its own, so one odd element never costs the others. Non-JSON raises ``ValueError``.
    """
    data = json.loads(payload)
    elements = [data] if isinstance(data, dict) else data
    if not isinstance(elements, list):
        raise ValueError(f"expected a JSON array of events, got {type(data).__name__}")
    return [_event(element, account) for element in elements]


def _event(element: Any, account: str) -> CanonicalEvent:
    raw = json.dumps(element)
    if not isinstance(element, dict):
        return CanonicalEvent(
            event_id=derive_event_id(KIND, raw),
            event_type=EventType.UNKNOWN,
            occurred_at=utcnow(),
            provider=KIND,
            provider_account=account,
            raw_payload=raw,
            reason=f"not an event object: {type(element).__name__}",
        )
    name = str(element.get("event", ""))
    event_type, bounce_class = EVENT_TYPES.get(name, (EventType.UNKNOWN, None))
    if event_type is EventType.BOUNCED:
        bounce_class = _bounce_class(element)
    sg_event_id = element.get("sg_event_id")
    ref = MessageRef.from_metadata(element)
    return CanonicalEvent(
        # sg_event_id is SendGrid's id for deduplication; it survives webhook retries. The
        # hash of an event without one keeps json.dumps's separators: ids already landed
        # must stay the same.
        event_id=(
            f"{KIND}:{sg_event_id}"
            if sg_event_id
            else derive_event_id(KIND, json.dumps(element, sort_keys=True))
        ),
        event_type=event_type,
        bounce_class=bounce_class,
        occurred_at=_occurred_at(element.get("timestamp")),
        provider=KIND,
        provider_account=account,
        provider_message_id=_provider_message_id(element, ref.message_key),
        **ref.fields(),
        recipient=text(element.get("email")),
        reason=_reason(name, element),
        url=text(element.get("url")) if event_type is EventType.CLICKED else None,
        raw_payload=raw,
    )


def _bounce_class(element: Mapping[str, Any]) -> BounceClass:
    classification = BOUNCE_CLASSIFICATIONS.get(str(element.get("bounce_classification")))
    return classification or BOUNCE_TYPES.get(str(element.get("type")), BounceClass.HARD)


def _provider_message_id(element: Mapping[str, Any], key: str | None) -> str | None:
    # sg_message_id is "<X-Message-Id>.<filter>.<...>"; it is missing for asynchronous
    # bounces. https://www.twilio.com/docs/sendgrid/glossary/x-message-id
    sg_message_id = text(element.get("sg_message_id"))
    if sg_message_id and key:
        return provider_message_id(sg_message_id.split(".", 1)[0], key)
    return sg_message_id


def _reason(name: str, element: Mapping[str, Any]) -> str | None:
    if name == "spamreport":
        return _COMPLAINT_REASON
    field = _REASON_FIELDS.get(name)
    reason = text(element.get(field)) if field else None
    classification = text(element.get("bounce_classification"))
    if reason and classification:
        return f"{reason} ({classification})"
    return reason or classification


def _occurred_at(timestamp: Any) -> datetime:
    """Unix seconds (SendGrid sends an integer; some legacy events a string) as naive UTC."""
    try:
        return naive_utc(datetime.fromtimestamp(float(timestamp), UTC))
    except (TypeError, ValueError, OverflowError, OSError):
        return utcnow()
