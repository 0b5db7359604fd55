"""Signed one-click unsubscribe tokens: round trip, tamper detection, expiry, link building."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from mailers.clock import FixedClock
from mailers.errors import TokenExpired, TokenMalformed, TokenTampered
from mailers.unsubscribe import (
    UnsubscribeClaim,
    link_expiry,
    sign,
    unsubscribe_url,
    verify,
    verify_token,
)

KEY = "signing-key-for-tests"
CLAIM = UnsubscribeClaim(message_key="0123456789abcdef" * 2, workspace="acme", stream="lifecycle")


def forge_payload(claim: dict[str, str]) -> str:
    raw = json.dumps(claim, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def signed(payload: str) -> str:
    """``payload`` signed under ``KEY`` as the signer does: tokens the signer never makes."""
    digest = hmac.new(KEY.encode(), payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"


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

    with pytest.raises(TokenTampered, match="signature"):
        verify(f"{forged}.{signature}", KEY)


def test_tampered_signature_is_refused() -> None:
    payload, signature = sign(CLAIM, KEY).split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]

    with pytest.raises(TokenTampered):
        verify(f"{payload}.{flipped}", KEY)


def test_wrong_key_is_refused() -> None:
    with pytest.raises(TokenTampered):
        verify(sign(CLAIM, KEY), "another-key")


@pytest.mark.parametrize("token", ["", "no-dot-at-all", ".signature-only", "payload-only.", "."])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(TokenMalformed):
        verify(token, KEY)


def test_non_ascii_token_is_refused_with_value_error() -> None:
    payload, _ = sign(CLAIM, KEY).split(".")

    with pytest.raises(TokenMalformed) as refused:
        verify(f"{payload}.\u00e9t\u00e9", KEY)
    assert isinstance(refused.value, ValueError), "callers that catch ValueError still do"


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


def test_a_truncated_link_is_malformed_not_tampered() -> None:
    token = sign(CLAIM, KEY, datetime(2030, 1, 1, tzinfo=UTC))

    with pytest.raises(TokenMalformed):
        verify(token[:-5], KEY)
    with pytest.raises(TokenMalformed):
        verify(token[:20] + "." + token.split(".")[1], KEY)


def test_signed_garbage_is_malformed() -> None:
    payload = forge_payload({"k": "", "w": "acme", "s": "lifecycle"})

    with pytest.raises(TokenMalformed, match="empty"):
        verify(signed(payload), KEY)


def test_a_token_works_until_its_expiry_and_not_after(fixed_clock: FixedClock) -> None:
    expires = fixed_clock.now().replace(microsecond=0) + timedelta(days=30)
    token = sign(CLAIM, KEY, expires)

    assert verify_token(token, KEY) == (CLAIM, expires)
    fixed_clock.set(expires - timedelta(seconds=1))
    assert verify(token, KEY) == CLAIM
    fixed_clock.set(expires)
    with pytest.raises(TokenExpired, match="expired at") as refused:
        verify(token, KEY)
    assert refused.value.expired_at == expires and refused.value.problem == "expired"


def test_an_expired_token_with_a_wrong_signature_is_tampered(fixed_clock: FixedClock) -> None:
    token = sign(CLAIM, KEY, fixed_clock.now() - timedelta(days=1))

    with pytest.raises(TokenTampered):
        verify(token, "another-key")


def test_tokens_signed_before_expiry_existed_never_expire(fixed_clock: FixedClock) -> None:
    legacy = forge_payload({"k": CLAIM.message_key, "w": CLAIM.workspace, "s": CLAIM.stream})
    token = signed(legacy)
    fixed_clock.advance(10 * 365 * 86400)

    assert verify_token(token, KEY) == (CLAIM, None)


@pytest.mark.parametrize("expiry", ['"2030-01-01"', "1.5", "true", "99999999999999999999"])
def test_an_expiry_that_is_not_unix_seconds_is_malformed(expiry: str) -> None:
    raw = f'{{"k":"{CLAIM.message_key}","w":"acme","s":"lifecycle","e":{expiry}}}'.encode()
    payload = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    with pytest.raises(TokenMalformed, match="expiry"):
        verify(signed(payload), KEY)


def test_link_expiry_gives_at_least_the_ttl_and_one_link_per_day() -> None:
    morning = datetime(2026, 12, 3, 0, 0, 1, tzinfo=UTC)
    night = datetime(2026, 12, 3, 23, 59, 59, tzinfo=UTC)

    assert link_expiry(365, morning) == link_expiry(365, night)
    assert link_expiry(365, night) - night >= timedelta(days=365)  # type: ignore[operator]
    assert link_expiry(None, night) is None
