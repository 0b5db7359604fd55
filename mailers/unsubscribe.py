"""Signed one-click unsubscribe links (RFC 8058).

The link carries a compact token ``payload.signature``: the payload is the message key,
workspace and stream (and, for links signed since tokens expire, the expiry ``e`` in Unix
seconds), as base64url JSON; the signature is HMAC-SHA256 of the payload under the
workspace-independent signing key. The unsubscribe page (:mod:`adapters.serve.unsubscribe`)
verifies it and lands an ``unsubscribed`` event (:mod:`mailers.unsubscribe_landing`).

:func:`verify` tells three refusals apart (see :mod:`mailers.errors`): a token that is not
one of ours in shape (:class:`TokenMalformed`), one whose signature does not match
(:class:`TokenTampered`) and a genuine one past its expiry (:class:`TokenExpired`). Tokens
signed before expiry existed carry no ``e`` and never expire.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from urllib.parse import urlencode

from mailers import clock
from mailers.errors import TokenExpired, TokenMalformed, TokenTampered

LIST_UNSUBSCRIBE_POST = "List-Unsubscribe=One-Click"

MAX_TOKEN_LENGTH = 2048
"""Longer than any token we sign (keys and names are short): refused before decoding."""

_SIGNATURE_BYTES = hashlib.sha256().digest_size


@dataclass(frozen=True)
class UnsubscribeClaim:
    """What a valid token says: unsubscribe this message's recipient from this stream."""

    message_key: str
    workspace: str
    stream: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict base64url without padding; ``ValueError`` on anything else."""
    if not text.isascii() or "=" in text:
        raise ValueError("not unpadded base64url")
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded, altchars=b"-_", validate=True)


def _signature(key: str, payload: str) -> str:
    return _b64(hmac.new(key.encode(), payload.encode(), hashlib.sha256).digest())


def link_expiry(ttl_days: int | None, at: datetime | None = None) -> datetime | None:
    """When a link signed at ``at`` (default: now) expires: midnight UTC ``ttl_days + 1``
    days after that day's, so it works for at least ``ttl_days`` days and every message
    rendered on one UTC day (a retried render included) gets the same link. ``None``:
    links that never expire."""
    if ttl_days is None:
        return None
    day = (at or clock.now()).astimezone(UTC).date()
    return datetime.combine(day + timedelta(days=ttl_days + 1), time(), tzinfo=UTC)


def sign(claim: UnsubscribeClaim, key: str, expires_at: datetime | None = None) -> str:
    """A URL-safe token for ``claim``, valid until ``expires_at`` (whole seconds; ``None``:
    forever)."""
    fields: dict[str, str | int] = {"k": claim.message_key, "w": claim.workspace, "s": claim.stream}
    if expires_at is not None:
        fields["e"] = int(expires_at.timestamp())
    payload = _b64(json.dumps(fields, separators=(",", ":")).encode())
    return f"{payload}.{_signature(key, payload)}"


def _decode(token: str) -> tuple[str, str, UnsubscribeClaim, datetime | None]:
    """The token's parts, claim and expiry, read before the signature is checked (so a
    mangled link is told apart from a forged one); :class:`TokenMalformed` otherwise."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenMalformed(f"malformed unsubscribe token: longer than {MAX_TOKEN_LENGTH}")
    payload, dot, signature = token.partition(".")
    if not dot or not payload or not signature:
        raise TokenMalformed("malformed unsubscribe token: expected payload.signature")
    try:
        if len(_unb64(signature)) != _SIGNATURE_BYTES:
            raise ValueError("wrong signature length")
        data = json.loads(_unb64(payload))
        fields = (data["k"], data["w"], data["s"])
        expiry = data.get("e")
    except (ValueError, KeyError, TypeError, binascii.Error) as err:
        raise TokenMalformed(f"malformed unsubscribe token: {err}") from err
    if not all(isinstance(f, str) and f for f in fields):
        raise TokenMalformed("malformed unsubscribe token: empty or non-text claim")
    if expiry is not None and (not isinstance(expiry, int) or isinstance(expiry, bool)):
        raise TokenMalformed("malformed unsubscribe token: expiry is not Unix seconds")
    try:
        expires_at = None if expiry is None else datetime.fromtimestamp(expiry, UTC)
    except (OverflowError, OSError, ValueError) as err:
        raise TokenMalformed("malformed unsubscribe token: expiry out of range") from err
    return payload, signature, UnsubscribeClaim(*fields), expires_at


def verify_token(token: str, key: str) -> tuple[UnsubscribeClaim, datetime | None]:
    """The claim in ``token`` and when the token expires (``None``: never), checked against
    Mailers' clock; raises :class:`TokenMalformed`, :class:`TokenTampered` or
    :class:`TokenExpired`."""
    payload, signature, claim, expires_at = _decode(token)
    # Compare bytes: the signature is ASCII already (decoded above), the key's digest too.
    if not hmac.compare_digest(signature.encode(), _signature(key, payload).encode()):
        raise TokenTampered(
            "unsubscribe token signature does not match (altered, or signed with another key)"
        )
    if expires_at is not None and clock.now() >= expires_at:
        raise TokenExpired(
            f"unsubscribe token expired at {expires_at:%Y-%m-%dT%H:%M:%SZ}", expires_at
        )
    return claim, expires_at


def verify(token: str, key: str) -> UnsubscribeClaim:
    """The claim in ``token``; see :func:`verify_token` for what it refuses."""
    return verify_token(token, key)[0]


def unsubscribe_url(
    base_url: str, claim: UnsubscribeClaim, key: str, expires_at: datetime | None = None
) -> str:
    """The per-recipient link put in ``List-Unsubscribe`` and offered to templates."""
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}{urlencode({'token': sign(claim, key, expires_at)})}"
