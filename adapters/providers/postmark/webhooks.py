"""Verifying Postmark webhooks: basic-auth credentials in the webhook URL, and replays.

Postmark signs nothing: a webhook is authenticated by HTTP basic credentials embedded in
the webhook URL (``https://user:pass@host/path``), which arrive as an
``Authorization: Basic`` header. There is no timestamp, so nothing can be stale; a body
seen twice within :data:`REPLAY_TTL_SECONDS` is refused as a replay.
https://postmarkapp.com/developer/webhooks/webhooks-overview#protecting-your-webhook
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from adapters.providers.postmark.settings import KIND, WEBHOOK_PASSWORD, WEBHOOK_USERNAME
from mailers.config import ProviderAccountConfig
from mailers.errors import WebhookMalformed, WebhookRejected
from mailers.webhooks import ReplayGuard, WebhookRequest

REPLAY_TTL_SECONDS = 50.0
"""How long an identical webhook body is refused as a replay. Shorter than Postmark's first
retry (1 minute after a failed post), so a genuine retry after a failed landing is never
refused; later duplicates are dropped by event id at ingestion.
https://postmarkapp.com/support/article/understanding-inbound-webhook-retries-in-postmark"""


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
) -> None:
    """Refuse a Postmark webhook without the account's basic-auth credentials, or replayed.

    Postmark posts JSON with the credentials embedded in the registered webhook URL, sent
    as ``Authorization: Basic``; both are compared in constant time. Postmark sends no
    timestamp, so an identical body within :data:`REPLAY_TTL_SECONDS` is refused instead.
    """
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
        raise WebhookMalformed("webhook body is not JSON") from err
    if not isinstance(data, dict):
        raise WebhookMalformed("webhook body is not a JSON object")
    token = f"{KIND}:body:{hashlib.sha256(request.body).hexdigest()}"
    if not guard.first_use(token, ttl_seconds=REPLAY_TTL_SECONDS):
        raise WebhookRejected("replayed webhook: the same body was accepted moments ago")
