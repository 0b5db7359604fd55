"""The SendGrid provider: v3 Mail Send out, the signed Event Webhook back in.

Sending
    ``POST /v3/mail/send`` with ``Authorization: Bearer <api key>``; SendGrid answers
    ``202 Accepted`` with one ``X-Message-Id`` header for the whole request.

    A request carries up to 1,000 *personalizations* (one per message here: ``to``,
    ``subject``, ``headers``, ``custom_args``) but only ONE ``content`` (and one ``from`` /
    ``reply_to``) shared by all of them. Mailers renders every message individually, so
    :meth:`SendGridProvider._requests` groups a batch by (from, reply-to, text, html): the
    messages of a group go in one request, a personalization each; different contents go
    in separate requests. Templates that put anything per-recipient in the body (a name, the
    signed unsubscribe link) therefore cost one request per message: that is what the API
    allows, stated plainly rather than hidden. Folding the body into per-personalization
    ``substitutions`` was rejected: they are capped at 10,000 bytes per personalization,
    and substituting whole bodies would make SendGrid rewrite our HTML.

    Each request is one :meth:`~SendGridProvider._send_request` of the shared base class
    (:mod:`adapters.providers.base`), so retries, the ``Retry-After`` wait and the halving
    on a ``400`` for one bad entry (``BatchRejected``) apply per request, each half keeps
    its own outcome, and a later request that fails never changes what an earlier one of
    the batch got accepted.

Matching events back
    Every personalization carries ``message.metadata`` in ``custom_args`` (SendGrid returns
    them as top-level keys of every event) and ``message.headers`` (with
    ``X-Mailers-Message-Key``) as email headers. The per-message provider id is
    ``<X-Message-Id>:<message key>``: unique per message, and rebuilt by :func:`parse` from
    the event's ``sg_message_id`` (whose first ``.``-separated part is the request's
    ``X-Message-Id``) and its ``mailers_message_key``. The verbatim ``sg_message_id`` stays
    in ``raw_payload``.

Events
    The Event Webhook posts a JSON array of events, signed with ECDSA (P-256, SHA-256) over
    ``timestamp + raw body``; :func:`verify_webhook` checks it with the account's public
    verification key, refuses timestamps more than 5 minutes off and replays. SendGrid has
    no events pull API on the free tier (the Email Activity Feed API is a paid add-on and
    returns messages, not events), so this module has no ``poll_events``.

Credentials (``credentials:``): ``api_key`` (sending) and ``webhook_public_key`` (the
Signed Event Webhook verification key, base64 DER as SendGrid shows it, or PEM).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pydantic import BaseModel, ConfigDict, Field

from adapters.providers.base import (
    AuthFailed,
    BatchProvider,
    BatchRejected,
    RetryPolicy,
)
from adapters.providers.http import call, make_client
from mailers.clock import epoch, utcnow
from mailers.config import ProviderAccountConfig
from mailers.config import Settings as MailersSettings
from mailers.errors import ConfigError, WebhookRejected
from mailers.events import BounceClass, CanonicalEvent, EventType, derive_event_id
from mailers.messages import MESSAGE_KEY_HEADER, OutboundMessage, SendResult
from mailers.webhooks import ReplayGuard, WebhookRequest

KIND = "sendgrid"
MAX_BATCH_SIZE = 1000
"""Personalizations per request (https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors)."""

DEFAULT_BASE_URL = "https://api.sendgrid.com"
SEND_PATH = "/v3/mail/send"
API_KEY_CREDENTIAL = "api_key"
WEBHOOK_KEY_CREDENTIAL = "webhook_public_key"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
WEBHOOK_TOLERANCE_SECONDS = 300
"""How far a webhook timestamp may be from now, either way, before it counts as stale."""

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
"""SendGrid ``event`` → canonical (type, bounce class); anything else maps to ``unknown``.

https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event
"""

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

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
"""The order n of the P-256 group (FIPS 186-4, D.1.2.3), for low-s normalisation."""

_COMPLAINT_REASON = "SendGrid spamreport: the recipient marked the message as spam"

log = logging.getLogger(__name__)


class Settings(BaseModel):
    """Settings of a SendGrid account (``settings:`` in the config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="API base; https://api.eu.sendgrid.com for EU regional subusers.",
    )
    timeout_seconds: float = Field(default=30, gt=0)
    ip_pool_name: str | None = Field(
        default=None, description="Send from this IP pool (the account's default if unset)."
    )
    open_tracking: bool | None = Field(
        default=None, description="Override the account's open tracking (None: keep it)."
    )
    click_tracking: bool | None = Field(
        default=None, description="Override the account's click tracking (None: keep it)."
    )


def provider_message_id(x_message_id: str, message_key: str) -> str:
    """Our per-message id: the request's ``X-Message-Id`` and the message key."""
    return f"{x_message_id}:{message_key}"


_ContentKey = tuple[str, str | None, str | None, str, str]


def _content_key(message: OutboundMessage) -> _ContentKey:
    """What the messages of one request must share (everything outside a personalization)."""
    return (message.from_address, message.from_name, message.reply_to, message.text, message.html)


def _request_groups(
    messages: Sequence[OutboundMessage], max_size: int
) -> list[list[OutboundMessage]]:
    """Messages grouped into requests: same content, at most ``max_size``, each address once.

    SendGrid refuses a request naming one address in two personalizations, so a repeated
    recipient goes to the next request of its content group.
    """
    groups: dict[_ContentKey, list[tuple[list[OutboundMessage], set[str]]]] = {}
    for message in messages:
        address = message.recipient.lower()
        requests = groups.setdefault(_content_key(message), [])
        for members, addresses in requests:
            if len(members) < max_size and address not in addresses:
                members.append(message)
                addresses.add(address)
                break
        else:
            requests.append(([message], {address}))
    return [members for requests in groups.values() for members, _ in requests]


class SendGridProvider(BatchProvider):
    """One SendGrid account: a pooled HTTP client and the v3 Mail Send endpoint."""

    kind = KIND

    def __init__(
        self,
        account: str,
        settings: Settings,
        *,
        api_key: str,
        max_batch_size: int = MAX_BATCH_SIZE,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(account, max_batch_size=max_batch_size, retry=retry, sleep=sleep)
        self.settings = settings
        self._client = make_client(
            settings.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(
                settings.timeout_seconds, connect=min(5.0, settings.timeout_seconds)
            ),
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()
        super().close()

    def _requests(self, messages: Sequence[OutboundMessage]) -> list[Sequence[OutboundMessage]]:
        """One request per content group; see the module docstring."""
        return list(_request_groups(messages, self.max_batch_size))

    def _send_request(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        if len({_content_key(m) for m in messages}) != 1:
            raise ValueError("one SendGrid request carries one content: group messages first")
        log.debug(
            "SendGrid %s: POST %s, %d personalizations", self.account, SEND_PATH, len(messages)
        )
        response = call(self._client, "POST", SEND_PATH, json=self._request_body(messages))
        status = response.status_code
        if 200 <= status < 300:
            x_message_id = response.headers.get("X-Message-Id")
            if not x_message_id:
                log.warning("SendGrid %s accepted a request without an X-Message-Id", self.account)
            return [
                SendResult(
                    m.message_key,
                    accepted=True,
                    provider_message_id=(
                        provider_message_id(x_message_id, m.message_key) if x_message_id else None
                    ),
                )
                for m in messages
            ]
        if status in (400, 413):
            # 400 names the offending field (e.g. personalizations.3.to.0.email); 413 is a
            # request over 30 MB. Either way halving isolates the entry responsible.
            # https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors
            raise BatchRejected(f"SendGrid refused the request ({status}): {_errors(response)}")
        raise AuthFailed(
            f"SendGrid answered {status} to {SEND_PATH}: {_errors(response)}; "
            "check the account's base_url and API key permissions (Mail Send)"
        )

    def _request_body(self, messages: Sequence[OutboundMessage]) -> dict[str, Any]:
        first = messages[0]
        sender: dict[str, str] = {"email": first.from_address}
        if first.from_name:
            sender["name"] = first.from_name
        # text/plain must come before text/html, and no content value may be empty.
        # https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send
        content = [
            {"type": kind, "value": value}
            for kind, value in (("text/plain", first.text), ("text/html", first.html))
            if value
        ]
        body: dict[str, Any] = {
            "personalizations": [
                {
                    "to": [{"email": m.recipient}],
                    "subject": m.subject,
                    "headers": {MESSAGE_KEY_HEADER: m.message_key, **m.headers},
                    # custom_args come back as top-level keys of every event of the message.
                    "custom_args": m.metadata,
                }
                for m in messages
            ],
            "from": sender,
            "content": content,
        }
        if first.reply_to:
            body["reply_to"] = {"email": first.reply_to}
        if self.settings.ip_pool_name:
            body["ip_pool_name"] = self.settings.ip_pool_name
        tracking = {
            name: {"enable": enabled}
            for name, enabled in (
                ("open_tracking", self.settings.open_tracking),
                ("click_tracking", self.settings.click_tracking),
            )
            if enabled is not None
        }
        if tracking:
            body["tracking_settings"] = tracking
        return body


def _errors(response: httpx.Response) -> str:
    """SendGrid's ``{"errors": [{"field", "message"}]}`` as one line of text."""
    try:
        errors = response.json().get("errors") or []
        text = "; ".join(
            f"{e['field']}: {e.get('message')}" if e.get("field") else str(e.get("message"))
            for e in errors
            if isinstance(e, dict)
        )
    except (ValueError, AttributeError):
        text = ""
    return (text or response.text.strip() or response.reason_phrase)[:500]


def build(
    account: str, config: ProviderAccountConfig, settings: Settings, app: MailersSettings
) -> SendGridProvider:
    """A SendGrid account with its API key resolved from the environment."""
    batch_size = config.batch_size or MAX_BATCH_SIZE
    if batch_size > MAX_BATCH_SIZE:
        raise ConfigError(
            f"provider account {account!r}: batch_size {batch_size} exceeds SendGrid's "
            f"{MAX_BATCH_SIZE} personalizations per request"
        )
    api_key = config.secret(API_KEY_CREDENTIAL, f"provider account {account!r} (kind {KIND})")
    return SendGridProvider(account, settings, api_key=api_key, max_batch_size=batch_size)


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
    key = _text(element.get("mailers_message_key"))
    return CanonicalEvent(
        # sg_event_id is SendGrid's id for deduplication; it survives webhook retries.
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
        provider_message_id=_provider_message_id(element, key),
        message_key=key,
        workspace=_text(element.get("mailers_workspace")),
        stream=_text(element.get("mailers_stream")),
        campaign=_text(element.get("mailers_campaign")),
        recipient=_text(element.get("email")),
        reason=_reason(name, element),
        url=_text(element.get("url")) if event_type is EventType.CLICKED else None,
        raw_payload=raw,
    )


def _bounce_class(element: Mapping[str, Any]) -> BounceClass:
    classification = BOUNCE_CLASSIFICATIONS.get(str(element.get("bounce_classification")))
    return classification or BOUNCE_TYPES.get(str(element.get("type")), BounceClass.HARD)


def _provider_message_id(element: Mapping[str, Any], key: str | None) -> str | None:
    # sg_message_id is "<X-Message-Id>.<filter>.<...>"; it is missing for asynchronous
    # bounces. https://www.twilio.com/docs/sendgrid/glossary/x-message-id
    sg_message_id = _text(element.get("sg_message_id"))
    if sg_message_id and key:
        return provider_message_id(sg_message_id.split(".", 1)[0], key)
    return sg_message_id


def _reason(name: str, element: Mapping[str, Any]) -> str | None:
    if name == "spamreport":
        return _COMPLAINT_REASON
    field = _REASON_FIELDS.get(name)
    text = _text(element.get(field)) if field else None
    classification = _text(element.get("bounce_classification"))
    if text and classification:
        return f"{text} ({classification})"
    return text or classification


def _occurred_at(timestamp: Any) -> datetime:
    """Unix seconds (SendGrid sends an integer; some legacy events a string) as naive UTC."""
    try:
        return datetime.fromtimestamp(float(timestamp), UTC).replace(tzinfo=None)
    except (TypeError, ValueError, OverflowError, OSError):
        return utcnow()


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def verify_webhook(
    request: WebhookRequest,
    config: ProviderAccountConfig,
    guard: ReplayGuard,
    *,
    now: float | None = None,
) -> None:
    """Check a Signed Event Webhook request; raise ``WebhookRejected`` saying why not.

    ECDSA P-256 / SHA-256 over the timestamp header's bytes followed by the raw body,
    signature base64 DER. https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
    """
    signature_text = request.header(SIGNATURE_HEADER)
    timestamp_text = request.header(TIMESTAMP_HEADER)
    if not signature_text or not timestamp_text:
        raise WebhookRejected(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header")
    try:
        timestamp = int(timestamp_text.strip())
    except ValueError as err:
        raise WebhookRejected(f"{TIMESTAMP_HEADER} is not a Unix timestamp") from err
    current = epoch() if now is None else now
    if abs(current - timestamp) > WEBHOOK_TOLERANCE_SECONDS:
        raise WebhookRejected(
            f"stale webhook: timestamp is {current - timestamp:.0f}s from now "
            f"(tolerance {WEBHOOK_TOLERANCE_SECONDS}s)"
        )
    try:
        signature = base64.b64decode(signature_text.strip(), validate=True)
        r, s = decode_dss_signature(signature)
    except (binascii.Error, ValueError) as err:
        raise WebhookRejected(f"{SIGNATURE_HEADER} is not a base64 DER signature") from err
    key = _public_key(_webhook_key_text(config))
    try:
        key.verify(signature, timestamp_text.encode() + request.body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as err:
        raise WebhookRejected("signature does not match the body and timestamp") from err
    # (r, s) and (r, n - s) are both valid signatures of one body: key the guard on the
    # low-s form, so a re-encoded copy of a request is still recognised as a replay.
    token = f"{KIND}:{timestamp}:{r:x}:{min(s, _P256_ORDER - s):x}"
    if not guard.first_use(token, ttl_seconds=2 * WEBHOOK_TOLERANCE_SECONDS):
        raise WebhookRejected("replayed webhook: this signature was already accepted")


def _webhook_key_text(config: ProviderAccountConfig) -> str:
    return config.secret(WEBHOOK_KEY_CREDENTIAL, "SendGrid webhook verification")


@functools.lru_cache(maxsize=16)
def _public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key from base64 DER (as SendGrid shows it) or PEM; P-256 only."""
    try:
        if "BEGIN PUBLIC KEY" in text:
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode("".join(text.split())))
    except (ValueError, binascii.Error, TypeError) as err:
        raise ConfigError(
            f"credentials.{WEBHOOK_KEY_CREDENTIAL} is not a public key (base64 DER or PEM)"
        ) from err
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"credentials.{WEBHOOK_KEY_CREDENTIAL} is not an ECDSA P-256 key")
    return key
