"""Postmark's documented API subset on the simulator: batch send, bounces and messages APIs,
webhooks.

* ``POST /email/batch``: ``X-Postmark-Server-Token`` auth (401 + ``ErrorCode`` 10 when
  wrong), a JSON array of at most 500 messages (422 ``ErrorCode`` 410 above that; 422
  ``ErrorCode`` 402 for a body that is not valid JSON, including strings holding unpaired
  surrogates; 413 above 50 MB), one result per message in order: ``ErrorCode`` 0 with a
  ``MessageID``, 300 for a message missing ``From``/``To``/body, 406 "inactive recipient"
  for recipients :func:`adapters.simulator.outcomes.refuses`.
  https://postmarkapp.com/developer/user-guide/send-email-with-api/batch-emails
* A quota set with :meth:`Simulator.limit` is charged one message per batch entry; over
  it, ``429`` "Rate limit exceeded" and nothing is sent.
* ``GET /bounces``: ``X-Postmark-Server-Token`` auth as above, ``count`` (≤ 500) and
  ``offset`` required, ``count + offset`` ≤ 10,000,
  filters ``fromdate``/``todate`` (US Eastern, inclusive), ``type``, ``messagestream``
  (default ``outbound``); newest first; ``{"TotalCount", "Bounces"}``. No ``Metadata``.
  https://postmarkapp.com/developer/api/bounce-api
* ``GET /bounces/{bounceid}``: one bounce record; 422 for an unknown id.
* ``GET /messages/outbound``: ``count``/``offset`` as for bounces, filters ``recipient``
  and ``metadata_<key>``; newest first. https://postmarkapp.com/developer/api/messages-api
* ``GET /messages/outbound/{messageid}/details``: the message with its ``MessageEvents``
  (``Delivered``, ``Transient``, ``Bounced`` with its ``BounceID``, ``Opened``,
  ``LinkClicked``, ``SubscriptionChanged``), each ``ReceivedAt`` in US Eastern time with
  its offset where the webhook writes UTC with ``Z``, and only those that happened by now
  (Mailers' clock); 422 ``ErrorCode`` 701 for an unknown message id. A spam complaint is
  listed as ``Bounced``: Postmark keeps complaints as bounces of type ``SpamComplaint``.
  https://postmarkapp.com/developer/api/messages-api#outbound-message-details
* ``fromdate``/``todate`` without an offset are US Eastern wall times. Postmark does not
  say how it reads one of the hour repeated when daylight saving time ends; the
  simulator reads it as standard time (the later instant), the reading under which a
  naively computed ``fromdate`` skips an hour, so a client cannot depend on it.
* Every accepted message gets its outcomes (:func:`adapters.simulator.outcomes.outcomes`)
  as Postmark webhook records in ``sim.store["postmark"]["events"]``; bounce-type ones
  also become bounce API records.

State lives in ``sim.store["postmark"]``: ``messages`` (recipient, metadata and headers
received, message id, accepted time, ...), ``events`` (webhook bodies) and ``bounces``.
"""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from adapters.simulator.outcomes import outcomes, refuses
from adapters.simulator.server import Request, Response, Simulator
from mailers import clock
from mailers.messages import MESSAGE_KEY_FIELD, MessageRef
from mailers.webhooks import WebhookRequest

PROVIDER = "postmark"
MAX_BATCH = 500
MAX_BATCH_BYTES = 50 * 1024 * 1024
BOUNCES_LIMIT = 10_000
SERVER_ID = 23
EASTERN = ZoneInfo("America/New_York")

_BOUNCES: dict[str, tuple[str, int, str, str]] = {
    # outcome → (Type, TypeCode, Name, Details), names from the bounce types table
    "bounce": ("HardBounce", 1, "Hard bounce", "smtp;550 5.1.1 The email account does not exist"),
    "soft_bounce": ("SoftBounce", 4096, "Soft bounce", "smtp;452 4.2.2 Mailbox full"),
    "deferral": ("Transient", 2, "Message delayed", "smtp;421 4.7.0 Try again later"),
    "complaint": ("SpamComplaint", 100001, "Spam complaint", "Marked as spam by the recipient"),
}
_DESCRIPTIONS = {
    "HardBounce": "The server was unable to deliver your message (ex: unknown user, "
    "mailbox not found).",
    "SoftBounce": "Unable to temporarily deliver this email.",
    "Transient": "The server could not temporarily deliver your message (ex: Message is "
    "delayed due to network troubles).",
    "SpamComplaint": "The subscriber explicitly marked this email as spam.",
}
_CLIENT = {"Name": "Chrome 35.0.1916.153", "Company": "Google", "Family": "Chrome"}
_OS = {"Name": "OS X 10.7 Lion", "Company": "Apple Computer, Inc.", "Family": "OS X 10"}
_GEO = {"CountryISOCode": "RS", "Country": "Serbia", "City": "Novi Sad", "IP": "188.2.95.4"}
_USER_AGENT = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_7_5) AppleWebKit/537.36"
CLICK_URL = "https://example.test/landing"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, code: int, message: str) -> Response:
    return Response.json({"ErrorCode": code, "Message": message}, status)


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    return False


def _compatible(item: Any) -> bool:
    """Whether one batch entry has the message schema's shapes (strings, a Metadata object
    of scalars, Headers as a list of Name/Value objects)."""
    if not isinstance(item, dict):
        return False
    metadata = item.get("Metadata") or {}
    headers = item.get("Headers") or []
    return (
        isinstance(metadata, dict)
        and all(isinstance(v, str | int | float | bool) for v in metadata.values())
        and isinstance(headers, list)
        and all(
            isinstance(h, dict) and isinstance(h.get("Name"), str) and "Value" in h for h in headers
        )
        and all(isinstance(item.get(k) or "", str) for k in ("From", "To", "Subject"))
    )


def webhook_record(
    outcome: str,
    *,
    message_id: str,
    recipient: str,
    metadata: Mapping[str, str],
    occurred_at: datetime,
    bounce_id: int,
    message_stream: str = "outbound",
    tag: str | None = None,
    sender: str = "sender@example.com",
    subject: str = "",
) -> dict[str, Any]:
    """The Postmark webhook record for one sandbox outcome of one message.

    Field sets follow each webhook's documentation page (delivery, bounce, spam complaint,
    open tracking, click, subscription change).
    """
    common = {"MessageStream": message_stream, "Tag": tag or "", "Metadata": dict(metadata)}
    when = _iso(occurred_at)
    if outcome == "delivered":
        return {
            "RecordType": "Delivery",
            "ServerID": SERVER_ID,
            "MessageID": message_id,
            "Recipient": recipient,
            "DeliveredAt": when,
            "Details": "Test delivery webhook details",
            **common,
        }
    if outcome in _BOUNCES:
        kind, code, name, details = _BOUNCES[outcome]
        return {
            "RecordType": "SpamComplaint" if kind == "SpamComplaint" else "Bounce",
            "ID": bounce_id,
            "Type": kind,
            "TypeCode": code,
            "Name": name,
            "MessageID": message_id,
            "ServerID": SERVER_ID,
            "Description": _DESCRIPTIONS[kind],
            "Details": details,
            "Email": recipient,
            "From": sender,
            "BouncedAt": when,
            "DumpAvailable": False,
            "Inactive": kind in ("HardBounce", "SpamComplaint"),
            "CanActivate": kind == "HardBounce",
            "Subject": subject,
            **common,
        }
    if outcome in ("open", "click"):
        record: dict[str, Any] = {
            "RecordType": "Open" if outcome == "open" else "Click",
            "MessageID": message_id,
            "Recipient": recipient,
            "ReceivedAt": when,
            "Platform": "Desktop",
            "UserAgent": _USER_AGENT,
            "Client": _CLIENT,
            "OS": _OS,
            "Geo": _GEO,
            **common,
        }
        if outcome == "open":
            record.update(FirstOpen=True, ReadSeconds=5)
        else:
            record.update(ClickLocation="HTML", OriginalLink=CLICK_URL)
        return record
    if outcome == "unsubscribe":
        return {
            "RecordType": "SubscriptionChange",
            "MessageID": message_id,
            "ServerID": SERVER_ID,
            "ChangedAt": when,
            "Recipient": recipient,
            "Origin": "Recipient",
            "SuppressSending": True,
            "SuppressionReason": "ManualSuppression",
            **common,
        }
    raise ValueError(f"no Postmark record for outcome {outcome!r}")


def _bounce_api_record(webhook: Mapping[str, Any]) -> dict[str, Any]:
    """A bounce as ``GET /bounces`` lists it: the webhook record less ``Metadata``."""
    record = {k: v for k, v in webhook.items() if k != "Metadata"}
    record["RecordType"] = "Bounce"
    return record


def _paging(query: dict[str, str], what: str) -> tuple[int, int] | Response:
    """``count`` and ``offset`` of a Postmark search, or the 422 Postmark answers."""
    try:
        count, offset = int(query["count"]), int(query["offset"])
    except (KeyError, ValueError):
        return _error(422, 300, "The count and offset parameters are required integers.")
    if not 0 < count <= MAX_BATCH or offset < 0:
        return _error(422, 300, "Count must be between 1 and 500.")
    if count + offset > BOUNCES_LIMIT:
        return _error(422, 300, f"Count + Offset cannot exceed 10,000 {what}.")
    return count, offset


def register(sim: Simulator, *, credentials: dict[str, str]) -> None:
    """Serve Postmark's batch and bounces endpoints for one server token."""
    state: dict[str, Any] = {"messages": [], "events": [], "bounces": []}
    sim.store[PROVIDER] = state
    bounce_ids = itertools.count(4_200_000_000)
    token = credentials["server_token"]

    def authorized(request: Request) -> bool:
        return request.header("X-Postmark-Server-Token") == token

    def unauthorized() -> Response:
        # https://postmarkapp.com/developer/api/overview#http-response-codes
        return _error(401, 10, "Request does not contain a valid Server token.")

    def send_batch(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        if len(request.body) > MAX_BATCH_BYTES:
            return _error(413, 0, "Payload Too Large")
        try:
            batch = json.loads(request.body)
        except ValueError:
            return _error(422, 402, "Invalid JSON")
        if not isinstance(batch, list):
            return _error(422, 403, "Incompatible JSON: the batch must be a JSON array.")
        if len(batch) > MAX_BATCH:
            return _error(422, 410, f"Too many batch messages. Max {MAX_BATCH} per call.")
        if _has_lone_surrogate(batch):
            return _error(422, 402, "Invalid JSON: a string is not valid Unicode.")
        if not all(_compatible(item) for item in batch):
            return _error(422, 403, "Incompatible JSON: a message does not match the schema.")
        limited = sim.admit(PROVIDER, len(batch))
        if limited is not None:
            # https://postmarkapp.com/developer/api/overview#http-response-codes: 429
            # "Rate limit exceeded"; the body is ours (the page shows none).
            return Response.json({"Message": "Rate limit exceeded"}, 429, **limited)
        accepted_at = clock.now()
        answers = [accept(item, accepted_at) for item in batch]
        sim.record_accepted(
            str((item.get("Metadata") or {}).get(MESSAGE_KEY_FIELD))
            for item, answer in zip(batch, answers, strict=True)
            if answer["ErrorCode"] == 0
        )
        return Response.json(answers)

    def accept(item: dict[str, Any], accepted_at: datetime) -> dict[str, Any]:
        recipient = str(item.get("To") or "")
        if not item.get("From") or not recipient:
            return {"ErrorCode": 300, "Message": "Invalid email request: From and To required"}
        if not (item.get("HtmlBody") or item.get("TextBody")):
            return {"ErrorCode": 300, "Message": "Provide either email TextBody or HtmlBody"}
        if refuses(recipient):
            return {
                "ErrorCode": 406,
                "Message": "You tried to send to recipient(s) that have been marked as "
                f"inactive. Found inactive addresses: {recipient}. Inactive recipients are "
                "ones that have generated a hard bounce, a spam complaint, or a manual "
                "suppression.",
                "To": recipient,
            }
        message_id = str(uuid.uuid4())
        metadata = {str(k): str(v) for k, v in (item.get("Metadata") or {}).items()}
        headers = {h.get("Name"): h.get("Value") for h in item.get("Headers") or []}
        stream = str(item.get("MessageStream") or "outbound")
        state["messages"].append(
            {
                "message_id": message_id,
                "recipient": recipient,
                "from": item.get("From"),
                "subject": item.get("Subject"),
                "metadata": metadata,
                "headers": headers,
                "message_stream": stream,
                "tag": item.get("Tag"),
                "accepted_at": accepted_at,
            }
        )
        key = MessageRef.from_metadata(metadata).message_key or message_id
        for outcome in outcomes(key, recipient, accepted_at):
            record = webhook_record(
                outcome.name,
                message_id=message_id,
                recipient=recipient,
                metadata=metadata,
                occurred_at=outcome.occurred_at,
                bounce_id=next(bounce_ids),
                message_stream=stream,
                tag=item.get("Tag"),
                sender=str(item.get("From")),
                subject=str(item.get("Subject") or ""),
            )
            state["events"].append(record)
            if "BouncedAt" in record:
                state["bounces"].append(_bounce_api_record(record))
        return {
            "ErrorCode": 0,
            "Message": "OK",
            "MessageID": message_id,
            "SubmittedAt": accepted_at.astimezone(EASTERN).isoformat(),
            "To": recipient,
        }

    def get_bounces(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        query = {k: v[-1] for k, v in request.query.items()}
        paging = _paging(query, "bounces")
        if isinstance(paging, Response):
            return paging
        count, offset = paging
        stream = query.get("messagestream", "outbound")
        since = _eastern_bound(query.get("fromdate"))
        until = _eastern_bound(query.get("todate"))
        kind = query.get("type")
        matches = [
            b
            for b in state["bounces"]
            if b.get("MessageStream") == stream
            and (kind is None or b["Type"] == kind)
            and (since is None or _moment(b["BouncedAt"]) >= since)
            and (until is None or _moment(b["BouncedAt"]) <= until)
        ]
        matches.sort(key=lambda b: (_moment(b["BouncedAt"]), b["ID"]), reverse=True)
        page = matches[offset : offset + count]
        return Response.json({"TotalCount": len(matches), "Bounces": page})

    def search_outbound(request: Request) -> Response:
        """``GET /messages/outbound``: sent messages, newest first, filtered by recipient
        and ``metadata_<key>`` (https://postmarkapp.com/developer/api/messages-api)."""
        if not authorized(request):
            return unauthorized()
        query = {k: v[-1] for k, v in request.query.items()}
        paging = _paging(query, "messages")
        if isinstance(paging, Response):
            return paging
        count, offset = paging
        wanted = {
            k.removeprefix("metadata_"): v for k, v in query.items() if k.startswith("metadata_")
        }
        recipient = query.get("recipient")
        matches = [
            m
            for m in reversed(state["messages"])
            if (recipient is None or m["recipient"].lower() == recipient.lower())
            and all(m["metadata"].get(k) == v for k, v in wanted.items())
        ]
        page = [
            {
                "MessageID": m["message_id"],
                "Recipients": [m["recipient"]],
                "Metadata": m["metadata"],
                "MessageStream": m["message_stream"],
                "Status": "Sent",
                "ReceivedAt": m["accepted_at"].astimezone(EASTERN).isoformat(),
            }
            for m in matches[offset : offset + count]
        ]
        return Response.json({"TotalCount": len(matches), "Messages": page})

    def get_bounce(request: Request) -> Response:
        """``GET /bounces/{bounceid}`` (https://postmarkapp.com/developer/api/bounce-api)."""
        if not authorized(request):
            return unauthorized()
        wanted = request.params["bounce_id"]
        for bounce in state["bounces"]:
            if str(bounce["ID"]) == wanted:
                return Response.json(bounce)
        return _error(422, 701, f"Bounce {wanted} was not found.")

    def message_details(request: Request) -> Response:
        """``GET /messages/outbound/{messageid}/details``: the message and its events."""
        if not authorized(request):
            return unauthorized()
        wanted = request.params["message_id"]
        found = next((m for m in state["messages"] if m["message_id"] == wanted), None)
        if found is None:
            return _error(422, 701, "This message was not found.")
        now = clock.now()
        events = [
            message_event(record)
            for record in state["events"]
            if record["MessageID"] == wanted and _moment(_record_time(record)) <= now
        ]
        return Response.json(
            {
                "TextBody": "",
                "HtmlBody": "",
                "Body": "",
                "Tag": found["tag"] or "",
                "MessageID": wanted,
                "MessageStream": found["message_stream"],
                "To": [{"Email": found["recipient"], "Name": None}],
                "Cc": [],
                "Bcc": [],
                "Recipients": [found["recipient"]],
                "ReceivedAt": found["accepted_at"].astimezone(EASTERN).isoformat(),
                "From": found["from"],
                "Subject": found["subject"],
                "Attachments": [],
                "Status": "Sent",
                "TrackOpens": False,
                "TrackLinks": "None",
                "Metadata": found["metadata"],
                "Sandboxed": False,
                "MessageEvents": [e for e in events if e is not None],
            }
        )

    sim.route(PROVIDER, "POST", r"/email/batch", send_batch)
    sim.route(PROVIDER, "GET", r"/messages/outbound", search_outbound)
    sim.route(PROVIDER, "GET", r"/messages/outbound/(?P<message_id>[^/]+)/details", message_details)
    sim.route(PROVIDER, "GET", r"/bounces", get_bounces)
    sim.route(PROVIDER, "GET", r"/bounces/(?P<bounce_id>\d+)", get_bounce)


def _record_time(record: Mapping[str, Any]) -> str:
    """The webhook record's own timestamp field."""
    for field in ("DeliveredAt", "BouncedAt", "ReceivedAt", "ChangedAt"):
        if field in record:
            return str(record[field])
    raise ValueError(f"a {record.get('RecordType')} record without a timestamp")


def message_event(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """One webhook record as the ``MessageEvents`` entry of the message's details."""
    received = _moment(_record_time(record)).astimezone(EASTERN).isoformat()
    common = {"Recipient": record.get("Recipient") or record.get("Email"), "ReceivedAt": received}
    kind = record["RecordType"]
    server = {"DestinationServer": "mx.example.test (192.0.2.25)", "DestinationIP": "192.0.2.25"}
    if kind == "Delivery":
        details = {"DeliveryMessage": "smtp;250 2.0.0 OK", **server}
        return {**common, "Type": "Delivered", "Details": details}
    if kind in ("Bounce", "SpamComplaint") and record.get("Type") == "Transient":
        details = {"DeliveryMessage": record["Details"], **server}
        return {**common, "Type": "Transient", "Details": details}
    if kind in ("Bounce", "SpamComplaint"):
        details = {"Summary": record["Details"], "BounceID": str(record["ID"])}
        return {**common, "Type": "Bounced", "Details": details}
    if kind == "Open":
        details = {"Summary": f"Email opened with {record['UserAgent']}"}
        return {**common, "Type": "Opened", "Details": details}
    if kind == "Click":
        link = record["OriginalLink"]
        summary = f"Tracked Link '{link}' was clicked from the HTMLBody."
        details = {"Summary": summary, "Link": link, "ClickLocation": record["ClickLocation"]}
        return {**common, "Type": "LinkClicked", "Details": details}
    if kind == "SubscriptionChange":
        details = {
            "Origin": record["Origin"],
            "SuppressSending": str(record["SuppressSending"]),
            "SuppressionReason": record["SuppressionReason"],
        }
        return {**common, "Type": "SubscriptionChanged", "Details": details}
    return None


def _moment(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def _eastern_bound(value: str | None) -> datetime | None:
    """A ``fromdate``/``todate`` value (US Eastern wall time when it has no offset)."""
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    # fold=1: a wall time of the repeated fall-back hour is read as standard time.
    return (moment if moment.tzinfo else moment.replace(tzinfo=EASTERN, fold=1)).astimezone(UTC)


def signed_request(body: bytes, credentials: Mapping[str, str]) -> WebhookRequest:
    """A webhook POST as Postmark makes it to ``https://user:pass@host/path``: the URL's
    credentials arrive as ``Authorization: Basic``."""
    pair = f"{credentials['webhook_username']}:{credentials['webhook_password']}"
    return WebhookRequest(
        body=body,
        headers={
            "Authorization": "Basic " + base64.b64encode(pair.encode()).decode(),
            "Content-Type": "application/json",
            "User-Agent": "Postmark",
        },
        url="https://mailers.example/webhooks/postmark",
        method="POST",
    )


def webhook_request(
    event_payload: dict[str, Any],
    credentials: dict[str, str],
    *,
    timestamp: float | None = None,
) -> WebhookRequest:
    """A correctly authenticated webhook request carrying one Postmark record.

    Postmark sends no timestamp; ``timestamp`` only sets when the request was received.
    """
    request = signed_request(json.dumps(event_payload).encode(), credentials)
    if timestamp is None:
        return request
    return WebhookRequest(
        body=request.body,
        headers=request.headers,
        url=request.url,
        method=request.method,
        received_at=timestamp,
    )


def events_as_webhooks(sim: Simulator) -> list[bytes]:
    """The webhook bodies of every event the simulator produced, in production order."""
    state = sim.store.get(PROVIDER) or {}
    return [json.dumps(event).encode() for event in state.get("events", [])]
