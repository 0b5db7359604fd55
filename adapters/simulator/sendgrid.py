"""SendGrid, simulated: v3 Mail Send and the Signed Event Webhook (the documented subset).

* ``POST /v3/mail/send`` with ``Authorization: Bearer <api_key>``: validates the request
  the way SendGrid's documented errors describe (all errors of a request in one ``400``
  ``{"errors": [{"message", "field", "help"}]}``; at most 1,000 personalizations and 1,000
  recipients; each address once; string ``custom_args`` and ``headers``; a subject for
  every personalization; ``text/plain`` before ``text/html``), refuses recipients at the
  sandbox's reject domain as invalid addresses, and answers ``202`` with an
  ``X-Message-Id``. A wrong key answers ``401``. A quota (:meth:`Simulator.limit`) is
  charged one message per recipient of a valid request; over it, ``429`` and nothing is
  sent.
* Every accepted recipient is stored in ``sim.store["sendgrid"]["messages"]`` (recipient,
  subject, custom args, headers, ``x_message_id``, ``sg_message_id``, accepted time, the
  fingerprint of the API key that sent it, and its events). Its Event Webhook events follow
  :func:`adapters.simulator.outcomes.outcomes` in SendGrid's event format (custom args as
  top-level keys, ``sg_event_id``, ``sg_message_id`` starting with the ``X-Message-Id``) and
  are also appended to ``sim.store["sendgrid"]["events"]``.
* :func:`webhook_request` signs a body the way SendGrid does (ECDSA P-256 / SHA-256 over
  timestamp + body, base64 DER) with the private key in ``credentials["webhook_private_key"]``;
  :func:`generate_webhook_keys` makes a key pair, the public half as SendGrid shows it.

Docs: https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send,
https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors,
https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event and
https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from adapters.providers.sendgrid.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER
from adapters.simulator.outcomes import outcomes, refuses
from adapters.simulator.server import Request, Response, Simulator
from mailers import clock
from mailers.messages import MESSAGE_KEY_FIELD, MessageRef
from mailers.webhooks import WebhookRequest

PROVIDER = "sendgrid"
SEND_PATH = "/v3/mail/send"
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

OUTCOME_EVENTS: dict[str, dict[str, Any]] = {
    "delivered": {"event": "delivered", "response": "250 2.0.0 OK", "tls": 1},
    "deferral": {"event": "deferred", "response": "421 4.7.0 Try again later", "attempt": "1"},
    "bounce": {
        "event": "bounce",
        "type": "bounce",
        "bounce_classification": "Invalid Address",
        "reason": "550 5.1.1 The email account that you tried to reach does not exist",
        "status": "5.1.1",
    },
    "soft_bounce": {
        "event": "bounce",
        "type": "blocked",
        "bounce_classification": "Mailbox Unavailable",
        "reason": "452 4.2.2 The email account that you tried to reach is over quota",
        "status": "4.2.2",
    },
    "complaint": {"event": "spamreport"},
    "open": {
        "event": "open",
        "sg_machine_open": False,
        "useragent": "Mozilla/5.0 (simulated)",
        "ip": "192.0.2.10",
    },
    "click": {
        "event": "click",
        "url": "https://example.test/landing",
        "url_offset": {"index": 0, "type": "html"},
        "useragent": "Mozilla/5.0 (simulated)",
        "ip": "192.0.2.10",
    },
    "unsubscribe": {"event": "unsubscribe"},
}
"""Outcome name (the sandbox's rule) → the SendGrid event fields that report it."""


def register(sim: Simulator, *, credentials: dict[str, str]) -> None:
    """Serve SendGrid's Mail Send on ``sim`` for the API key ``credentials["api_key"]``.

    Registering again adds another account's key to the same endpoint, as two accounts
    share api.sendgrid.com; each stored message notes the fingerprint of the key it came with.
    """
    state: dict[str, Any] = sim.store.setdefault(
        PROVIDER, {"messages": [], "events": [], "key_ids": set()}
    )
    first = not state["key_ids"]
    state["key_ids"].add(key_id(credentials["api_key"]))
    if first:
        sim.route(PROVIDER, "POST", SEND_PATH, functools.partial(_send, sim, state))


def key_id(api_key: str) -> str:
    """A fingerprint naming an API key in the store without holding the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


def _send(sim: Simulator, state: dict[str, Any], request: Request) -> Response:
    authorization = request.header("Authorization") or ""
    sender_key = key_id(authorization.removeprefix("Bearer "))
    if not authorization.startswith("Bearer ") or sender_key not in state["key_ids"]:
        return _errors(
            401, [_error("The provided authorization grant is invalid, expired, or revoked")]
        )
    try:
        body = request.json()
    except ValueError:
        return _errors(400, [_error("Bad Request")])
    problems = _validate(body) if isinstance(body, dict) else [_error("Bad Request")]
    if problems:
        return _errors(400, problems)
    limited = sim.admit(PROVIDER, sum(len(p["to"]) for p in body["personalizations"]))
    if limited is not None:
        # https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits
        return _errors(429, [_error("too many requests")], **limited)
    x_message_id = _token(uuid.uuid4().bytes)
    accepted_at = clock.now()
    for p_index, personalization in enumerate(body["personalizations"]):
        for t_index, to in enumerate(personalization["to"]):
            message: dict[str, Any] = {
                "recipient": to["email"],
                "subject": personalization.get("subject", body.get("subject")),
                "custom_args": {
                    **body.get("custom_args", {}),
                    **personalization.get("custom_args", {}),
                },
                "headers": {**body.get("headers", {}), **personalization.get("headers", {})},
                "x_message_id": x_message_id,
                "sg_message_id": (
                    f"{x_message_id}.sim-filter-{p_index}-{t_index}"
                    f".{int(accepted_at.timestamp()):X}.0"
                ),
                "accepted_at": accepted_at,
                "key_id": sender_key,
            }
            message["events"] = _events_for(message)
            state["messages"].append(message)
            state["events"].extend(message["events"])
            sim.record_accepted([str(message["custom_args"].get(MESSAGE_KEY_FIELD))])
    return Response(status=202, headers={"X-Message-Id": x_message_id})


def _validate(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The documented 400 errors this request earns, in SendGrid's error shape."""
    problems: list[dict[str, Any]] = []
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return [
            _error(
                "The personalizations field is required and must have at least one "
                "personalization.",
                "personalizations",
            )
        ]
    if len(personalizations) > MAX_PERSONALIZATIONS:
        return [
            _error(
                f"The personalization block is limited to {MAX_PERSONALIZATIONS} "
                f"personalizations per API request. You have provided {len(personalizations)} "
                "personalizations. Please consider splitting this into multiple requests and "
                "resending your request.",
                "personalizations",
            )
        ]
    recipients = sum(len(p.get("to") or []) for p in personalizations if isinstance(p, dict))
    if recipients > MAX_RECIPIENTS:
        problems.append(
            _error(
                f"There is a limit of {MAX_RECIPIENTS} total recipients (to + cc + bcc) per "
                "request.",
                "personalizations",
            )
        )
    seen: set[str] = set()
    for i, personalization in enumerate(personalizations):
        problems.extend(_personalization_problems(i, personalization, body, seen))
    sender = body.get("from")
    if not isinstance(sender, dict) or not _ADDRESS.match(str(sender.get("email", ""))):
        problems.append(
            _error(
                "The from object must be provided for every email send. It is an object that "
                "requires the email parameter, but may also contain a name parameter.",
                "from.email",
            )
        )
    problems.extend(_content_problems(body.get("content")))
    return problems


def _personalization_problems(
    index: int, personalization: Any, body: dict[str, Any], seen: set[str]
) -> list[dict[str, Any]]:
    path = f"personalizations.{index}"
    if not isinstance(personalization, dict) or not personalization.get("to"):
        return [
            _error(
                "The to array is required for all personalization objects, and must have at "
                "least one email object with a valid email address.",
                f"{path}.to",
            )
        ]
    problems = []
    for j, to in enumerate(personalization["to"]):
        address = str(to.get("email", "")) if isinstance(to, dict) else ""
        if not _ADDRESS.match(address) or refuses(address):
            problems.append(_error("Does not contain a valid address.", f"{path}.to.{j}.email"))
        elif address.lower() in seen:
            problems.append(
                _error(
                    "Each unique email address in the personalizations array should only be "
                    f"included once. You have included {address} more than once.",
                    f"{path}.to.{j}.email",
                )
            )
        seen.add(address.lower())
    if not (personalization.get("subject") or body.get("subject")):
        problems.append(
            _error(
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
                "subject",
            )
        )
    for name in ("custom_args", "headers"):
        for key, value in (personalization.get(name) or {}).items():
            if not isinstance(value, str):
                problems.append(
                    _error(
                        f"Invalid type. Expected: string, given: {type(value).__name__}.",
                        f"{path}.{name}.{key}",
                    )
                )
    return problems


def _content_problems(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list) or not content:
        return [
            _error(
                "Unless a valid template_id is provided, the content parameter is required. "
                "There must be at least one defined content block. We typically suggest both "
                "text/plain and text/html blocks are included, but only one block is required.",
                "content",
            )
        ]
    problems = []
    types = [block.get("type") if isinstance(block, dict) else None for block in content]
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not block.get("value"):
            problems.append(
                _error(
                    "The content value must be a string at least one character in length.",
                    f"content.{i}.value",
                )
            )
    if "text/plain" in types and types.index("text/plain") != 0:
        problems.append(
            _error(
                "If present, text/plain content must be first, followed by text/html, followed "
                "by any other content.",
                "content",
            )
        )
    return problems


def _error(message: str, field: str | None = None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": _HELP if field else None}


def _errors(status: int, errors: list[dict[str, Any]], **headers: str) -> Response:
    return Response.json({"errors": errors}, status, **headers)


def _token(data: bytes) -> str:
    """22 URL-safe base64 characters, the shape of SendGrid's message and event ids."""
    return base64.urlsafe_b64encode(data[:16]).decode().rstrip("=")


def _events_for(message: dict[str, Any]) -> list[dict[str, Any]]:
    key = MessageRef.from_metadata(message["custom_args"]).message_key or message["sg_message_id"]
    return [
        sendgrid_event(
            outcome.name,
            recipient=message["recipient"],
            sg_message_id=message["sg_message_id"],
            custom_args=message["custom_args"],
            occurred_at=outcome.occurred_at,
        )
        for outcome in outcomes(key, message["recipient"], message["accepted_at"])
    ]


def sendgrid_event(
    outcome: str,
    *,
    recipient: str,
    sg_message_id: str,
    custom_args: Mapping[str, str],
    occurred_at: datetime,
) -> dict[str, Any]:
    """One Event Webhook event reporting ``outcome`` (a sandbox outcome name).

    ``sg_event_id`` is derived from the message and outcome, so building the same event
    twice gives the same id, as a webhook retry does.
    """
    x_message_id = sg_message_id.split(".", 1)[0]
    return {
        # Custom args first: SendGrid's reserved keys win over custom args of the same name.
        **custom_args,
        "email": recipient,
        "timestamp": int(occurred_at.timestamp()),
        "smtp-id": f"<{x_message_id}@ismtpd-sim>",
        "category": [],
        "sg_event_id": _token(hashlib.sha256(f"{sg_message_id}|{outcome}".encode()).digest()),
        "sg_message_id": sg_message_id,
        **OUTCOME_EVENTS[outcome],
    }


def events_as_webhooks(
    sim: Simulator, *, api_key: str | None = None, events_per_post: int = 100
) -> list[bytes]:
    """The Event Webhook bodies (JSON arrays) of every event produced, or of one account's.

    Each SendGrid account posts its own webhook; give ``api_key`` to get one account's.
    """
    state = sim.store.get(PROVIDER, {"messages": [], "events": []})
    if api_key is None:
        events = state["events"]
    else:
        sender = key_id(api_key)
        events = [e for m in state["messages"] if m["key_id"] == sender for e in m["events"]]
    return [
        json.dumps(events[start : start + events_per_post]).encode()
        for start in range(0, len(events), events_per_post)
    ]


def generate_webhook_keys() -> tuple[str, str]:
    """A new signing key pair: (private key PEM, public key base64 DER as SendGrid shows it)."""
    private = ec.generate_private_key(ec.SECP256R1())
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, base64.b64encode(public_der).decode()


def webhook_request(
    event_payload: bytes | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    credentials: dict[str, str],
    *,
    timestamp: float | None = None,
    url: str = "/webhooks/sendgrid",
) -> WebhookRequest:
    """A request signed like SendGrid's Signed Event Webhook, carrying ``event_payload``.

    A body given as bytes is signed as it is; events (one, or a list) are posted as a
    JSON array. ``credentials["webhook_private_key"]`` is the PEM signing key.
    """
    if isinstance(event_payload, bytes):
        body = event_payload
    elif isinstance(event_payload, Mapping):
        body = json.dumps([dict(event_payload)]).encode()
    else:
        body = json.dumps([dict(event) for event in event_payload]).encode()
    sent_at = str(int(clock.epoch() if timestamp is None else timestamp))
    key = serialization.load_pem_private_key(
        credentials["webhook_private_key"].encode(), password=None
    )
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("webhook_private_key must be an ECDSA private key")
    signature = key.sign(sent_at.encode() + body, ec.ECDSA(hashes.SHA256()))
    return WebhookRequest(
        body=body,
        headers={
            "Content-Type": "application/json",
            SIGNATURE_HEADER: base64.b64encode(signature).decode(),
            TIMESTAMP_HEADER: sent_at,
        },
        url=url,
    )
