"""Standard Webhooks signatures (https://www.standardwebhooks.com, "Signature scheme").

Each request carries ``webhook-id`` (the message id, the same on every retry and replay of
one message, so receivers dedupe), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed by the
base64-decoded secret (``whsec_<base64>``). While a subscriber rotates its secret, several
secrets are configured and every signature is sent, space-separated, current first.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

from mailers.errors import ConfigError

SECRET_PREFIX = "whsec_"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def secret_key(secret: str, where: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; the error names ``where``, never the value."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ConfigError(
            f"{where}: not a Standard Webhooks secret (expected whsec_ and base64)"
        ) from err
    if len(key) < 16:
        raise ConfigError(f"{where}: the secret decodes to fewer than 16 bytes")
    return key


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of the signed content ``id.timestamp.body``."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(keys: Sequence[bytes], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The request headers: id, timestamp and one signature per key (space-separated)."""
    if not keys:
        raise ValueError("at least one signing key is needed")
    return {
        ID_HEADER: webhook_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: " ".join(signature(k, webhook_id, timestamp, body) for k in keys),
        "content-type": "application/json",
    }
