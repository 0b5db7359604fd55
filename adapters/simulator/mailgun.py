"""The Mailgun subset the adapter uses: messages API, events API, signed webhooks.

Routes (all behind HTTP basic auth ``api:<api_key>``, answering ``401 Forbidden`` like
Mailgun otherwise):

* ``POST /v3/{domain}/messages``: ``multipart/form-data`` or urlencoded form fields
  (``from``, ``to``/``cc``/``bcc`` repeated or comma separated, ``subject``, ``text``,
  ``html``, ``h:*``, ``v:*``, ``o:*``, ``recipient-variables``). At most 1,000 recipients
  per call (Mailgun's documented batch limit); with ``recipient-variables`` every
  recipient gets its own copy with ``%recipient.x%`` substituted in subject, bodies and
  ``v:`` values. Errors are Mailgun's ``{"message": ...}`` with ``400`` (one bad or
  refused address fails the whole call: Mailgun validates a call before queueing it),
  ``404`` for an unknown domain. Success: ``{"id": "<...>", "message": "Queued. Thank
  you."}``, one id per call. A quota (:meth:`Simulator.limit`) is charged one message per
  recipient of a valid call; over it, ``429`` "Too many requests" and nothing is queued.
* ``GET /v3/{domain}/events`` (``begin``, optional ``end`` (exclusive), ``ascending=yes``,
  ``limit`` ≤ 300, ``event`` filter with ``OR``) and the ``paging.next`` URLs it hands
  out. Pages are in the order events were written, so without ``end`` the URL of an
  empty last page later returns what was written since, as Mailgun documents for
  continuous polling.

Each accepted recipient gets an ``accepted`` event and then the events of
:func:`adapters.simulator.outcomes.outcomes` in Mailgun's event format. State lives in
``sim.store["mailgun"]``: ``messages`` (one record per accepted recipient) and ``events``.
"""

from __future__ import annotations

import base64
import binascii
import email.message
import email.parser
import email.policy
import hashlib
import hmac
import json
import re
import secrets
import threading
import uuid
from collections.abc import Collection, Mapping
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

from adapters.simulator.outcomes import Outcome, outcomes, refuses
from adapters.simulator.server import Request, Response, Simulator
from mailers import clock
from mailers.messages import MESSAGE_KEY_FIELD, MessageRef
from mailers.webhooks import WebhookRequest

NAME = "mailgun"
MAX_RECIPIENTS = 1000
MAX_EVENTS_LIMIT = 300
WEBHOOK_EVENTS = frozenset(
    {"delivered", "failed", "opened", "clicked", "unsubscribed", "complained", "rejected"}
)
"""Events a webhook is registered for (``accepted`` is not an outcome; see the adapter)."""

_FAILURES: dict[str, dict[str, Any]] = {
    "deferral": {
        "severity": "temporary",
        "reason": "generic",
        "delivery-status": {
            "code": 421,
            "message": "4.7.0 Try again later",
            "description": "",
            "attempt-no": 1,
            "retry-seconds": 600,
        },
    },
    "bounce": {
        "severity": "permanent",
        "reason": "bounce",
        "delivery-status": {
            "code": 550,
            "message": "5.1.1 The email account that you tried to reach does not exist",
            "description": "",
            "attempt-no": 1,
        },
    },
    "soft_bounce": {
        # Retries of temporary failures expire after 8 hours with "Too old" (code 602).
        "severity": "permanent",
        "reason": "old",
        "delivery-status": {
            "code": 602,
            "message": "Too old",
            "description": "",
            "attempt-no": 8,
        },
    },
}


def register(
    sim: Simulator,
    *,
    credentials: Mapping[str, str],
    domains: Collection[str] | None = None,
) -> None:
    """Serve the Mailgun routes on ``sim``; ``domains`` limits the known domains (any if None).

    ``credentials``: ``api_key`` (basic auth password) and ``webhook_signing_key``.
    ``domains`` is consulted on every request, so a caller may add domains later.
    """
    state = _Mailgun(sim, dict(credentials), domains)
    sim.store[NAME] = state.store
    sim.route(NAME, "POST", r"/v3/(?P<domain>[^/]+)/messages", state.send)
    sim.route(NAME, "GET", r"/v3/(?P<domain>[^/]+)/events", state.events)
    sim.route(NAME, "GET", r"/v3/(?P<domain>[^/]+)/events/(?P<page>[A-Za-z0-9_=-]+)", state.events)


def webhook_request(
    event_payload: Mapping[str, Any],
    credentials: Mapping[str, str],
    *,
    timestamp: float | None = None,
    token: str | None = None,
) -> WebhookRequest:
    """A webhook request for one event, signed the way Mailgun signs it.

    HMAC-SHA256 (key: ``credentials["webhook_signing_key"]``) over the timestamp and token
    concatenated, hex, inside the JSON body next to ``event-data``.
    """
    stamp = str(int(clock.epoch() if timestamp is None else timestamp))
    nonce = token or secrets.token_hex(25)  # "randomly generated string with length 50"
    key = credentials["webhook_signing_key"].encode()
    signature = hmac.new(key, (stamp + nonce).encode(), hashlib.sha256).hexdigest()
    body = {
        "signature": {"timestamp": stamp, "token": nonce, "signature": signature},
        "event-data": dict(event_payload),
    }
    return WebhookRequest(
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "mailgun/treq-16.12.0"},
    )


def events_as_webhooks(sim: Simulator) -> list[bytes]:
    """Signed webhook bodies for every produced event a webhook would carry, in order."""
    state: dict[str, Any] = sim.store[NAME]
    with state["lock"]:
        events = list(state["events"])
    return [
        webhook_request(event, state["credentials"]).body
        for event in events
        if event["event"] in WEBHOOK_EVENTS
    ]


class _Mailgun:
    def __init__(
        self, sim: Simulator, credentials: dict[str, str], domains: Collection[str] | None
    ) -> None:
        self.sim = sim
        self.domains = domains
        expected = base64.b64encode(f"api:{credentials['api_key']}".encode()).decode()
        self._authorization = f"Basic {expected}"
        self.lock = threading.Lock()
        self.store: dict[str, Any] = {
            "messages": [],
            "events": [],
            "credentials": credentials,
            "lock": self.lock,
        }

    def _refused(self, request: Request) -> Response | None:
        offered = request.header("Authorization") or ""
        if not hmac.compare_digest(offered.encode(), self._authorization.encode()):
            return Response(401, b"Forbidden", {"Content-Type": "text/plain"})
        domain = request.params["domain"]
        if self.domains is not None and domain not in self.domains:
            return Response.json({"message": f"Domain not found: {domain}"}, 404)
        return None

    def send(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused:
            return refused
        try:
            fields = _form(request)
        except ValueError as err:
            return _bad(str(err))
        first = {name: value for name, value in reversed(fields)}
        if not first.get("from"):
            return _bad("'from' parameter is missing")
        addresses = [
            address
            for name, value in fields
            if name in ("to", "cc", "bcc")
            for _, address in getaddresses([value])
            if address
        ]
        if not any(name == "to" for name, _ in fields):
            return _bad("'to' parameter is missing")
        if not (first.get("text") or first.get("html") or first.get("template")):
            return _bad("Need at least one of 'text', 'html' or 'template' parameters specified")
        if len(addresses) > MAX_RECIPIENTS:
            return _bad(
                f"Too many recipients: {len(addresses)} given, batch sending allows at most "
                f"{MAX_RECIPIENTS} per message"
            )
        for address in addresses:
            if "@" not in address or refuses(address):
                return _bad("'to' parameter is not a valid address. please check documentation")
        try:
            per_recipient = json.loads(first.get("recipient-variables") or "{}")
        except ValueError:
            return _bad("recipient-variables parameter is not a valid JSON")
        if not isinstance(per_recipient, dict):
            return _bad("recipient-variables parameter is not a valid JSON")

        limited = self.sim.admit(NAME, len(addresses))
        if limited is not None:
            # https://documentation.mailgun.com/docs/mailgun/api-reference/#rate-limits
            return Response(429, b"Too many requests", {"Content-Type": "text/plain", **limited})
        domain = request.params["domain"]
        to_header = ", ".join(value for name, value in fields if name == "to")
        accepted_at = clock.now()
        message_id = f"{accepted_at:%Y%m%d%H%M%S}.{uuid.uuid4().hex[:16]}@{domain}"
        headers = {name[2:]: value for name, value in fields if name.startswith("h:")}
        options = {name[2:]: value for name, value in fields if name.startswith("o:")}
        records: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for address in addresses:
            values = per_recipient.get(address)
            values = values if isinstance(values, dict) else {}
            variables = {
                name[2:]: _substitute(value, values)
                for name, value in fields
                if name.startswith("v:")
            }
            record = {
                "id": message_id,
                "domain": domain,
                "recipient": address,
                "from": first["from"],
                "to": address if per_recipient else to_header,
                "subject": _substitute(first.get("subject", ""), values),
                "text": _substitute(first.get("text", ""), values),
                "html": _substitute(first.get("html", ""), values),
                "headers": headers,
                "variables": variables,
                "options": options,
                "accepted_at": accepted_at,
            }
            records.append(record)
            events.extend(_events_for(record, test_mode=options.get("testmode") == "yes"))
        with self.lock:
            self.store["messages"].extend(records)
            self.store["events"].extend(events)
        self.sim.record_accepted(str(r["variables"].get(MESSAGE_KEY_FIELD)) for r in records)
        return Response.json({"id": f"<{message_id}>", "message": "Queued. Thank you."})

    def events(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused:
            return refused
        domain = request.params["domain"]
        page = request.params.get("page")
        if page:
            try:
                query = json.loads(base64.urlsafe_b64decode(page.encode() + b"=="))
            except (ValueError, binascii.Error):
                return _bad("invalid page token")
        else:
            try:
                query = _events_query(request.query)
            except ValueError as err:
                return _bad(str(err))
        wanted = set(query["event"]) if query["event"] else None
        with self.lock:
            written = list(enumerate(self.store["events"], start=1))
        position, items = query["after"], []
        if not query.get("previous"):
            for seq, event in written:
                if seq <= query["after"] or event["timestamp"] < query["begin"]:
                    continue
                if query.get("end") is not None and event["timestamp"] >= query["end"]:
                    continue
                if event.get("domain", {}).get("name") != domain:
                    continue
                if wanted is not None and event["event"] not in wanted:
                    continue
                if query.get("recipient") and event["recipient"] != query["recipient"]:
                    continue
                items.append(event)
                position = seq
                if len(items) == query["limit"]:
                    break
        base = f"http://{request.header('Host') or self.sim.base_url.split('://', 1)[1]}"

        def url(**changes: Any) -> str:
            token = base64.urlsafe_b64encode(json.dumps({**query, **changes}).encode())
            return f"{base}/v3/{domain}/events/{token.decode().rstrip('=')}"

        return Response.json(
            {
                "items": items,
                "paging": {
                    "next": url(after=position, previous=False),
                    "previous": url(previous=True),
                },
            }
        )


def _events_query(query: Mapping[str, list[str]]) -> dict[str, Any]:
    def one(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    if (one("ascending") or "no") != "yes":
        raise ValueError("the simulator implements ascending=yes only")
    begin_text, end_text = one("begin"), one("end")
    begin = clock.epoch() if begin_text is None else _epoch(begin_text)
    end = None if end_text is None else _epoch(end_text, "end")
    limit = int(one("limit") or MAX_EVENTS_LIMIT)
    if not 1 <= limit <= MAX_EVENTS_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_EVENTS_LIMIT}")
    event = one("event")
    names = [term for term in re.split(r"\s+", event or "") if term and term != "OR"]
    return {
        "begin": begin,
        "end": end,
        "limit": limit,
        "event": names,
        "after": 0,
        "recipient": one("recipient"),
    }


def _epoch(value: str, name: str = "begin") -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name}: {value!r} is neither epoch seconds nor an RFC 2822 date"
        ) from err


def _form(request: Request) -> list[tuple[str, str]]:
    """The fields of a form post, in order (repeated names kept)."""
    content_type = request.header("Content-Type") or ""
    if content_type.startswith("application/x-www-form-urlencoded"):
        return parse_qsl(request.body.decode(), keep_blank_values=True)
    if not content_type.startswith("multipart/form-data"):
        raise ValueError("expected multipart/form-data or application/x-www-form-urlencoded")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    # compat32: the form's parts need no header objects, and the modern policies parse a
    # request ~8x slower, which capped the simulator near 120 requests a second.
    parser = email.parser.BytesParser(policy=email.policy.compat32)
    message = parser.parsebytes(head + request.body)
    if not message.is_multipart():
        raise ValueError("the multipart body could not be parsed")
    fields = []
    for part in message.get_payload():
        if not isinstance(part, email.message.Message):
            continue
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        fields.append((name, data.decode(part.get_content_charset() or "utf-8")))
    return fields


def _substitute(text: str, values: Mapping[str, Any]) -> str:
    return re.sub(
        r"%recipient\.([A-Za-z0-9_-]+)%",
        lambda m: str(values.get(m.group(1), m.group(0))),
        text,
    )


def _bad(message: str) -> Response:
    return Response.json({"message": message}, 400)


def _event_id(message_id: str, recipient: str, name: str) -> str:
    digest = hashlib.sha256(f"{message_id}|{recipient}|{name}".encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _events_for(record: dict[str, Any], *, test_mode: bool) -> list[dict[str, Any]]:
    accepted = Outcome("accepted", record["accepted_at"])
    if test_mode:  # accepted, never delivered
        return [_event(record, accepted)]
    key = MessageRef.from_metadata(record["variables"]).message_key or record["id"]
    planned = outcomes(key, record["recipient"], record["accepted_at"])
    return [_event(record, outcome) for outcome in [accepted, *planned]]


_NAMES = {
    "accepted": "accepted",
    "delivered": "delivered",
    "deferral": "failed",
    "bounce": "failed",
    "soft_bounce": "failed",
    "complaint": "complained",
    "open": "opened",
    "click": "clicked",
    "unsubscribe": "unsubscribed",
}


def _event(record: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    """One event in Mailgun's format (webhook ``event-data`` / events API item)."""
    name = _NAMES[outcome.name]
    recipient: str = record["recipient"]
    full_headers = name in ("accepted", "delivered", "failed")
    test_mode = record["options"].get("testmode") == "yes"
    envelope = {"sender": f"bounce@{record['domain']}", "targets": recipient}
    event: dict[str, Any] = {
        "event": name,
        "id": _event_id(record["id"], recipient, outcome.name),
        "timestamp": outcome.occurred_at.timestamp(),
        "log-level": {"failed": "error", "complained": "warn"}.get(name, "info"),
        "recipient": recipient,
        "recipient-domain": recipient.rsplit("@", 1)[-1],
        "domain": {"name": record["domain"]},
        "message": {
            "headers": (
                {
                    "to": record["to"],
                    "message-id": record["id"],
                    "from": record["from"],
                    "subject": record["subject"],
                }
                if full_headers
                else {"message-id": record["id"]}
            )
        },
        "tags": [],
        "campaigns": [],
        "user-variables": dict(record["variables"]),
        "flags": {
            "is-authenticated": True,
            "is-test-mode": test_mode,
        },
    }
    envelope["transport"] = "smtp"
    if name == "accepted":
        event["method"] = "HTTP"
        event["envelope"] = dict(envelope)
    elif name == "delivered":
        event["envelope"] = dict(envelope)
        event["delivery-status"] = {
            "code": 250,
            "message": "OK",
            "description": "",
            "attempt-no": 1,
            "tls": True,
            "mx-host": f"mx.{event['recipient-domain']}",
        }
    elif name == "failed":
        event["envelope"] = dict(envelope)
        event.update(json.loads(json.dumps(_FAILURES[outcome.name])))
    elif name in ("opened", "clicked", "unsubscribed"):
        event["ip"] = "192.0.2.10"
        event["geolocation"] = {"country": "US", "region": "CA", "city": "San Francisco"}
        event["client-info"] = {
            "client-type": "browser",
            "client-os": "Linux",
            "device-type": "desktop",
            "client-name": "Firefox",
            "user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        }
        if name == "clicked":
            event["url"] = "https://example.test/landing"
    return event
