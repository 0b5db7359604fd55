"""Verifying Mailgun webhooks: an HMAC of timestamp and token, freshness, and replays.

Webhooks post ``{"signature": {"timestamp", "token", "signature"}, "event-data": {...}}``.
Securing webhooks: https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/
securing-webhooks.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from pydantic import ValidationError

from adapters.providers.mailgun.settings import KIND, WEBHOOK_SIGNING_KEY, MailgunSettings
from mailers.clock import epoch
from mailers.config import ProviderAccountConfig
from mailers.errors import ConfigError, WebhookMalformed, WebhookRejected
from mailers.webhooks import ReplayGuard, WebhookRequest

WEBHOOK_MAX_AHEAD_SECONDS = 300
"""Webhook timestamps further in the future than this are refused (clock skew allowance)."""


def verify_webhook(
    request: WebhookRequest,
    config: ProviderAccountConfig,
    guard: ReplayGuard,
    *,
    now: float | None = None,
) -> None:
    """Refuse a forged, stale, replayed or malformed Mailgun webhook (``WebhookRejected``).

    HMAC-SHA256 of ``timestamp + token`` keyed with the webhook signing key, hex;
    ``parent-signature`` (sent for subaccount domains, signed with the primary account's
    key) is accepted too, so either key may be configured. Timestamps older than
    ``settings.webhook_max_age_seconds`` or more than :data:`WEBHOOK_MAX_AHEAD_SECONDS`
    ahead of ``now`` (Mailers' clock by default) are refused, and so are tokens seen before.
    """
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as err:
        raise WebhookMalformed("mailgun webhook: the body is not JSON") from err
    if not isinstance(body, dict) or not isinstance(body.get("event-data"), dict):
        raise WebhookMalformed("mailgun webhook: expected an object with 'event-data'")
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
    key = config.secret(WEBHOOK_SIGNING_KEY, "mailgun webhook verification")
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
        return MailgunSettings.model_validate(config.settings).webhook_max_age_seconds
    except ValidationError as err:  # not a ValueError for callers: the request is not at fault
        raise ConfigError(f"mailgun account settings are invalid: {err}") from None
