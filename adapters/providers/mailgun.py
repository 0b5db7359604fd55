"""Mailgun: the HTTP messages API for sending, signed JSON webhooks and the events API.

Sending
-------
``POST /v3/{domain}/messages`` (form fields, sent as ``multipart/form-data``) with HTTP
basic auth ``api:<api key>``. Mailgun's own batch path (several ``to`` fields plus a
``recipient-variables`` JSON, at most 1,000 recipients per call) substitutes
``%recipient.x%`` into *one* subject/body template and gives the whole call *one*
message id. Our messages are rendered one by one (subject, HTML, text, the signed
``List-Unsubscribe`` header and ``X-Mailers-Message-Key`` all differ per recipient), and
each needs its own provider message id to be matched with its events. Squeezing them
into a template would mean shipping every rendered body as a recipient variable and
relying on undocumented substitution in ``h:`` headers, so this adapter does not batch
at the HTTP level: **each message is one API call** over the account's pooled keep-alive
client, ``concurrency`` calls in flight at a time. ``MAX_BATCH_SIZE`` stays Mailgun's
documented per-call recipient limit (1,000, enforced by the simulator too) and is how
many messages the core hands over per ``send_batch``.

Per message: ``200`` → accepted with Mailgun's ``id`` (angle brackets stripped, the way
events carry it in ``message.headers.message-id``); ``400``/``402``/``413`` → that message
is rejected with Mailgun's ``message``; ``404`` (unknown domain, e.g. an EU domain on the
US base URL) and ``401``/``403`` → the account is refused; ``429``, ``503`` with
``Retry-After`` and connect failures are retried for that message alone; a timeout after
the request was sent, a dropped connection or another ``5xx`` leaves that message alone in
doubt. Each call is its own request in the shared flow (:mod:`adapters.providers.base`),
which records it before it leaves and keeps every other call's outcome.

Every message carries our metadata as ``v:`` custom variables (they come back in every
event under ``user-variables``) and our headers as ``h:`` fields.

Events
------
Webhooks post ``{"signature": {"timestamp", "token", "signature"}, "event-data": {...}}``;
:func:`verify_webhook` checks the HMAC-SHA256 (key: the webhook signing key; message:
timestamp + token), refuses timestamps more than five minutes off and tokens seen before.
:func:`poll_events` follows the events API's ``paging.next`` URLs (ascending, no end:
Mailgun documents that the URL of the empty last page returns what was written since);
that URL is the cursor. :func:`parse` accepts a webhook body or one polled item.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import formataddr, parseaddr
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adapters.providers.base import (
    Ambiguous,
    AuthFailed,
    BatchProvider,
    BatchRejected,
    Retryable,
    RetryPolicy,
)
from adapters.providers.http import call, make_client
from mailers.clock import epoch
from mailers.config import ProviderAccountConfig
from mailers.config import Settings as MailersSettings
from mailers.errors import (
    ConfigError,
    ProviderAuthError,
    ProviderUnavailable,
    WebhookRejected,
)
from mailers.events import BounceClass, CanonicalEvent, EventType, derive_event_id
from mailers.messages import OutboundMessage, SendResult
from mailers.webhooks import ReplayGuard, WebhookRequest

log = logging.getLogger(__name__)

KIND = "mailgun"
MAX_BATCH_SIZE = 1000
"""Mailgun's documented maximum number of recipients per sending call ("Batch Sending":
https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/batch-sending)."""

API_KEY = "api_key"
"""Credential key of the API key (basic auth ``api:<key>``; sending and the events API)."""
WEBHOOK_SIGNING_KEY = "webhook_signing_key"
"""Credential key of the HTTP webhook signing key (Control Panel → Webhooks)."""

EVENT_TYPES: dict[str, tuple[EventType, BounceClass | None]] = {
    "delivered": (EventType.DELIVERED, None),
    "rejected": (EventType.REJECTED, None),
    "opened": (EventType.OPENED, None),
    "clicked": (EventType.CLICKED, None),
    "unsubscribed": (EventType.UNSUBSCRIBED, None),
    "complained": (EventType.COMPLAINED, None),
}
"""Mailgun event name → canonical (type, bounce class), for every event but ``failed``.

``accepted`` (Mailgun queued the message) and ``stored`` (inbound) are deliberately absent:
they are not delivery outcomes and the canonical vocabulary has no word for them, so they
become ``unknown`` with the raw event kept. Event list:
https://documentation.mailgun.com/docs/mailgun/user-manual/events/event-types
"""

FAILED_BY_REASON: dict[str, tuple[EventType, BounceClass | None]] = {
    # "Too old" (delivery-status code 602): Mailgun retried temporary failures for 8 hours
    # and gave up. The address was never shown not to exist: a soft bounce. Historically
    # sent with severity "temporary", now "permanent"; the reason decides either way.
    # https://help.mailgun.com/hc/en-us/articles/28956111811355-Will-Mailgun-retry-my-failed-messages
    "old": (EventType.BOUNCED, BounceClass.SOFT),
    # Dropped without trying because the address is on a suppression list: a bounce list
    # entry is a past hard bounce; unsubscribes and complaints are not bounces.
    # https://documentation.mailgun.com/docs/mailgun/user-manual/tracking-messages/tracking-failures
    "suppress-bounce": (EventType.BOUNCED, BounceClass.HARD),
    "suppress-unsubscribe": (EventType.FAILED, None),
    "suppress-complaint": (EventType.FAILED, None),
}
"""``failed`` events whose ``reason`` decides the canonical type (checked first)."""

FAILED_BY_SEVERITY: dict[str, tuple[EventType, BounceClass | None]] = {
    # Permanent failures are not retried: Mailgun counts them as hard bounces.
    "permanent": (EventType.BOUNCED, BounceClass.HARD),
    # Temporary failures are retried by Mailgun (10 min, 15 min, ... for 8 hours).
    "temporary": (EventType.DEFERRED, None),
}
"""Other ``failed`` events by ``severity``; without one they are ``failed``."""

WEBHOOK_MAX_AGE_SECONDS = 300
"""Default for ``settings.webhook_max_age_seconds``: older webhook timestamps are refused.

Mailgun calls the freshness check optional and warns that webhook delivery can be delayed
("you don't want to be too aggressive with this check"); raise the setting if genuine
webhooks are refused as stale (the replay guard then remembers tokens that much longer).
"""
WEBHOOK_MAX_AHEAD_SECONDS = 300
"""Webhook timestamps further in the future than this are refused (clock skew allowance)."""

POLLED_EVENTS = "delivered OR failed OR rejected OR opened OR clicked OR unsubscribed OR complained"
"""The ``event`` filter expression of polls: every event type that maps to an outcome."""

_LOOPBACK_HOSTS = {"localhost"}


class Settings(BaseModel):
    """Settings of a Mailgun account (``settings:`` in the config). Secrets go in credentials."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str = Field(
        max_length=253,
        pattern=r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$",
        description="The Mailgun sending domain, e.g. 'mg.example.com'.",
    )
    base_url: str = Field(
        default="https://api.mailgun.net",
        description="https://api.mailgun.net (US) or https://api.eu.mailgun.net (EU).",
    )
    timeout_seconds: float = Field(default=30, gt=0, le=300)
    concurrency: int = Field(
        default=4, ge=1, le=8, description="API calls in flight at once (pool holds 8)."
    )
    test_mode: bool = Field(
        default=False, description="Send with o:testmode=yes: Mailgun accepts, never delivers."
    )
    poll_lookback_seconds: int = Field(
        default=86_400, gt=0, description="Where the first poll (no cursor yet) begins."
    )
    poll_page_size: int = Field(default=300, ge=1, le=300, description="Events API limit (≤300).")
    poll_max_pages: int = Field(default=20, ge=1, description="Pages fetched per poll at most.")
    webhook_max_age_seconds: int = Field(
        default=WEBHOOK_MAX_AGE_SECONDS,
        ge=30,
        le=86_400,
        description="Webhooks signed longer ago than this are refused as stale.",
    )

    @field_validator("base_url")
    @classmethod
    def _https_unless_loopback(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://api.mailgun.net")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must be the API host only, without a path (the /v3 is added)")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError("plain http is allowed for a loopback simulator only; use https")
        return value.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _timeout(settings: Settings) -> httpx.Timeout:
    return httpx.Timeout(settings.timeout_seconds, connect=min(5.0, settings.timeout_seconds))


class MailgunProvider(BatchProvider):
    """One Mailgun account (API key + sending domain): one API call per message."""

    kind = KIND

    def __init__(
        self,
        account: str,
        settings: Settings,
        api_key: str,
        *,
        max_batch_size: int = MAX_BATCH_SIZE,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            account,
            max_batch_size=max_batch_size,
            retry=retry,
            sleep=sleep,
            request_size=1,
            concurrency=settings.concurrency,
        )
        self.settings = settings
        self._client = make_client(
            settings.base_url,
            auth=("api", api_key),
            timeout=_timeout(settings),
            transport=transport,
        )
        self._path = f"/v3/{quote(settings.domain, safe='')}/messages"

    def close(self) -> None:
        """Close the pooled HTTP client (safe to call twice)."""
        self._client.close()
        super().close()

    def _send_request(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        return [self._send_one(message) for message in messages]

    def _send_one(self, message: OutboundMessage) -> SendResult:
        """One ``POST /v3/{domain}/messages``; failures raise the base class's hook errors."""
        body, content_type = _multipart(_form_fields(message, self.settings))
        response = call(
            self._client,
            "POST",
            self._path,
            content=body,
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
        status = response.status_code
        if status == 200:
            return SendResult(
                message.message_key, accepted=True, provider_message_id=_message_id(response)
            )
        detail = _error_message(response)
        if status == 404:
            # "Not Found - The requested item doesn't exist": the domain is not on this
            # account or region (https://documentation.mailgun.com/docs/mailgun/api-reference/).
            raise AuthFailed(
                f"Mailgun answered 404 for domain {self.settings.domain!r} ({detail}); check "
                "settings.domain and settings.base_url (US api.mailgun.net vs EU "
                "api.eu.mailgun.net)"
            )
        if 400 <= status < 500:
            # 400 "Bad Request", 402 "Request Failed - Parameters were valid but request
            # failed", 413 too large: about this message, which is the whole call.
            raise BatchRejected(f"mailgun {status}: {detail}")
        raise Ambiguous(f"mailgun answered an unexpected status {status}: {detail}")


def _form_fields(message: OutboundMessage, settings: Settings) -> list[tuple[str, str]]:
    """The form fields of one message (https://documentation.mailgun.com/docs/mailgun/
    api-reference/send/mailgun/messages/post-v3--domain-name--messages)."""
    fields = [
        ("from", formataddr((message.from_name or "", message.from_address))),
        ("to", message.recipient),
        ("subject", message.subject),
    ]
    # At least one of text/html is required; send whichever the template produced.
    if message.text:
        fields.append(("text", message.text))
    if message.html:
        fields.append(("html", message.html))
    if message.reply_to:
        fields.append(("h:Reply-To", message.reply_to))
    # "h:" prefix: a custom MIME header; "v:" prefix: a custom variable, returned in every
    # event of the message under "user-variables".
    fields.extend((f"h:{name}", value) for name, value in message.headers.items())
    fields.extend((f"v:{name}", value) for name, value in message.metadata.items())
    if settings.test_mode:
        fields.append(("o:testmode", "yes"))
    return fields


def _multipart(fields: Sequence[tuple[str, str]]) -> tuple[bytes, str]:
    """``multipart/form-data`` encoding of text fields (repeated names allowed)."""
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in fields:
        safe_name = (
            name.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "")
        )
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{safe_name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _message_id(response: httpx.Response) -> str | None:
    """Mailgun's ``id`` without the angle brackets (events carry it without them)."""
    try:
        payload = response.json()
    except ValueError:
        log.warning("mailgun accepted a message but its answer was not JSON")
        return None
    value = payload.get("id") if isinstance(payload, dict) else None
    return value.strip().strip("<>") if isinstance(value, str) and value.strip() else None


def _error_message(response: httpx.Response) -> str:
    """Mailgun's ``{"message": ...}`` error text, or a short excerpt of the body."""
    try:
        payload = response.json()
    except ValueError:
        return response.text[:200].strip() or "no details"
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        return str(payload["message"])
    return json.dumps(payload)[:200]


# --- building and credentials ------------------------------------------------------------


def _secret(config: ProviderAccountConfig, key: str, owner: str) -> str:
    ref = config.credentials.get(key)
    if ref is None:
        raise ConfigError(f"{owner}: credentials.{key} is missing (give it as {{env: NAME}})")
    return ref.resolve(f"{owner} (credentials.{key})")


def build(
    account: str, config: ProviderAccountConfig, settings: Settings, app: MailersSettings
) -> MailgunProvider:
    """A Mailgun account; ``batch_size`` above :data:`MAX_BATCH_SIZE` is capped to it."""
    api_key = _secret(config, API_KEY, f"mailgun account {account!r}")
    size = min(config.batch_size or MAX_BATCH_SIZE, MAX_BATCH_SIZE)
    return MailgunProvider(account, settings, api_key, max_batch_size=size)


# --- webhooks ----------------------------------------------------------------------------


def verify_webhook(
    request: WebhookRequest,
    config: ProviderAccountConfig,
    guard: ReplayGuard,
    *,
    now: float | None = None,
) -> None:
    """Refuse a forged, stale, replayed or malformed Mailgun webhook (``WebhookRejected``).

    Securing webhooks: https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/
    securing-webhooks. HMAC-SHA256 of ``timestamp + token`` keyed with the webhook signing
    key, hex; ``parent-signature`` (sent for subaccount domains, signed with the primary
    account's key) is accepted too, so either key may be configured.
    """
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as err:
        raise WebhookRejected("mailgun webhook: the body is not JSON") from err
    if not isinstance(body, dict) or not isinstance(body.get("event-data"), dict):
        raise WebhookRejected("mailgun webhook: expected an object with 'event-data'")
    signature = body.get("signature")
    if not isinstance(signature, dict):
        raise WebhookRejected("mailgun webhook: the 'signature' object is missing")
    timestamp, token = signature.get("timestamp"), signature.get("token")
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp)
    if not isinstance(timestamp, str) or not timestamp.isdigit() or len(timestamp) > 12:
        raise WebhookRejected("mailgun webhook: signature.timestamp is not epoch seconds")
    if not isinstance(token, str) or not token or len(token) > 256:
        raise WebhookRejected("mailgun webhook: signature.token is missing")
    max_age = _webhook_max_age(config)
    moment = epoch() if now is None else now
    age = moment - int(timestamp)
    if age > max_age:
        raise WebhookRejected(f"mailgun webhook: signed {age:.0f} s ago, which is too old")
    if -age > WEBHOOK_MAX_AHEAD_SECONDS:
        raise WebhookRejected(f"mailgun webhook: signed {-age:.0f} s in the future")
    key = _secret(config, WEBHOOK_SIGNING_KEY, "mailgun webhook verification")
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    offered = [signature.get("signature"), signature.get("parent-signature")]
    if not any(
        isinstance(value, str) and hmac.compare_digest(expected.encode(), value.lower().encode())
        for value in offered
    ):
        raise WebhookRejected("mailgun webhook: the signature does not match")
    # Checked last, so forged requests cannot use up a genuine token.
    ttl = max_age + WEBHOOK_MAX_AHEAD_SECONDS
    if not guard.first_use(f"{KIND}:{token}", ttl_seconds=ttl):
        raise WebhookRejected("mailgun webhook: this token was already used (replay)")


def _webhook_max_age(config: ProviderAccountConfig) -> int:
    try:
        return Settings.model_validate(config.settings).webhook_max_age_seconds
    except ValidationError as err:  # not a ValueError for callers: the request is not at fault
        raise ConfigError(f"mailgun account settings are invalid: {err}") from None


# --- parsing -----------------------------------------------------------------------------


def parse(payload: bytes, account: str) -> list[CanonicalEvent]:
    """Canonical events from a Mailgun webhook body or one polled events-API item.

    Event structure: https://documentation.mailgun.com/docs/mailgun/user-manual/events/
    event-structure (``event`` and ``timestamp`` are always there; ``id`` is "unique within
    a day", so the event id is ``mailgun:<UTC day>:<id>``, stable across webhook retries
    and polls of the same event).
    """
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    event = data.get("event-data", data)
    if not isinstance(event, dict):
        raise ValueError("'event-data' is not an object")
    occurred = _occurred_at(event.get("timestamp"))
    name = event.get("event")
    event_type, bounce_class = _classify(event)
    headers = _dict(_dict(event.get("message")).get("headers"))
    message_id = _text(headers.get("message-id"))
    if message_id:
        message_id = message_id.strip("<>")
    recipient = _text(event.get("recipient"))
    variables = _dict(event.get("user-variables"))
    raw_id = event.get("id")
    if isinstance(raw_id, str) and raw_id:
        event_id = f"{KIND}:{occurred:%Y%m%d}:{raw_id}"
    else:
        event_id = derive_event_id(
            KIND, str(name), repr(event.get("timestamp")), recipient or "", message_id or ""
        )
    return [
        CanonicalEvent(
            event_id=event_id,
            event_type=event_type,
            bounce_class=bounce_class,
            occurred_at=occurred,
            provider=KIND,
            provider_account=account,
            provider_message_id=message_id,
            message_key=_text(variables.get("mailers_message_key")),
            workspace=_text(variables.get("mailers_workspace")),
            stream=_text(variables.get("mailers_stream")),
            campaign=_text(variables.get("mailers_campaign")),
            recipient=recipient,
            sending_domain=_domain_of(_text(headers.get("from"))),
            reason=_reason(event, event_type),
            url=_text(event.get("url")) if name == "clicked" else None,
            raw_payload=json.dumps(event),
        )
    ]


def _classify(event: dict[str, Any]) -> tuple[EventType, BounceClass | None]:
    name = event.get("event")
    if name == "failed":
        reason, severity = event.get("reason"), event.get("severity")
        if isinstance(reason, str) and reason in FAILED_BY_REASON:
            return FAILED_BY_REASON[reason]
        if isinstance(severity, str) and severity in FAILED_BY_SEVERITY:
            return FAILED_BY_SEVERITY[severity]
        return EventType.FAILED, None
    if isinstance(name, str):
        return EVENT_TYPES.get(name, (EventType.UNKNOWN, None))
    return EventType.UNKNOWN, None


def _occurred_at(value: Any) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("the event has no numeric 'timestamp'")
    try:
        seconds = float(value)
    except ValueError as err:
        raise ValueError(f"the event timestamp {value!r} is not epoch seconds") from err
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


def _reason(event: dict[str, Any], event_type: EventType) -> str | None:
    name = event.get("event")
    if name == "failed":
        status = _dict(event.get("delivery-status"))
        code = status.get("code")
        text = _text(status.get("message")) or _text(status.get("description"))
        parts = [str(code) if code not in (None, "", 0) else None, text]
        detail = " ".join(p for p in parts if p)
        tags = "/".join(t for t in (_text(event.get("severity")), _text(event.get("reason"))) if t)
        if detail and tags:
            return f"{detail} ({tags})"
        return detail or tags or "delivery failed"
    if name == "rejected":
        reject = _dict(event.get("reject"))
        parts = [_text(reject.get("reason")), _text(reject.get("description"))]
        return ": ".join(p for p in parts if p) or "rejected by Mailgun"
    if event_type is EventType.COMPLAINED:
        return "the recipient reported the message as spam (feedback loop)"
    return None


def _domain_of(address: str | None) -> str | None:
    if not address:
        return None
    _, email = parseaddr(address)
    return email.rsplit("@", 1)[1].lower() if "@" in email else None


def _dict(value: Any) -> dict[str, Any]:
    """An object field, or ``{}`` (``user-variables`` is sometimes an empty list)."""
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value)
    return text or None


# --- polling -----------------------------------------------------------------------------


def poll_events(
    account: str, config: ProviderAccountConfig, settings: Settings, cursor: str | None
) -> tuple[list[bytes], str | None]:
    """New events since ``cursor`` (one JSON item per payload) and the cursor after them.

    Events API (https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/
    events): ``GET /v3/{domain}/events?begin=..&ascending=yes&limit=..`` then the
    ``paging.next`` URLs until an empty page. Without an end the ascending range keeps
    growing, and the URL that returned the empty page returns what was written since: it
    is the cursor (unchanged when nothing is new). Mailgun marks this API as superseded by
    its Logs API; webhooks are the primary path, polling is the backstop.
    """
    api_key = _secret(config, API_KEY, f"mailgun account {account!r}")
    origin = _origin(settings.base_url)
    if cursor is None:
        query = {
            "begin": str(int(epoch()) - settings.poll_lookback_seconds),
            "ascending": "yes",
            "limit": str(settings.poll_page_size),
            "event": POLLED_EVENTS,
        }
        url = f"{settings.base_url}/v3/{quote(settings.domain, safe='')}/events?{urlencode(query)}"
    else:
        url = _same_origin(account, cursor, origin, "the stored cursor")
    payloads: list[bytes] = []
    with make_client(
        settings.base_url, auth=("api", api_key), timeout=_timeout(settings)
    ) as client:
        for _ in range(settings.poll_max_pages):
            items, next_url = _events_page(client, account, url)
            if not items:
                return payloads, url
            payloads.extend(json.dumps(item).encode() for item in items)
            url = _same_origin(account, next_url, origin, "paging.next")
    return payloads, url


def _events_page(client: httpx.Client, account: str, url: str) -> tuple[list[Any], str]:
    try:
        response = call(client, "GET", url, headers={"Accept": "application/json"})
    except AuthFailed as err:
        raise ProviderAuthError(account, f"events API: {err}") from err
    except (Retryable, Ambiguous) as err:
        raise ProviderUnavailable(account, f"events API: {err}") from err
    if response.status_code != 200:
        raise ProviderUnavailable(
            account, f"events API answered {response.status_code}: {_error_message(response)}"
        )
    try:
        page = response.json()
    except ValueError as err:
        raise ProviderUnavailable(account, "events API answered with non-JSON") from err
    items = page.get("items") if isinstance(page, dict) else None
    next_url = _dict(page.get("paging")).get("next") if isinstance(page, dict) else None
    if not isinstance(items, list) or (items and not isinstance(next_url, str)):
        raise ProviderUnavailable(account, "events API page without 'items' and 'paging.next'")
    return items, next_url or url


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _same_origin(account: str, url: str, origin: tuple[str, str], what: str) -> str:
    """Follow only URLs on the configured API host: the API key goes with every request."""
    if _origin(url) != origin:
        raise ProviderUnavailable(
            account,
            f"{what} points at {_origin(url)[1] or 'no host'}, not settings.base_url's host "
            f"{origin[1]}; refusing to send the API key there (delete the stored cursor if "
            "base_url changed)",
        )
    return url
