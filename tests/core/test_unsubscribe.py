"""Signed one-click unsubscribe tokens: round trip, tamper detection, link building."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from mailers.unsubscribe import UnsubscribeClaim, sign, unsubscribe_url, verify

KEY = "signing-key-for-tests"
CLAIM = UnsubscribeClaim(message_key="0123456789abcdef" * 2, workspace="acme", stream="lifecycle")


def forge_payload(claim: dict[str, str]) -> str:
    raw = json.dumps(claim, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_sign_then_verify_round_trips() -> None:
    token = sign(CLAIM, KEY)

    assert verify(token, KEY) == CLAIM


def test_token_is_url_safe_and_deterministic() -> None:
    token = sign(CLAIM, KEY)

    assert token == sign(CLAIM, KEY)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert token.count(".") == 1


def test_tokens_differ_per_claim() -> None:
    other = UnsubscribeClaim(CLAIM.message_key, CLAIM.workspace, "transactional")

    assert sign(other, KEY) != sign(CLAIM, KEY)


def test_tampered_payload_is_refused() -> None:
    _, signature = sign(CLAIM, KEY).split(".")
    forged = forge_payload({"k": CLAIM.message_key, "w": "globex", "s": "lifecycle"})

    with pytest.raises(ValueError, match="signature"):
        verify(f"{forged}.{signature}", KEY)


def test_tampered_signature_is_refused() -> None:
    payload, signature = sign(CLAIM, KEY).split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]

    with pytest.raises(ValueError):
        verify(f"{payload}.{flipped}", KEY)


def test_wrong_key_is_refused() -> None:
    with pytest.raises(ValueError):
        verify(sign(CLAIM, KEY), "another-key")


@pytest.mark.parametrize("token", ["", "no-dot-at-all", ".signature-only", "payload-only.", "."])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(ValueError):
        verify(token, KEY)


def test_non_ascii_token_is_refused_with_value_error() -> None:
    payload, _ = sign(CLAIM, KEY).split(".")

    with pytest.raises(ValueError):
        verify(f"{payload}.\u00e9t\u00e9", KEY)


def test_unsubscribe_url_carries_the_token_as_query_parameter() -> None:
    url = unsubscribe_url("https://unsubscribe.mailers.test/u", CLAIM, KEY)

    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "unsubscribe.mailers.test", "/u")
    assert parse_qs(parts.query) == {"token": [sign(CLAIM, KEY)]}
    assert verify(parse_qs(parts.query)["token"][0], KEY) == CLAIM


def test_unsubscribe_url_extends_an_existing_query_string() -> None:
    url = unsubscribe_url("https://example.test/unsub?list=weekly", CLAIM, KEY)

    query = parse_qs(urlsplit(url).query)
    assert url.count("?") == 1
    assert query == {"list": ["weekly"], "token": [sign(CLAIM, KEY)]}
