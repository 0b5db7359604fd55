"""SES event-publishing records, bare or in their SNS envelope, as canonical events.

Event types and their detail objects:
https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html
"""

from __future__ import annotations

import json
from typing import Any

from adapters.providers.payloads import address, domain_of, listed, mapping, mappings, text
from adapters.providers.ses.settings import KIND
from adapters.providers.ses.sns import timestamp
from mailers.clock import utcnow
from mailers.events import BounceClass, CanonicalEvent, EventType, derive_event_id
from mailers.messages import MESSAGE_KEY_FIELD, MESSAGE_KEY_HEADER, METADATA_FIELDS, MessageRef

EVENT_TYPES: dict[str, tuple[EventType, BounceClass | None]] = {
    "Delivery": (EventType.DELIVERED, None),
    "Bounce": (EventType.BOUNCED, None),  # class from bounce.bounceType: BOUNCE_CLASSES
    "DeliveryDelay": (EventType.DEFERRED, None),
    "Complaint": (EventType.COMPLAINED, None),  # unless NOT_COMPLAINTS
    "Reject": (EventType.REJECTED, None),
    "Rendering Failure": (EventType.FAILED, None),
    "RenderingFailure": (EventType.FAILED, None),
    "Open": (EventType.OPENED, None),
    "Click": (EventType.CLICKED, None),
    "Subscription": (EventType.UNSUBSCRIBED, None),  # only for opt-outs: see _opted_out
}
"""SES ``eventType`` → canonical (type, bounce class). Anything else (``Send``, which only
repeats what ``SendEmail`` answered, and types SES adds later) maps to ``unknown`` with the
record kept (event types: module docstring)."""

BOUNCE_CLASSES: dict[str, BounceClass] = {
    "Permanent": BounceClass.HARD,
    "Transient": BounceClass.SOFT,
    # "SES was unable to determine a specific bounce reason": not proof enough to suppress.
    "Undetermined": BounceClass.SOFT,
}
"""``bounce.bounceType`` → bounce class (bounce types are listed on the contents page)."""

NOT_COMPLAINTS = frozenset({"not-spam"})
"""``complaint.complaintFeedbackType`` values (RFC 5965 ARF) that are no complaint: the
recipient marked the message as *not* spam. They map to ``unknown`` (kept, not suppressing)."""

DETAIL_KEYS = {
    "Bounce": "bounce",
    "Complaint": "complaint",
    "Delivery": "delivery",
    "DeliveryDelay": "deliveryDelay",
    "Send": "send",
    "Reject": "reject",
    "Open": "open",
    "Click": "click",
    "Rendering Failure": "failure",
    "RenderingFailure": "failure",
    "Subscription": "subscription",
}
"""``eventType`` → the key of its detail object (contents page, "Top-level JSON object")."""


def parse(payload: bytes, account: str) -> list[CanonicalEvent]:
    """Canonical events from one landed SES payload: an SNS message (webhook body or SQS
    message body) whose ``Message`` is the SES event record, or the bare record (SQS raw
    message delivery). One event per recipient the record names. SNS subscription
    confirmations carry no email event and give none."""
    data = json.loads(payload)
    if not isinstance(data, dict):
        return [_unknown(account, payload.decode("utf-8", "replace"), None)]
    if "Type" in data and "eventType" not in data and "notificationType" not in data:
        kind = data.get("Type")
        if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
            return []
        message = data.get("Message")
        if kind != "Notification" or not isinstance(message, str):
            return [_unknown(account, json.dumps(data, sort_keys=True), data)]
        try:
            record = json.loads(message)
        except ValueError:
            record = None
        if not isinstance(record, dict):  # e.g. SES's "Successfully validated SNS topic" test
            return [_unknown(account, json.dumps(data, sort_keys=True), data)]
        return _events(record, message, account, data)
    return _events(data, json.dumps(data), account, None)


def _events(
    record: dict[str, Any], raw: str, account: str, envelope: dict[str, Any] | None
) -> list[CanonicalEvent]:
    # Records from a configuration set's event destination say "eventType"; the older
    # identity notifications (same objects) say "notificationType".
    name = str(record.get("eventType") or record.get("notificationType") or "")
    event_type, bounce_class = EVENT_TYPES.get(name, (EventType.UNKNOWN, None))
    mail = mapping(record.get("mail"))
    detail = mapping(record.get(DETAIL_KEYS.get(name, "")))
    if name == "Bounce":
        bounce_class = BOUNCE_CLASSES.get(str(detail.get("bounceType")), BounceClass.SOFT)
    elif name == "Complaint" and text(detail.get("complaintFeedbackType")) in NOT_COMPLAINTS:
        event_type = EventType.UNKNOWN
    elif name == "Subscription" and not _opted_out(detail):
        event_type = EventType.UNKNOWN  # an opt-in or a no-op change is no unsubscribe
    occurred = (
        timestamp(detail.get("timestamp"))
        or timestamp(mail.get("timestamp"))
        or timestamp((envelope or {}).get("Timestamp"))
        or utcnow()
    )
    tags = mapping(mail.get("tags"))
    metadata = {field: _tag(tags, field) for field in METADATA_FIELDS}
    metadata[MESSAGE_KEY_FIELD] = metadata[MESSAGE_KEY_FIELD] or _header(mail, MESSAGE_KEY_HEADER)
    ref = MessageRef.from_metadata(metadata)
    domain = domain_of(mail.get("source")) or _tag(tags, "ses:from-domain")
    message_id = mail.get("messageId")
    anchor = str(message_id or (envelope or {}).get("MessageId") or "")
    events = []
    for recipient, reason in _recipients(name, detail, mail):
        if anchor:
            parts = [anchor, name, str(detail.get("timestamp") or mail.get("timestamp") or "")]
            parts += [recipient or "", str(detail.get("link") or detail.get("feedbackId") or "")]
            event_id = derive_event_id(KIND, *parts)
        else:
            event_id = derive_event_id(KIND, raw, recipient or "")
        events.append(
            CanonicalEvent(
                event_id=event_id,
                event_type=event_type,
                bounce_class=bounce_class if event_type is EventType.BOUNCED else None,
                occurred_at=occurred,
                provider=KIND,
                provider_account=account,
                provider_message_id=str(message_id) if message_id else None,
                **ref.fields(),
                recipient=recipient,
                sending_domain=domain,
                reason=reason,
                url=str(detail["link"]) if name == "Click" and detail.get("link") else None,
                raw_payload=raw,
            )
        )
    return events


def _recipients(
    name: str, detail: dict[str, Any], mail: dict[str, Any]
) -> list[tuple[str | None, str | None]]:
    """(recipient, reason) pairs: the per-recipient lists where SES has them, else the
    message's destination (Mailers sends to one recipient per message)."""
    if name == "Bounce":
        kind = "/".join(str(detail[k]) for k in ("bounceType", "bounceSubType") if detail.get(k))
        return _each(detail.get("bouncedRecipients"), kind, with_status=True)
    if name == "DeliveryDelay":
        return _each(detail.get("delayedRecipients"), detail.get("delayType"), with_status=True)
    if name == "Complaint":
        why = _reason(
            "complaint", detail.get("complaintFeedbackType"), detail.get("complaintSubType")
        )
        return _each(detail.get("complainedRecipients"), why, with_status=False)
    reason = None
    if name == "Reject":
        reason = _reason(detail.get("reason"))
    elif name in ("Rendering Failure", "RenderingFailure"):
        reason = _reason(detail.get("templateName"), detail.get("errorMessage"))
    elif name == "Subscription":
        reason = _reason(detail.get("source"), detail.get("contactList"))
    if name == "Delivery":
        addresses = detail.get("recipients") or mail.get("destination")
    else:
        addresses = mail.get("destination")
    found = [(address(a), reason) for a in listed(addresses)]
    return found or [(None, reason)]


def _each(
    recipients: object, summary: object, *, with_status: bool
) -> list[tuple[str | None, str | None]]:
    """One pair per recipient of a per-recipient list, its reason led by ``summary`` (then
    the recipient's SMTP status and diagnostic, ``with_status``); one pair without a
    recipient when the list names none."""
    found = [
        (
            address(r.get("emailAddress")),
            _reason(summary, r.get("status"), r.get("diagnosticCode"))
            if with_status
            else _reason(summary),
        )
        for r in mappings(recipients)
    ]
    return found or [(None, _reason(summary))]


def _opted_out(subscription: dict[str, Any]) -> bool:
    """Whether a ``Subscription`` record is an opt-out: ``unsubscribeAll`` turned on, or a
    topic whose status became ``OptOut`` (an opt-in must never suppress anyone)."""
    new = mapping(subscription.get("newTopicPreferences"))
    old = mapping(subscription.get("oldTopicPreferences"))
    if new.get("unsubscribeAll") is True and old.get("unsubscribeAll") is not True:
        return True

    def opted_out(prefs: dict[str, Any]) -> set[str]:
        return {
            str(t.get("topicName"))
            for t in mappings(prefs.get("topicSubscriptionStatus"))
            if t.get("subscriptionStatus") == "OptOut"
        }

    return bool(opted_out(new) - opted_out(old))


def _unknown(account: str, raw: str, envelope: dict[str, Any] | None) -> CanonicalEvent:
    sns_id = (envelope or {}).get("MessageId")
    return CanonicalEvent(
        event_id=derive_event_id(KIND, "sns", str(sns_id))
        if sns_id
        else derive_event_id(KIND, raw),
        event_type=EventType.UNKNOWN,
        occurred_at=timestamp((envelope or {}).get("Timestamp")) or utcnow(),
        provider=KIND,
        provider_account=account,
        raw_payload=raw,
    )


def _reason(*parts: object) -> str | None:
    joined = "; ".join(str(p) for p in parts if p)
    return joined[:1000] or None


def _tag(tags: dict[str, Any], name: str) -> str | None:
    """The value of an SES ``mail.tags`` entry (a list of one value)."""
    values = tags.get(name)
    if isinstance(values, list) and values:
        return str(values[0])
    return str(values) if isinstance(values, str) else None


def _header(mail: dict[str, Any], name: str) -> str | None:
    wanted = name.lower()
    for header in mappings(mail.get("headers")):
        if str(header.get("name", "")).lower() == wanted:
            return str(header.get("value", "")).strip() or None
    return None
