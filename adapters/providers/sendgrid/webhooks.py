"""Verifying SendGrid's Signed Event Webhook: an ECDSA signature, freshness, and replays.

The Event Webhook posts a JSON array of events, signed with ECDSA (P-256, SHA-256) over
``timestamp + raw body``, checked with the account's public verification key
(``credentials.webhook_public_key``).
https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
"""

from __future__ import annotations

import base64
import binascii
import functools

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from adapters.providers.sendgrid.settings import KIND, WEBHOOK_PUBLIC_KEY
from mailers.clock import epoch
from mailers.config import ProviderAccountConfig
from mailers.errors import ConfigError, WebhookRejected
from mailers.webhooks import ReplayGuard, WebhookRequest

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
WEBHOOK_TOLERANCE_SECONDS = 300
"""How far a webhook timestamp may be from now, either way, before it counts as stale."""

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
"""The order n of the P-256 group (FIPS 186-4, D.1.2.3), for low-s normalisation."""


def verify_webhook(
    request: WebhookRequest,
    config: ProviderAccountConfig,
    guard: ReplayGuard,
    *,
    now: float | None = None,
) -> None:
    """Check a Signed Event Webhook request; raise ``WebhookRejected`` saying why not.

    ECDSA P-256 / SHA-256 over the timestamp header's bytes followed by the raw body,
    signature base64 DER. Timestamps more than :data:`WEBHOOK_TOLERANCE_SECONDS` from
    ``now`` (Mailers' clock by default) and signatures accepted before are refused.
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
    key = _public_key(config.secret(WEBHOOK_PUBLIC_KEY, "SendGrid webhook verification"))
    try:
        key.verify(signature, timestamp_text.encode() + request.body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as err:
        raise WebhookRejected("signature does not match the body and timestamp") from err
    # (r, s) and (r, n - s) are both valid signatures of one body: key the guard on the
    # low-s form, so a re-encoded copy of a request is still recognised as a replay.
    token = f"{KIND}:{timestamp}:{r:x}:{min(s, _P256_ORDER - s):x}"
    if not guard.first_use(token, ttl_seconds=2 * WEBHOOK_TOLERANCE_SECONDS):
        raise WebhookRejected("replayed webhook: this signature was already accepted")


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
            f"credentials.{WEBHOOK_PUBLIC_KEY} is not a public key (base64 DER or PEM)"
        ) from err
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"credentials.{WEBHOOK_PUBLIC_KEY} is not an ECDSA P-256 key")
    return key
