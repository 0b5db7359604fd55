"""The sandbox's events: which ones a message gets, their landed form, and parsing them.

The rule, by recipient domain (the ``.test`` TLD is reserved by RFC 2606, so these can
never reach a real mailbox):

=========================== ==================================================
``bounce.mailers.test``     ``bounce`` (hard)
``softbounce.mailers.test`` ``deferral``, then ``soft_bounce``
``complaint.mailers.test``  ``delivered``, then ``complaint``
anything else               ``delivered``; then, drawn from a hash of the message key
                            and ``seed``: ``open`` with probability ``open_rate``,
                            ``click`` with ``click_rate`` (clickers are openers), and
                            ``unsubscribe`` with ``unsubscribe_rate`` among openers
=========================== ==================================================

Each event is landed as one JSON line: ``id``, ``event``, ``timestamp`` (ISO 8601,
acceptance plus :data:`EVENT_OFFSETS`), ``message_id``, ``recipient``,
``sending_domain``, ``metadata`` (the message's), ``detail`` and ``url``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from adapters.providers.payloads import json_object, naive_utc, text
from adapters.providers.sandbox.settings import KIND, SandboxSettings
from mailers.events import BounceClass, CanonicalEvent, EventType
from mailers.keys import bucket
from mailers.messages import MessageRef, OutboundMessage

HARD_BOUNCE_DOMAIN = "bounce.mailers.test"
SOFT_BOUNCE_DOMAIN = "softbounce.mailers.test"
COMPLAINT_DOMAIN = "complaint.mailers.test"

EVENT_TYPES: dict[str, tuple[EventType, BounceClass | None]] = {
    "delivered": (EventType.DELIVERED, None),
    "deferral": (EventType.DEFERRED, None),
    "bounce": (EventType.BOUNCED, BounceClass.HARD),
    "soft_bounce": (EventType.BOUNCED, BounceClass.SOFT),
    "complaint": (EventType.COMPLAINED, None),
    "open": (EventType.OPENED, None),
    "click": (EventType.CLICKED, None),
    "unsubscribe": (EventType.UNSUBSCRIBED, None),
}
"""Sandbox event name → canonical (type, bounce class); anything else maps to ``unknown``."""

EVENT_OFFSETS: dict[str, timedelta] = {
    "delivered": timedelta(seconds=1),
    "deferral": timedelta(seconds=1),
    "bounce": timedelta(seconds=2),
    "soft_bounce": timedelta(minutes=5),
    "complaint": timedelta(minutes=10),
    "open": timedelta(minutes=3),
    "click": timedelta(minutes=4),
    "unsubscribe": timedelta(minutes=6),
}
"""How long after acceptance each sandbox event happens (the simulator uses it too)."""

DETAILS = {
    "bounce": "550 5.1.1 sandbox: mailbox does not exist",
    "soft_bounce": "452 4.2.2 sandbox: mailbox full, gave up after retries",
    "deferral": "421 4.7.0 sandbox: try again later",
    "complaint": "sandbox: recipient marked the message as spam",
}
"""The ``detail`` (the canonical event's reason) of the events that have one."""

CLICKED_URL = "https://example.test/landing"


def planned_events(message_key: str, recipient: str, settings: SandboxSettings) -> list[str]:
    """The sandbox event names a message accepted for ``recipient`` will produce, in order.

    Pure, so tests compute the expected marts from the same rule.
    """
    domain = recipient.rsplit("@", 1)[-1].lower()
    if domain == HARD_BOUNCE_DOMAIN:
        return ["bounce"]
    if domain == SOFT_BOUNCE_DOMAIN:
        return ["deferral", "soft_bounce"]
    if domain == COMPLAINT_DOMAIN:
        return ["delivered", "complaint"]
    events = ["delivered"]
    engagement = bucket(message_key, f"{settings.seed}:engage")
    if engagement < settings.open_rate:
        events.append("open")
        if engagement < settings.click_rate:
            events.append("click")
        if bucket(message_key, f"{settings.seed}:unsubscribe") < settings.unsubscribe_rate:
            events.append("unsubscribe")
    return events


def event_payloads(
    message: OutboundMessage, message_id: str, accepted_at: datetime, settings: SandboxSettings
) -> list[dict[str, Any]]:
    """The landed form of every event an accepted message gets, in order."""
    return [
        {
            "id": f"sbx-{hashlib.sha256(f'{message_id}|{name}'.encode()).hexdigest()[:32]}",
            "event": name,
            "timestamp": (accepted_at + EVENT_OFFSETS[name]).isoformat(),
            "message_id": message_id,
            "recipient": message.recipient,
            "sending_domain": message.sending_domain,
            "metadata": message.metadata,
            "detail": DETAILS.get(name),
            "url": CLICKED_URL if name == "click" else None,
        }
        for name in planned_events(message.message_key, message.recipient, settings)
    ]


def parse(payload: bytes, account: str) -> list[CanonicalEvent]:
    """Canonical events from one landed sandbox payload line."""
    data = json_object(payload)
    event_type, bounce_class = EVENT_TYPES.get(data.get("event", ""), (EventType.UNKNOWN, None))
    return [
        CanonicalEvent(
            event_id=str(data["id"]),
            event_type=event_type,
            bounce_class=bounce_class,
            occurred_at=naive_utc(datetime.fromisoformat(data["timestamp"])),
            provider=KIND,
            provider_account=account,
            provider_message_id=text(data.get("message_id")),
            **MessageRef.from_metadata(data.get("metadata")).fields(),
            recipient=text(data.get("recipient")),
            sending_domain=text(data.get("sending_domain")),
            reason=text(data.get("detail")),
            url=text(data.get("url")),
            raw_payload=payload.decode().rstrip("\n"),
        )
    ]
