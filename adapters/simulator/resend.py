"""Resend's documented API subset on the simulator: batch send, idempotency, signed webhooks.

* ``POST /emails/batch`` with ``Authorization: Bearer <api_key>`` (401
  ``missing_api_key`` without one, 403 ``invalid_api_key`` for another key; 403 Cloudflare
  1010 without a ``User-Agent``). The body is a JSON array of 1 to 100 emails, validated
  in Resend's default strict mode: the first invalid email refuses the whole call with
  one ``{"name", "statusCode", "message"}`` error (422 ``missing_required_field`` without
  ``from``/``to``/``subject``; 422 ``validation_error`` for more than 100 emails, more
  than 50 ``to`` addresses, a malformed address, ``headers`` that are not an object of
  strings, tags that break the tag character rule, ``attachments``). Recipients
  :func:`adapters.simulator.outcomes.refuses` are refused as invalid ``to`` addresses.
  Success is ``200 {"data": [{"id"}, ...]}``, ids in request order.
  https://resend.com/docs/api-reference/emails/send-batch-emails,
  https://resend.com/docs/api-reference/errors
* ``Idempotency-Key`` (1 to 256 characters, else 400 ``invalid_idempotency_key``): an
  answered key is kept for 24 hours by Mailers' clock. The same key with the same body
  gets the stored answer and nothing is sent again; with another body, 409
  ``invalid_idempotent_request``; while the first request is still being processed, 409
  ``concurrent_idempotent_requests``. Only 200 answers are kept (the page describes
  replaying the answer of a sent email; a refused request is validated again).
  https://resend.com/docs/dashboard/emails/idempotency-keys
* A rate quota (:meth:`Simulator.limit`) is charged one message per recipient of a valid
  batch; over it, ``429 rate_limit_exceeded`` and nothing is sent (nor kept for the key).
* ``daily_quota``: past that many emails in a UTC day, a batch is refused whole with 429
  ``daily_quota_exceeded`` (https://resend.com/docs/api-reference/rate-limit).
* Every accepted email gets ``email.sent`` and then the events of
  :func:`adapters.simulator.outcomes.outcomes` in Resend's webhook format
  (:func:`webhook_event`), in ``sim.store["resend"]["events"]``. Resend reports no
  per-email unsubscribe event, so the ``unsubscribe`` outcome has none.
  :func:`signed_request` signs a body as Svix does for Resend.

State lives in ``sim.store["resend"]``: ``messages`` (recipient, from, subject, tags,
headers, email id, accepted time, idempotency key), ``events`` (webhook payloads) and
``idempotency`` (key → body digest, answer, when).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any

from adapters.simulator.outcomes import outcomes, refuses
from adapters.simulator.server import Request, Response, Simulator
from mailers import clock
from mailers.messages import MessageRef
from mailers.webhooks import WebhookRequest

PROVIDER = "resend"
BATCH_PATH = "/emails/batch"
MAX_BATCH = 100
MAX_TO = 50
IDEMPOTENCY_TTL = timedelta(hours=24)
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
"""Tag names and values: "ASCII letters, numbers, underscores, or dashes", ≤ 256."""
CLICK_URL = "https://example.test/landing"
_USER_AGENT = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15"
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

OUTCOME_TYPES: dict[str, str] = {
    "sent": "email.sent",
    "delivered": "email.delivered",
    "deferral": "email.delivery_delayed",
    "bounce": "email.bounced",
    "soft_bounce": "email.bounced",
    "complaint": "email.complained",
    "open": "email.opened",
    "click": "email.clicked",
}
"""Outcome name (``sent``, then the sandbox's rule) → the Resend event type reporting it."""

_BOUNCES: dict[str, dict[str, Any]] = {
    "bounce": {
        "message": "The recipient's mail server permanently rejected the email.",
        "subType": "General",
        "type": "Permanent",
        "diagnosticCode": ["smtp; 550 5.1.1 The email account does not exist"],
    },
    "soft_bounce": {
        "message": "The recipient's mailbox is full.",
        "subType": "MailboxFull",
        "type": "Transient",
        "diagnosticCode": ["smtp; 452 4.2.2 Mailbox full"],
    },
}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(status: int, name: str, message: str) -> Response:
    return Response.json({"name": name, "statusCode": status, "message": message}, status)


def _invalid(message: str) -> Response:
    return _error(422, "validation_error", message)


def _address_ok(value: Any) -> bool:
    return isinstance(value, str) and bool(_ADDRESS.match(parseaddr(value)[1]))


def _problem(email: Any) -> Response | None:
    """The strict-mode error one email earns, if any (the send-batch-emails parameters)."""
    if not isinstance(email, dict):
        return _invalid("Each email in the batch must be an object.")
    for field in ("from", "to", "subject"):
        if not email.get(field):
            return _error(422, "missing_required_field", f"The `{field}` field is missing.")
    if "attachments" in email:
        return _invalid("The `attachments` field is not supported yet.")
    if not _address_ok(email["from"]):
        return _invalid(
            "Invalid `from` field. The email address needs to follow the `email@example.com` "
            "or `Name <email@example.com>` format."
        )
    to = email["to"] if isinstance(email["to"], list) else [email["to"]]
    if len(to) > MAX_TO:
        return _invalid(f"The `to` field must have at most {MAX_TO} addresses.")
    if not all(_address_ok(r) and not refuses(parseaddr(r)[1]) for r in to):
        return _invalid(
            "Invalid `to` field. The email address needs to follow the `email@example.com` "
            "or `Name <email@example.com>` format."
        )
    headers = email.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return _invalid("The `headers` field must be an object of strings.")
    tags = email.get("tags", [])
    if not isinstance(tags, list) or not all(
        isinstance(t, dict)
        and TAG_PATTERN.match(str(t.get("name", "")))
        and TAG_PATTERN.match(str(t.get("value", "")))
        for t in tags
    ):
        return _invalid(
            "Tags should only contain ASCII letters, numbers, underscores, or dashes, and "
            "be at most 256 characters."
        )
    return None


class _Resend:
    """One Resend team's state behind the batch route."""

    def __init__(self, sim: Simulator, api_key: str, daily_quota: int | None) -> None:
        self.sim = sim
        self.api_key = api_key
        self.daily_quota = daily_quota
        self.lock = threading.Lock()
        self.in_flight: set[str] = set()
        self.store: dict[str, Any] = {"messages": [], "events": [], "idempotency": {}}

    def send(self, request: Request) -> Response:
        if not request.header("User-Agent"):
            return Response(403, b"error code: 1010", {"Content-Type": "text/plain"})
        authorization = request.header("Authorization") or ""
        if not authorization.startswith("Bearer "):
            return _error(401, "missing_api_key", "Missing API key in the authorization header.")
        if not hmac.compare_digest(authorization.removeprefix("Bearer "), self.api_key):
            return _error(403, "invalid_api_key", "API key is invalid")
        key = request.header("Idempotency-Key")
        if key is None:
            return self._process(request)
        if not 1 <= len(key) <= 256:
            return _error(400, "invalid_idempotency_key", "The key must be between 1-256 chars.")
        digest = hashlib.sha256(request.body).hexdigest()
        with self.lock:
            self._forget_old_keys()
            stored = self.store["idempotency"].get(key)
            if stored is None and key in self.in_flight:
                return _error(
                    409,
                    "concurrent_idempotent_requests",
                    "There is another request in progress with the same idempotency key.",
                )
            if stored is None:
                self.in_flight.add(key)
        if stored is not None:
            if stored["digest"] != digest:
                return _error(
                    409,
                    "invalid_idempotent_request",
                    "This idempotency key has been used with this HTTP method and endpoint "
                    "within the last 24 hours, but the request body was modified. Retrying "
                    "this request is useless without changing the idempotency key or payload.",
                )
            return Response.json(stored["answer"])
        try:
            response = self._process(request, key)
            if response.status == 200:
                with self.lock:
                    self.store["idempotency"][key] = {
                        "digest": digest,
                        "answer": json.loads(response.body),
                        "at": clock.now(),
                    }
            return response
        finally:
            with self.lock:
                self.in_flight.discard(key)

    def _forget_old_keys(self) -> None:
        horizon = clock.now() - IDEMPOTENCY_TTL
        kept = self.store["idempotency"]
        for key in [k for k, v in kept.items() if v["at"] <= horizon]:
            del kept[key]

    def _process(self, request: Request, key: str | None = None) -> Response:
        try:
            batch = json.loads(request.body)
        except ValueError:
            return _error(400, "validation_error", "The request body is not valid JSON.")
        if not isinstance(batch, list) or not batch:
            return _invalid("The batch must be a non-empty array of emails.")
        if len(batch) > MAX_BATCH:
            return _invalid(f"Too many emails in the batch: at most {MAX_BATCH} are allowed.")
        for email in batch:
            problem = _problem(email)
            if problem is not None:
                return problem
        recipients = sum(len(e["to"]) if isinstance(e["to"], list) else 1 for e in batch)
        limited = self.sim.admit(PROVIDER, recipients)
        if limited is not None:
            # https://resend.com/docs/api-reference/rate-limit
            return Response.json(
                {
                    "name": "rate_limit_exceeded",
                    "statusCode": 429,
                    "message": "Too many requests. Please limit the number of requests.",
                },
                429,
                **limited,
            )
        accepted_at = clock.now()
        with self.lock:
            if self.daily_quota is not None:
                today = accepted_at.astimezone(UTC).date()
                sent = sum(m["accepted_at"].date() == today for m in self.store["messages"])
                if sent + len(batch) > self.daily_quota:
                    return _error(
                        429, "daily_quota_exceeded", "You have reached your daily email quota."
                    )
            ids = [self._accept(email, accepted_at, key) for email in batch]
        return Response.json({"data": [{"id": email_id} for email_id in ids]})

    def _accept(self, email: dict[str, Any], accepted_at: datetime, key: str | None) -> str:
        email_id = str(uuid.uuid4())
        tags = {str(t["name"]): str(t["value"]) for t in email.get("tags", [])}
        recipients = email["to"] if isinstance(email["to"], list) else [email["to"]]
        for recipient in recipients:
            message = {
                "email_id": email_id,
                "recipient": parseaddr(recipient)[1],
                "from": email["from"],
                "subject": email["subject"],
                "tags": tags,
                "headers": dict(email.get("headers", {})),
                "accepted_at": accepted_at.astimezone(UTC),
                "idempotency_key": key,
            }
            self.store["messages"].append(message)
            self.store["events"].extend(_events_for(message))
            ref = MessageRef.from_metadata(tags)
            self.sim.record_accepted([ref.message_key or email_id])
        return email_id


def register(
    sim: Simulator, *, credentials: Mapping[str, str], daily_quota: int | None = None
) -> None:
    """Serve Resend's batch endpoint on ``sim`` for the API key ``credentials["api_key"]``."""
    state = _Resend(sim, credentials["api_key"], daily_quota)
    sim.store[PROVIDER] = state.store
    sim.route(PROVIDER, "POST", BATCH_PATH, state.send)


def _events_for(message: dict[str, Any]) -> list[dict[str, Any]]:
    accepted_at = message["accepted_at"]
    key = MessageRef.from_metadata(message["tags"]).message_key or message["email_id"]
    happened = [("sent", accepted_at)] + [
        (o.name, o.occurred_at) for o in outcomes(key, message["recipient"], accepted_at)
    ]
    return [
        webhook_event(
            name,
            email_id=message["email_id"],
            recipient=message["recipient"],
            tags=message["tags"],
            occurred_at=when,
            created_at=accepted_at,
            sender=message["from"],
            subject=message["subject"],
        )
        for name, when in happened
        if name in OUTCOME_TYPES
    ]


def webhook_event(
    outcome: str,
    *,
    email_id: str,
    recipient: str,
    tags: Mapping[str, str],
    occurred_at: datetime,
    created_at: datetime | None = None,
    sender: str = "Acme <onboarding@resend.dev>",
    subject: str = "",
) -> dict[str, Any]:
    """The Resend webhook payload reporting ``outcome`` (``sent`` or a sandbox outcome).

    Fields follow each event's page (https://resend.com/docs/webhooks/emails/<type>);
    ``created_at`` is when the email was created (default: when the event happened).
    """
    data: dict[str, Any] = {
        "created_at": _iso(created_at or occurred_at),
        "email_id": email_id,
        "message_id": f"<{email_id}@email.resend.sim>",
        "from": sender,
        "to": [recipient],
        "subject": subject,
        "tags": dict(tags),
    }
    if outcome in _BOUNCES:
        data["bounce"] = dict(_BOUNCES[outcome])
    if outcome == "click":
        data["click"] = {
            "ipAddress": "192.0.2.10",
            "link": CLICK_URL,
            "timestamp": _iso(occurred_at),
            "userAgent": _USER_AGENT,
        }
    return {"type": OUTCOME_TYPES[outcome], "created_at": _iso(occurred_at), "data": data}


def generate_webhook_secret() -> str:
    """A new endpoint signing secret in Resend's shape: ``whsec_`` and base64 of 24 bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def signed_request(
    body: bytes,
    secret: str,
    *,
    timestamp: float | None = None,
    message_id: str | None = None,
    prefix: str = "svix",
) -> WebhookRequest:
    """A webhook POST as Resend (through Svix) makes it: ``svix-*`` headers, one ``v1``
    signature over ``{id}.{timestamp}.{body}`` keyed with the secret's base64 part.

    The id defaults to one derived from the body, so posting the same event again is a
    retry with the same id, as Resend's are. ``prefix="webhook"`` gives the Standard
    Webhooks header names.
    """
    sent_at = str(int(clock.epoch() if timestamp is None else timestamp))
    delivery = message_id or "msg_" + hashlib.sha256(body).hexdigest()[:27]
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{delivery}.{sent_at}.".encode() + body
    mac = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Svix-Webhooks/1.0",
        f"{prefix}-id": delivery,
        f"{prefix}-timestamp": sent_at,
        f"{prefix}-signature": f"v1,{mac}",
    }
    return WebhookRequest(body=body, headers=headers, url="/webhooks/resend")


def webhook_request(
    event_payload: Mapping[str, Any],
    credentials: Mapping[str, str],
    *,
    timestamp: float | None = None,
) -> WebhookRequest:
    """A correctly signed webhook request carrying one Resend event."""
    body = json.dumps(dict(event_payload)).encode()
    return signed_request(body, credentials["webhook_secret"], timestamp=timestamp)


def events_as_webhooks(sim: Simulator) -> list[bytes]:
    """The webhook bodies of every event the simulator produced, in production order."""
    state = sim.store.get(PROVIDER) or {}
    return [json.dumps(event).encode() for event in state.get("events", [])]
