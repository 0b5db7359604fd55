"""Signed one-click unsubscribe links (RFC 8058).

The link carries a compact token: the message key, workspace and stream, signed with
HMAC-SHA256 under the workspace-independent signing key. The receiver (a later issue)
verifies the signature and turns a valid POST into an ``unsubscribed`` event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import urlencode

LIST_UNSUBSCRIBE_POST = "List-Unsubscribe=One-Click"


@dataclass(frozen=True)
class UnsubscribeClaim:
    """What a valid token says: unsubscribe this message's recipient from this stream."""

    message_key: str
    workspace: str
    stream: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(key: str, payload: str) -> str:
    return _b64(hmac.new(key.encode(), payload.encode(), hashlib.sha256).digest())


def sign(claim: UnsubscribeClaim, key: str) -> str:
    """A URL-safe token for ``claim``: ``payload.signature``."""
    payload = _b64(
        json.dumps(
            {"k": claim.message_key, "w": claim.workspace, "s": claim.stream},
            separators=(",", ":"),
        ).encode()
    )
    return f"{payload}.{_signature(key, payload)}"


def verify(token: str, key: str) -> UnsubscribeClaim:
    """The claim in ``token``; raises ``ValueError`` if it is malformed or forged."""
    payload, _, signature = token.partition(".")
    if not payload or not signature:
        raise ValueError("malformed unsubscribe token")
    # Compare bytes: compare_digest refuses non-ASCII str, and a token is untrusted input.
    expected = _signature(key, payload).encode()
    if not hmac.compare_digest(signature.encode("utf-8", "replace"), expected):
        raise ValueError("unsubscribe token signature does not match")
    try:
        data = json.loads(_unb64(payload))
        return UnsubscribeClaim(message_key=data["k"], workspace=data["w"], stream=data["s"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError("malformed unsubscribe token") from err


def unsubscribe_url(base_url: str, claim: UnsubscribeClaim, key: str) -> str:
    """The per-recipient link put in ``List-Unsubscribe`` and offered to templates."""
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}{urlencode({'token': sign(claim, key)})}"
