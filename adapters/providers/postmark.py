"""The Postmark provider: batch sends over the HTTP API, webhooks and the bounces API.

Sending
    ``POST /email/batch`` takes up to 500 messages per call and answers ``200`` with one
    result per message, in request order: ``ErrorCode`` 0 is accepted (with a
    ``MessageID``); any other code is a per-recipient refusal (406 inactive recipient,
    300 invalid email request, ...). Our :attr:`OutboundMessage.metadata` travels in
    Postmark ``Metadata`` (returned in every webhook) and our headers in ``Headers``.
    https://postmarkapp.com/developer/user-guide/send-email-with-api/batch-emails
    https://postmarkapp.com/developer/api/email-api

Webhooks
    Postmark signs nothing: a webhook is authenticated by HTTP basic credentials embedded
    in the webhook URL (``https://user:pass@host/path``), which arrive as an
    ``Authorization: Basic`` header. There is no timestamp, so nothing can be stale;
    a body seen twice within :data:`REPLAY_TTL_SECONDS` is refused as a replay.
    https://postmarkapp.com/developer/webhooks/webhooks-overview#protecting-your-webhook

Polling
    ``GET /bounces`` (newest first, ``count`` ≤ 500, ``count + offset`` ≤ 10,000,
    ``fromdate`` in US Eastern time) feeds :func:`poll_events` for accounts without a
    public webhook endpoint. Bounce records from the API carry no ``Metadata``, so polled
    events have a Postmark message id and a recipient but no message key.
    https://postmarkapp.com/developer/api/bounce-api
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from email.utils import formataddr
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import BaseModel, ConfigDict, Field

from adapters.providers.base import (
    Ambiguous,
    AuthFailed,
    BatchProvider,
    BatchRejected,
    Retryable,
    RetryPolicy,
)
from adapters.providers.http import call, make_client
from mailers import clock
from mailers.config import ProviderAccountConfig
from mailers.config import Settings as MailersSettings
from mailers.errors import (
    ProviderAuthError,
    ProviderUnavailable,
    WebhookRejected,
)
from mailers.events import BounceClass, CanonicalEvent, EventType, derive_event_id
from mailers.messages import OutboundMessage, SendResult
from mailers.webhooks import ReplayGuard, WebhookRequest

KIND = "postmark"
MAX_BATCH_SIZE = 500
"""``/email/batch`` accepts up to 500 messages per call (and 50 MB), see the batch page."""

DEFAULT_BASE_URL = "https://api.postmarkapp.com"

SERVER_TOKEN = "server_token"
WEBHOOK_USERNAME = "webhook_username"
WEBHOOK_PASSWORD = "webhook_password"
"""Credential keys (``credentials:`` in the account config; env var references only)."""

REPLAY_TTL_SECONDS = 50.0
"""How long an identical webhook body is refused as a replay. Shorter than Postmark's first
retry (1 minute after a failed post), so a genuine retry after a failed landing is never
refused; later duplicates are dropped by event id at ingestion.
https://postmarkapp.com/support/article/understanding-inbound-webhook-retries-in-postmark"""

BOUNCES_PAGE_LIMIT = 10_000
"""``count + offset`` cannot exceed 10,000 on ``GET /bounces`` (bounce API page)."""

POSTMARK_TIME_ZONE = "America/New_York"
"""Postmark's date filters (``fromdate``/``todate``) are in US Eastern time (bounce API)."""

_METADATA_DOMAIN_KEY = "mailers_domain"
"""Extra metadata key carrying the sending domain (Postmark keys are at most 20 chars:
https://postmarkapp.com/support/article/1125-custom-metadata-faq)."""

# --- mapping tables ---------------------------------------------------------------------

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

ACCOUNT_ERROR_CODES: dict[int, str] = {
    # API error codes: https://postmarkapp.com/developer/api/overview#error-codes
    10: "bad or missing server token",
    400: "sender signature not found",
    401: "sender signature not confirmed",
    405: "not allowed to send (check the account's credits)",
    412: "account is pending",
    413: "account may not send",
}
"""Postmark ``ErrorCode`` values that mean the account (not one message) cannot send."""

log = logging.getLogger(__name__)


class Settings(BaseModel):
    """Settings of a Postmark account (``settings:`` in the config). Secrets are credentials."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(default=DEFAULT_BASE_URL, description="Postmark API base URL.")
    timeout_seconds: float = Field(default=30.0, gt=0, description="Per-request timeout.")
    message_stream: str = Field(
        default="outbound",
        min_length=1,
        description="Postmark message stream ID to send through (and to poll bounces of).",
    )
    track_opens: bool | None = Field(
        default=None, description="TrackOpens per message; unset uses the server's default."
    )
    track_links: Literal["None", "HtmlAndText", "HtmlOnly", "TextOnly"] | None = Field(
        default=None, description="TrackLinks per message; unset uses the server's default."
    )
    poll_page_size: int = Field(
        default=500, ge=1, le=500, description="Bounces per GET /bounces page (max 500)."
    )
    poll_lookback_seconds: int = Field(
        default=900,
        ge=1,
        le=86_400,
        description="How far before the newest bounce seen each poll reads again, for "
        "bounces listed late with an earlier BouncedAt.",
    )


# --- sending ------------------------------------------------------------------------------


class PostmarkProvider(BatchProvider):
    """One Postmark server (server token), sending through ``POST /email/batch``."""

    kind = KIND

    def __init__(
        self,
        account: str,
        settings: Settings,
        server_token: str,
        *,
        max_batch_size: int = MAX_BATCH_SIZE,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            account,
            max_batch_size=min(max_batch_size, MAX_BATCH_SIZE),
            retry=retry,
            sleep=sleep,
        )
        self.settings = settings
        self._client = _client(settings, server_token, transport=transport)

    def close(self) -> None:
        """Close the pooled HTTP client (safe to call twice)."""
        self._client.close()
        super().close()

    def _send_request(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        body = json.dumps([self._payload(m) for m in messages]).encode()
        response = call(
            self._client,
            "POST",
            "/email/batch",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        if response.status_code >= 400:
            _raise_for_batch_status(response)
        results = _batch_results(response, messages)
        accepted = sum(r.accepted for r in results)
        log.debug(
            "postmark %s: batch of %d, %d accepted, %d refused",
            self.account,
            len(messages),
            accepted,
            len(messages) - accepted,
        )
        return results

    def _payload(self, message: OutboundMessage) -> dict[str, Any]:
        """One message in Postmark's JSON shape (email API page, "Send a single email")."""
        payload: dict[str, Any] = {
            "From": formataddr((message.from_name or "", message.from_address)),
            "To": message.recipient,
            "Subject": message.subject,
            "HtmlBody": message.html,
            "TextBody": message.text,
            "Tag": message.campaign,
            "Headers": [{"Name": name, "Value": value} for name, value in message.headers.items()],
            "Metadata": {**message.metadata, _METADATA_DOMAIN_KEY: message.sending_domain},
            "MessageStream": self.settings.message_stream,
        }
        if message.reply_to:
            payload["ReplyTo"] = message.reply_to
        if self.settings.track_opens is not None:
            payload["TrackOpens"] = self.settings.track_opens
        if self.settings.track_links is not None:
            payload["TrackLinks"] = self.settings.track_links
        return payload


def _client(
    settings: Settings, server_token: str, *, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    return make_client(
        settings.base_url,
        headers={"Accept": "application/json", "X-Postmark-Server-Token": server_token},
        timeout=httpx.Timeout(settings.timeout_seconds, connect=min(5.0, settings.timeout_seconds)),
        transport=transport,
    )


def _error_body(response: httpx.Response) -> tuple[int | None, str]:
    """``(ErrorCode, Message)`` of a Postmark error answer (``{ErrorCode, Message}``)."""
    try:
        data = response.json()
    except ValueError:
        return None, ""
    if not isinstance(data, dict):
        return None, ""
    code = data.get("ErrorCode")
    return (code if isinstance(code, int) else None), str(data.get("Message") or "")[:300]


def _raise_for_batch_status(response: httpx.Response) -> None:
    """A whole-call refusal (401/403/429/5xx were handled by ``call``)."""
    status = response.status_code
    code, text = _error_body(response)
    if code == 10:
        # Never echo the answer: it is about the token.
        raise AuthFailed("Postmark refused the server token (ErrorCode 10)")
    if code in ACCOUNT_ERROR_CODES:
        raise AuthFailed(f"Postmark refused the account: {ACCOUNT_ERROR_CODES[code]} ({code})")
    if status == 404:
        raise AuthFailed("Postmark answered 404 for /email/batch; check settings.base_url")
    # 422 with ErrorCode 300/402/403/410/411..., 413 payload too large: the call was refused
    # because of what is in it, so halving it isolates the bad entry.
    detail = f"ErrorCode {code}: {text}" if code is not None else response.reason_phrase
    raise BatchRejected(f"Postmark refused the batch ({status}, {detail})")


def _batch_results(
    response: httpx.Response, messages: Sequence[OutboundMessage]
) -> list[SendResult]:
    """Per-message results; the answer lists them in request order (batch page)."""
    try:
        items = response.json()
    except ValueError as err:
        raise Ambiguous("Postmark answered the batch with a body that is not JSON") from err
    if not isinstance(items, list) or len(items) != len(messages):
        raise Ambiguous(
            f"Postmark answered {len(messages)} messages with "
            f"{len(items) if isinstance(items, list) else 'no'} results"
        )
    results: list[SendResult] = []
    refusal_codes: set[int | None] = set()
    for message, item in zip(messages, items, strict=True):
        item = item if isinstance(item, dict) else {}
        code = item.get("ErrorCode")
        if code == 0:
            message_id = item.get("MessageID")
            results.append(
                SendResult(message.message_key, True, provider_message_id=message_id or None)
            )
            continue
        refusal_codes.add(code if isinstance(code, int) else None)
        text = str(item.get("Message") or "no message")[:300]
        results.append(
            SendResult(message.message_key, False, reason=f"Postmark ErrorCode {code}: {text}")
        )
    if (
        not any(r.accepted for r in results)
        and refusal_codes
        and refusal_codes.issubset(ACCOUNT_ERROR_CODES)
    ):
        # Every message refused for an account-level reason: the account cannot send; its
        # traffic should fail over rather than be marked rejected message by message.
        code = min(c for c in refusal_codes if c is not None)
        raise AuthFailed(f"Postmark refused the account: {ACCOUNT_ERROR_CODES[code]} ({code})")
    return results


def build(
    account: str,
    config: ProviderAccountConfig,
    settings: Settings,
    app: MailersSettings | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    retry: RetryPolicy | None = None,
) -> PostmarkProvider:
    """A Postmark account, its server token resolved from ``credentials.server_token``."""
    token = config.secret(SERVER_TOKEN, f"Postmark account {account!r}")
    return PostmarkProvider(
        account,
        settings,
        token,
        max_batch_size=config.batch_size or MAX_BATCH_SIZE,
        retry=retry,
        sleep=sleep,
    )


# --- parsing ------------------------------------------------------------------------------


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


def _eastern() -> timezone | ZoneInfo:
    """US Eastern time; without a time zone database, EST (UTC-5) all year round.

    EST is never later than Eastern time, so a ``fromdate`` computed with it starts at or
    before the intended moment: polling may re-read, never skip (re-reads are filtered).
    """
    try:
        return ZoneInfo(POSTMARK_TIME_ZONE)
    except ZoneInfoNotFoundError:
        return timezone(timedelta(hours=-5))


def _timestamp(value: object) -> datetime:
    """An ISO 8601 Postmark timestamp as an aware datetime (naive ones are US Eastern)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected an ISO 8601 timestamp, got {value!r}")
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=_eastern())


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


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
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
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


def _click_url(data: Mapping[str, Any], record: str) -> str | None:
    link = data.get("OriginalLink") if record == "Click" else None
    return str(link) if link else None


def _domain(address: object) -> str | None:
    if not isinstance(address, str) or "@" not in address:
        return None
    return address.rsplit("@", 1)[1].strip(" >").lower() or None


def parse(payload: bytes, account: str) -> list[CanonicalEvent]:
    """Canonical events from one landed Postmark payload (a webhook body or a polled bounce).

    Unmapped record or bounce types become ``unknown`` with the raw payload kept; a
    payload that is not a JSON object raises ``ValueError``.
    """
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    record = _record_type(data)
    event_type, bounce_class = classify(data)
    field = TIMESTAMP_FIELDS.get(record)
    raw_when = data.get(field) if field else None
    if raw_when is None and event_type is EventType.UNKNOWN:
        raw_when = next((data[f] for f in TIMESTAMP_FIELDS.values() if data.get(f)), None)
    if raw_when is None and event_type is EventType.UNKNOWN:
        occurred = clock.now()  # nothing says when; the id stays stable regardless
    else:
        occurred = _timestamp(raw_when)
    metadata = data.get("Metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    message_id = data.get("MessageID") or data.get("MessageId")  # Delivery uses both spellings
    recipient = data.get("Recipient") or data.get("Email")

    def meta(key: str) -> str | None:
        value = metadata.get(key)
        return str(value) if value not in (None, "") else None

    return [
        CanonicalEvent(
            event_id=_event_id(data, record, str(message_id or ""), str(raw_when or "")),
            event_type=event_type,
            bounce_class=bounce_class,
            occurred_at=_naive_utc(occurred),
            provider=KIND,
            provider_account=account,
            provider_message_id=str(message_id) if message_id else None,
            message_key=meta("mailers_message_key"),
            workspace=meta("mailers_workspace"),
            stream=meta("mailers_stream"),
            campaign=meta("mailers_campaign"),
            recipient=str(recipient) if recipient else None,
            sending_domain=meta(_METADATA_DOMAIN_KEY) or _domain(data.get("From")),
            reason=_reason(data, record),
            url=str(data["OriginalLink"])
            if record == "Click" and data.get("OriginalLink")
            else None,
            raw_payload=json.dumps(data),
        )
    ]


# --- webhooks -----------------------------------------------------------------------------


def _basic_credentials(header: str | None) -> tuple[bytes, bytes] | None:
    """``(username, password)`` from an ``Authorization: Basic`` header, if well formed."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    username, separator, password = decoded.partition(b":")
    if not separator:
        return None
    return username, password


def verify_webhook(
    request: WebhookRequest,
    config: ProviderAccountConfig,
    guard: ReplayGuard,
    *,
    now: float | None = None,
) -> None:
    """Refuse a Postmark webhook without the account's basic-auth credentials, or replayed.

    Postmark posts JSON with the credentials embedded in the registered webhook URL, sent
    as ``Authorization: Basic``; both are compared in constant time. Postmark sends no
    timestamp (``now`` is accepted for the common signature and unused), so an identical
    body within :data:`REPLAY_TTL_SECONDS` is refused instead.
    """
    del now  # no timestamp to check against
    used_for = "Postmark webhook verification"
    expected_user = config.secret(WEBHOOK_USERNAME, used_for).encode()
    expected_password = config.secret(WEBHOOK_PASSWORD, used_for).encode()
    if request.method.upper() != "POST":
        raise WebhookRejected(f"Postmark webhooks are POSTs, got {request.method}")
    given = _basic_credentials(request.header("Authorization"))
    if given is None:
        raise WebhookRejected("missing or malformed Authorization: Basic header")
    user_ok = hmac.compare_digest(given[0], expected_user)
    password_ok = hmac.compare_digest(given[1], expected_password)
    if not (user_ok and password_ok):
        raise WebhookRejected("webhook credentials do not match the account's")
    try:
        data = json.loads(request.body)
    except ValueError as err:
        raise WebhookRejected("webhook body is not JSON") from err
    if not isinstance(data, dict):
        raise WebhookRejected("webhook body is not a JSON object")
    token = f"{KIND}:body:{hashlib.sha256(request.body).hexdigest()}"
    if not guard.first_use(token, ttl_seconds=REPLAY_TTL_SECONDS):
        raise WebhookRejected("replayed webhook: the same body was accepted moments ago")


# --- polling ------------------------------------------------------------------------------


class _Cursor(BaseModel):
    """Where polling stopped: the newest ``BouncedAt`` seen, and the IDs of the bounces
    within the look-back window before it (read already; the next poll reads them again)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: datetime
    ids: list[int | str] = Field(default_factory=list)

    def dump(self) -> str:
        return json.dumps(
            {"since": self.since.isoformat(), "ids": sorted(self.ids, key=str)},
            separators=(",", ":"),
        )


def _fromdate(moment: datetime) -> str:
    """``fromdate`` for a moment: US Eastern wall time, whole seconds, rounded down."""
    return moment.astimezone(_eastern()).replace(microsecond=0, tzinfo=None).isoformat()


def poll_events(
    account: str,
    config: ProviderAccountConfig,
    settings: Settings,
    cursor: str | None,
) -> tuple[list[bytes], str | None]:
    """New bounces (and spam complaints) from ``GET /bounces`` since ``cursor``.

    Returns each new bounce as one JSON payload (oldest first) and the cursor after them;
    the same cursor when nothing is new. Each poll re-reads the last
    ``poll_lookback_seconds`` before the newest bounce seen, so a bounce listed late with
    an earlier ``BouncedAt`` is still found; the cursor keeps the IDs of that window so
    nothing is returned twice. One poll reads at most 10,000 bounces (Postmark's search
    limit); poll more often than that many arrive.
    """
    previous = _parse_cursor(account, cursor)
    lookback = timedelta(seconds=settings.poll_lookback_seconds)
    token = config.secret(SERVER_TOKEN, f"Postmark account {account!r}")
    with _client(settings, token) as client:
        start = previous.since - lookback if previous else None
        fetched = _fetch_bounces(account, client, settings, start)
    seen = set(previous.ids) if previous else set()
    new: dict[int | str, tuple[datetime, dict[str, Any]]] = {}
    for bounced_at, bounce_id, item in fetched:
        if start is not None and (bounced_at < start or bounce_id in seen):
            continue  # read by an earlier poll (or before the window: assumed read)
        new[bounce_id] = (bounced_at, item)
    times = [t for t, _, _ in fetched] + ([previous.since] if previous else [])
    if not times:
        return [], cursor
    since = max(times)
    window = {i for t, i, _ in fetched if t >= since - lookback}
    next_cursor = _Cursor(since=since, ids=sorted(window, key=str)).dump()
    ordered = sorted(new.items(), key=lambda kv: (kv[1][0], str(kv[0])))
    payloads = [json.dumps(item).encode() for _, (_, item) in ordered]
    log.debug("postmark %s: polled %d new bounces", account, len(payloads))
    return payloads, next_cursor


def _parse_cursor(account: str, cursor: str | None) -> _Cursor | None:
    if not cursor:
        return None
    try:
        parsed = _Cursor.model_validate_json(cursor)
    except ValueError as err:
        raise ProviderUnavailable(
            account, "the stored poll cursor is not a Postmark bounces cursor; remove it to re-poll"
        ) from err
    if parsed.since.tzinfo is None:
        parsed = _Cursor(since=parsed.since.replace(tzinfo=UTC), ids=parsed.ids)
    return parsed


def _fetch_bounces(
    account: str, client: httpx.Client, settings: Settings, start: datetime | None
) -> list[tuple[datetime, int | str, dict[str, Any]]]:
    """Every bounce from ``start`` on (newest first), paging up to the 10,000 limit."""
    count = settings.poll_page_size
    params: dict[str, str | int] = {"count": count, "messagestream": settings.message_stream}
    if start is not None:
        params["fromdate"] = _fromdate(start)
    fetched: list[tuple[datetime, int | str, dict[str, Any]]] = []
    offset = 0
    while offset + count <= BOUNCES_PAGE_LIMIT:
        page = _get_json(account, client, "/bounces", {**params, "offset": offset})
        bounces = page.get("Bounces") if isinstance(page, dict) else None
        if not isinstance(bounces, list):
            raise ProviderUnavailable(account, "GET /bounces answered without a Bounces list")
        for item in bounces:
            try:
                bounced_at = _timestamp(item.get("BouncedAt")).astimezone(UTC)
                bounce_id = item["ID"]
            except (AttributeError, KeyError, ValueError):
                log.warning("postmark %s: skipped a bounce without ID or BouncedAt", account)
                continue
            fetched.append((bounced_at, bounce_id, item))
        if len(bounces) < count:
            break
        offset += count
    else:
        log.warning(
            "postmark %s: more than %d bounces since the cursor; older ones were not read",
            account,
            BOUNCES_PAGE_LIMIT,
        )
    return fetched


def _get_json(account: str, client: httpx.Client, path: str, params: Mapping[str, Any]) -> Any:
    """GET and decode JSON; failures become the errors pollers report per account."""
    try:
        response = call(client, "GET", path, params=dict(params))
    except AuthFailed as err:
        raise ProviderAuthError(account, str(err)) from err
    except (Retryable, Ambiguous) as err:  # a read: safe to try again next poll
        raise ProviderUnavailable(account, f"GET {path}: {err}") from err
    if response.status_code >= 400:
        code, text = _error_body(response)
        if code == 10:
            raise ProviderAuthError(account, "Postmark refused the server token (ErrorCode 10)")
        raise ProviderUnavailable(
            account, f"GET {path} answered {response.status_code} (ErrorCode {code}: {text})"
        )
    try:
        return response.json()
    except ValueError as err:
        raise ProviderUnavailable(account, f"GET {path} answered a body that is not JSON") from err
