"""Resend webhook payloads as canonical events.

Every payload is ``{"type", "created_at", "data"}``: ``created_at`` is when the event was
created, ``data`` the email it is about (``email_id``, the impacted recipients ``to``,
``from``, ``tags`` ...) and a detail object for some types (``bounce``, ``click``,
``failed``, ``suppressed``). Event types: https://resend.com/docs/webhooks/event-types;
each type's page is https://resend.com/docs/webhooks/emails/<type>.

Our metadata comes back in ``data.tags``: an object of name → value in webhooks (the
pages' ``Record<string, string>``), while the API's email records list
``[{name, value}]``; both shapes are read. Resend sends no event id in the body (the
``svix-id`` header is the delivery's), so ids are derived from the fields that identify
an event and stay the same when Resend re-sends it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from adapters.providers.payloads import (
    address,
    compact_json,
    domain_of,
    json_object,
    listed,
    mapping,
    mappings,
    naive_utc,
    text,
    verbatim,
)
from adapters.providers.resend.settings import KIND
from mailers import clock
from mailers.events import BounceClass, CanonicalEvent, EventType, derive_event_id
from mailers.messages import MessageRef

EventClass = tuple[EventType, BounceClass | None]

EVENT_TYPES: dict[str, EventClass] = {
    "email.delivered": (EventType.DELIVERED, None),
    # Resend keeps trying: the message is not lost yet.
    "email.delivery_delayed": (EventType.DEFERRED, None),
    # The class comes from bounce.type: BOUNCE_CLASSES.
    "email.bounced": (EventType.BOUNCED, BounceClass.HARD),
    "email.complained": (EventType.COMPLAINED, None),
    "email.opened": (EventType.OPENED, None),
    "email.clicked": (EventType.CLICKED, None),
    # Resend could not send it at all (e.g. failed.reason "reached_daily_quota").
    "email.failed": (EventType.FAILED, None),
    # Not sent: the recipient is on a suppression list (like SendGrid's "dropped").
    "email.suppressed": (EventType.REJECTED, None),
    # "The API request was successful": it repeats the ledger's accepted, like SendGrid's
    # "processed" and SES's "Send"; kept as unknown with its payload.
    "email.sent": (EventType.UNKNOWN, None),
}
"""Resend ``type`` → canonical (type, bounce class). ``email.scheduled``,
``email.received`` and the ``contact.*``, ``domain.*``, ``suppression.*`` and ``topic.*``
events are no delivery outcome of a message we sent: ``unknown``, raw kept."""

BOUNCE_CLASSES: dict[str, BounceClass] = {
    "Permanent": BounceClass.HARD,
    "Transient": BounceClass.SOFT,
    # The bounced page's prose says "Temporary" where the bounce types page says Transient.
    "Temporary": BounceClass.SOFT,
    # Resend could not tell why: not proof enough to suppress the address.
    "Undetermined": BounceClass.SOFT,
}
"""``bounce.type`` → bounce class (https://resend.com/docs/dashboard/emails/email-bounces).
Absent or other types count as hard: ``email.bounced`` is documented as a permanent
rejection by the recipient's server."""


def parse(payload: bytes, account: str) -> list[CanonicalEvent]:
    """Canonical events from one Resend webhook body: one per impacted recipient.

    A type not mapped above becomes ``unknown`` with the raw payload kept; a payload that
    is not a JSON object raises ``ValueError``.
    """
    envelope = json_object(payload)
    name = text(envelope.get("type")) or ""
    data = mapping(envelope.get("data"))
    event_type, bounce_class = EVENT_TYPES.get(name, (EventType.UNKNOWN, None))
    if name == "email.bounced":
        kind = text(mapping(data.get("bounce")).get("type")) or ""
        bounce_class = BOUNCE_CLASSES.get(kind, BounceClass.HARD)
    when = _when(envelope, data, name)
    email_id = text(data.get("email_id"))
    tags = _tags(data.get("tags"))
    recipients = [address(r) for r in listed(data.get("to"))] or [None]
    raw = verbatim(payload)
    return [
        CanonicalEvent(
            event_id=_event_id(envelope, name, email_id, recipient),
            event_type=event_type,
            bounce_class=bounce_class,
            occurred_at=naive_utc(_timestamp(when) or clock.now()),
            provider=KIND,
            provider_account=account,
            provider_message_id=email_id,
            **MessageRef.from_metadata(tags).fields(),
            recipient=recipient,
            sending_domain=domain_of(data.get("from")),
            reason=_reason(name, data),
            url=text(mapping(data.get("click")).get("link")) if name == "email.clicked" else None,
            raw_payload=raw,
        )
        for recipient in recipients
    ]


def _tags(value: object) -> dict[str, Any]:
    """Tags as a name → value map, from the webhook's object or the API's list."""
    if isinstance(value, dict):
        return value
    return {str(item.get("name")): item.get("value") for item in mappings(value)}


def _when(envelope: Mapping[str, Any], data: Mapping[str, Any], name: str) -> str | None:
    """When it happened: a click's own time, else when the event was created."""
    click_time = text(mapping(data.get("click")).get("timestamp"))
    if name == "email.clicked" and click_time:
        return click_time
    return text(envelope.get("created_at")) or text(data.get("created_at"))


def _timestamp(value: str | None) -> datetime | None:
    """An ISO 8601 time as an aware datetime (naive ones are UTC); None if unreadable."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _event_id(
    envelope: Mapping[str, Any], name: str, email_id: str | None, recipient: str | None
) -> str:
    """The type, email, recipient and creation time (and a click's link and time) when the
    payload is about an email; a hash of the whole payload otherwise."""
    data = mapping(envelope.get("data"))
    created = text(envelope.get("created_at"))
    if email_id and created:
        parts = [name, email_id, recipient or "", created]
        if name == "email.clicked":
            click = mapping(data.get("click"))
            parts += [text(click.get("link")) or "", text(click.get("timestamp")) or ""]
        return derive_event_id(KIND, *parts)
    digest = hashlib.sha256(compact_json(envelope).encode()).hexdigest()
    return derive_event_id(KIND, "payload", digest)


def _reason(name: str, data: Mapping[str, Any]) -> str | None:
    if name == "email.bounced":
        bounce = mapping(data.get("bounce"))
        kind = "/".join(t for t in (text(bounce.get("type")), text(bounce.get("subType"))) if t)
        codes = bounce.get("diagnosticCode")
        diagnostic = "; ".join(str(c) for c in codes) if isinstance(codes, list) else text(codes)
        parts = [text(bounce.get("message")), diagnostic]
        detail = " ".join(p for p in parts if p)
        return (f"{kind}: {detail}" if kind and detail else kind or detail)[:1000] or None
    if name == "email.suppressed":
        suppressed = mapping(data.get("suppressed"))
        parts = [text(suppressed.get(k)) for k in ("type", "reason", "message")]
        return ": ".join(p for p in parts if p)[:1000] or None
    if name == "email.failed":
        return text(mapping(data.get("failed")).get("reason"))
    return None
