"""Postmark webhook records and polled bounces as canonical events.

Each record type has its own webhook page (cited per table entry); a record or bounce
type not mapped below becomes ``unknown`` with the raw payload kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adapters.providers.payloads import (
    compact_json,
    domain_of,
    json_object,
    mapping,
    naive_utc,
    verbatim,
)
from adapters.providers.payloads import text as _text
from adapters.providers.postmark.settings import KIND
from mailers import clock
from mailers.events import BounceClass, CanonicalEvent, EventType, derive_event_id
from mailers.messages import DOMAIN_FIELD, MessageRef

POSTMARK_TIME_ZONE = "America/New_York"
"""Postmark's date filters (``fromdate``/``todate``) are in US Eastern time (bounce API)."""

EventClass = tuple[EventType, BounceClass | None]

RECORD_TYPES: dict[str, EventClass] = {
    # https://postmarkapp.com/developer/webhooks/delivery-webhook
    "Delivery": (EventType.DELIVERED, None),
    # https://postmarkapp.com/developer/webhooks/spam-complaint-webhook
    "SpamComplaint": (EventType.COMPLAINED, None),
    # https://postmarkapp.com/developer/webhooks/open-tracking-webhook
    "Open": (EventType.OPENED, None),
    # https://postmarkapp.com/developer/webhooks/click-webhook
    "Click": (EventType.CLICKED, None),
}
"""Postmark ``RecordType`` → canonical class, for record types without a sub-type.
``Bounce`` is classified by :data:`BOUNCE_TYPES` and ``SubscriptionChange`` by
:data:`SUBSCRIPTION_CHANGES`; any other record type is ``unknown``."""

BOUNCE_TYPES: dict[str, EventClass] = {
    # Bounce types: https://postmarkapp.com/developer/api/bounce-api#bounce-types
    # Permanent: the address does not exist or is not an address → suppress it.
    "HardBounce": (EventType.BOUNCED, BounceClass.HARD),
    "BadEmailAddress": (EventType.BOUNCED, BounceClass.HARD),
    "ManuallyDeactivated": (EventType.BOUNCED, BounceClass.HARD),
    # Temporary or sender-side failures: counted as bounces, the address is kept.
    "SoftBounce": (EventType.BOUNCED, BounceClass.SOFT),
    "DnsError": (EventType.BOUNCED, BounceClass.SOFT),
    "SpamNotification": (EventType.BOUNCED, BounceClass.SOFT),
    "Blocked": (EventType.BOUNCED, BounceClass.SOFT),
    "DMARCPolicy": (EventType.BOUNCED, BounceClass.SOFT),
    "Unknown": (EventType.BOUNCED, BounceClass.SOFT),
    # "Message delayed": Postmark keeps retrying, the message is not lost yet.
    "Transient": (EventType.DEFERRED, None),
    # The bounces API lists spam complaints as bounces of this type.
    "SpamComplaint": (EventType.COMPLAINED, None),
    # An "unsubscribe or remove request" reply from the recipient.
    "Unsubscribe": (EventType.UNSUBSCRIBED, None),
    # Never handed to the recipient's server at all.
    "SMTPApiError": (EventType.FAILED, None),
    "TemplateRenderingFailed": (EventType.FAILED, None),
    "Unconfirmed": (EventType.FAILED, None),
    # AutoResponder, AddressChange, Subscribe, OpenRelayTest, VirusNotification,
    # ChallengeVerification, InboundError: not a delivery outcome → unknown, raw kept.
}
"""Postmark bounce ``Type`` → canonical class (for ``RecordType: Bounce``)."""

SUBSCRIPTION_CHANGES: dict[str, EventClass] = {
    # https://postmarkapp.com/developer/webhooks/subscription-change-webhook
    # SuppressionReason of a deactivation (SuppressSending true). Broadcast streams get
    # no SpamComplaint webhook: their complaints arrive only as this record.
    "ManualSuppression": (EventType.UNSUBSCRIBED, None),
    "SpamComplaint": (EventType.COMPLAINED, None),
    "HardBounce": (EventType.BOUNCED, BounceClass.HARD),
}
"""``SuppressionReason`` of a ``SubscriptionChange`` with ``SuppressSending: true`` →
canonical class. A reactivation (``SuppressSending: false``) is ``unknown``, raw kept."""

TIMESTAMP_FIELDS: dict[str, str] = {
    "Delivery": "DeliveredAt",
    "Bounce": "BouncedAt",
    "SpamComplaint": "BouncedAt",
    "Open": "ReceivedAt",
    "Click": "ReceivedAt",
    "SubscriptionChange": "ChangedAt",
}
"""Which field holds when the event happened, per record type (each webhook page)."""


def _record_type(data: Mapping[str, Any]) -> str:
    record = data.get("RecordType")
    if isinstance(record, str) and record:
        return record
    # Older bounce hooks and bounce API items may lack RecordType (bounce webhook page).
    if "BouncedAt" in data and "Type" in data:
        return "Bounce"
    return ""


def classify(data: Mapping[str, Any]) -> EventClass:
    """The canonical (type, bounce class) of one Postmark record; unknown if unmapped."""
    record = _record_type(data)
    if record == "Bounce":
        return BOUNCE_TYPES.get(str(data.get("Type") or ""), (EventType.UNKNOWN, None))
    if record == "SubscriptionChange":
        if data.get("SuppressSending") is not True:
            return (EventType.UNKNOWN, None)
        reason = str(data.get("SuppressionReason") or "")
        return SUBSCRIPTION_CHANGES.get(reason, (EventType.UNKNOWN, None))
    return RECORD_TYPES.get(record, (EventType.UNKNOWN, None))


def eastern() -> timezone | ZoneInfo:
    """US Eastern time; without a time zone database, EST (UTC-5) all year round.

    EST is never later than Eastern time, so a ``fromdate`` computed with it starts at or
    before the intended moment: polling may re-read, never skip (re-reads are filtered).
    """
    try:
        return ZoneInfo(POSTMARK_TIME_ZONE)
    except ZoneInfoNotFoundError:
        return timezone(timedelta(hours=-5))


def parse_timestamp(value: object) -> datetime:
    """An ISO 8601 Postmark timestamp as an aware datetime (naive ones are US Eastern)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected an ISO 8601 timestamp, got {value!r}")
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=eastern())


def _event_id(data: Mapping[str, Any], record: str, message_id: str, when: str) -> str:
    """Bounce ID when there is one (the same in webhooks and the bounces API), else a hash
    of the fields that identify the record (stable across Postmark's retries)."""
    bounce_id = data.get("ID")
    if record in ("Bounce", "SpamComplaint") and isinstance(bounce_id, int | str) and bounce_id:
        return f"{KIND}:bounce:{bounce_id}"
    recipient = str(data.get("Recipient") or data.get("Email") or "")
    if record in TIMESTAMP_FIELDS and when:
        parts = [record, message_id, recipient, when]
        if record == "Click":
            parts.append(str(data.get("OriginalLink") or ""))
        if record == "SubscriptionChange":
            parts.append(str(data.get("SuppressSending")))
        return derive_event_id(KIND, *parts)
    canonical = compact_json(data)
    return derive_event_id(KIND, "record", hashlib.sha256(canonical.encode()).hexdigest())


def _reason(data: Mapping[str, Any], record: str) -> str | None:
    if record in ("Bounce", "SpamComplaint"):
        parts = [str(data.get(k) or "").strip() for k in ("Name", "Details")]
        text = ": ".join(p for p in parts if p) or str(data.get("Description") or "")
        return text[:1000] or None
    if record == "SubscriptionChange":
        reason = data.get("SuppressionReason")
        origin = data.get("Origin")
        if reason or origin:
            return f"{reason or 'reactivated'} (origin: {origin or 'unknown'})"
    return None


def parse(payload: bytes, account: str) -> list[CanonicalEvent]:
    """Canonical events from one landed Postmark payload (a webhook body or a polled bounce).

    Unmapped record or bounce types become ``unknown`` with the raw payload kept; a
    payload that is not a JSON object raises ``ValueError``.
    """
    data = json_object(payload)
    record = _record_type(data)
    event_type, bounce_class = classify(data)
    field = TIMESTAMP_FIELDS.get(record)
    raw_when = data.get(field) if field else None
    if raw_when is None and event_type is EventType.UNKNOWN:
        raw_when = next((data[f] for f in TIMESTAMP_FIELDS.values() if data.get(f)), None)
    if raw_when is None and event_type is EventType.UNKNOWN:
        occurred = clock.now()  # nothing says when; the id stays stable regardless
    else:
        occurred = parse_timestamp(raw_when)
    metadata = mapping(data.get("Metadata"))
    message_id = data.get("MessageID") or data.get("MessageId")  # Delivery uses both spellings
    recipient = data.get("Recipient") or data.get("Email")

    return [
        CanonicalEvent(
            event_id=_event_id(data, record, str(message_id or ""), str(raw_when or "")),
            event_type=event_type,
            bounce_class=bounce_class,
            occurred_at=naive_utc(occurred),
            provider=KIND,
            provider_account=account,
            provider_message_id=str(message_id) if message_id else None,
            **MessageRef.from_metadata(metadata).fields(),
            recipient=str(recipient) if recipient else None,
            sending_domain=_text(metadata.get(DOMAIN_FIELD)) or domain_of(data.get("From")),
            reason=_reason(data, record),
            url=str(data["OriginalLink"])
            if record == "Click" and data.get("OriginalLink")
            else None,
            raw_payload=verbatim(payload),
        )
    ]
