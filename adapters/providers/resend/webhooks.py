"""Verifying Resend webhooks: Svix (Standard Webhooks) signatures, freshness, and replays.

Resend signs through Svix: ``svix-id``, ``svix-timestamp`` (Unix seconds) and
``svix-signature`` headers (Standard Webhooks names them ``webhook-*``; both are read).
The signature is base64 HMAC-SHA256 over ``{id}.{timestamp}.{raw body}``, keyed with the
base64 secret after its ``whsec_`` prefix; the header lists space-separated
``v1,<signature>`` entries (several while a secret is rotated), any one of which matching
is enough.
https://resend.com/docs/webhooks/verify-webhooks-requests
https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from adapters.providers.resend.settings import KIND, WEBHOOK_SECRET
from mailers.clock import epoch
from mailers.config import ProviderAccountConfig
from mailers.errors import ConfigError, WebhookMalformed, WebhookRejected
from mailers.webhooks import ReplayGuard, WebhookRequest

ID_HEADERS = ("svix-id", "webhook-id")
TIMESTAMP_HEADERS = ("svix-timestamp", "webhook-timestamp")
SIGNATURE_HEADERS = ("svix-signature", "webhook-signature")
SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"

WEBHOOK_TOLERANCE_SECONDS = 300
"""How far ``svix-timestamp`` may be from now, either way (Svix's and Resend's SDKs: 5 min)."""

REPLAY_TTL_SECONDS = 2 * WEBHOOK_TOLERANCE_SECONDS
"""How long an accepted (``svix-id``, ``svix-timestamp``) pair is refused again.

Resend re-sends a webhook whose landing failed with the same ``svix-id`` but a new
timestamp and signature, the first time 5 seconds later (retries and replays page), so
refusing the id alone would refuse that genuine retry: Postmark's way out, a TTL shorter
than the first retry, leaves nothing here. The guard keys on the signed pair instead, as
SendGrid's does on its signature: a copy of an accepted request is refused for as long as
its timestamp is fresh (the tolerance either way), and stale after that; a retry carries
a new timestamp and is verified like any request. Duplicates that do land are dropped by
event id at ingestion. https://resend.com/docs/webhooks/retries-and-replays"""


def verify_webhook(
    request: WebhookRequest,
    config: ProviderAccountConfig,
    guard: ReplayGuard,
    *,
    now: float | None = None,
) -> None:
    """Refuse a forged, stale, replayed or malformed Resend webhook (``WebhookRejected``).

    Checks the Svix signature with ``credentials.webhook_secret`` (constant-time), a
    timestamp within :data:`WEBHOOK_TOLERANCE_SECONDS` of ``now`` (Mailers' clock by
    default), a JSON object body, and, last, that the id and timestamp were not accepted
    before (:data:`REPLAY_TTL_SECONDS`), so a forged request cannot use up a genuine one.
    """
    message_id = _header(request, ID_HEADERS)
    timestamp_text = _header(request, TIMESTAMP_HEADERS)
    signatures = _header(request, SIGNATURE_HEADERS)
    if not message_id or not timestamp_text or not signatures:
        raise WebhookRejected("resend webhook: missing svix-id, svix-timestamp or svix-signature")
    try:
        timestamp = int(timestamp_text.strip())
    except ValueError as err:
        raise WebhookRejected("resend webhook: svix-timestamp is not Unix seconds") from err
    age = (epoch() if now is None else now) - timestamp
    if abs(age) > WEBHOOK_TOLERANCE_SECONDS:
        when = "old" if age > 0 else "in the future"
        raise WebhookRejected(
            f"resend webhook: signed {abs(age):.0f} s {when} "
            f"(tolerance {WEBHOOK_TOLERANCE_SECONDS} s)"
        )
    key = signing_key(config.secret(WEBHOOK_SECRET, "Resend webhook verification"))
    expected = signature(key, message_id, timestamp_text.strip(), request.body).encode()
    offered = [entry.partition(",") for entry in signatures.split()]
    if not any(
        version == SIGNATURE_VERSION and hmac.compare_digest(expected, given.encode())
        for version, _, given in offered
    ):
        raise WebhookRejected("resend webhook: no v1 signature matches the body")
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as err:
        raise WebhookMalformed("resend webhook: the body is not JSON") from err
    if not isinstance(body, dict):
        raise WebhookMalformed("resend webhook: the body is not a JSON object")
    if not guard.first_use(f"{KIND}:{message_id}:{timestamp}", ttl_seconds=REPLAY_TTL_SECONDS):
        raise WebhookRejected("resend webhook: this svix-id and timestamp were already accepted")


def signature(key: bytes, message_id: str, timestamp: str, body: bytes) -> str:
    """The base64 ``v1`` signature of one delivery (what follows ``v1,`` in the header)."""
    content = f"{message_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional)."""
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ConfigError(
            f"credentials.{WEBHOOK_SECRET} is not a Resend signing secret ({SECRET_PREFIX}...)"
        ) from err
    if not key:
        raise ConfigError(f"credentials.{WEBHOOK_SECRET} is empty")
    return key


def _header(request: WebhookRequest, names: tuple[str, ...]) -> str | None:
    return next((value for name in names if (value := request.header(name))), None)
