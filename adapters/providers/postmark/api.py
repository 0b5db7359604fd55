"""The Postmark API client of one account, and how Postmark words its errors."""

from __future__ import annotations

import httpx

from adapters.providers.http import ApiClient
from adapters.providers.postmark.settings import SERVER_TOKEN, PostmarkSettings
from mailers.config import ProviderAccountConfig

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


def server_token(account: str, config: ProviderAccountConfig) -> str:
    """The account's server token (``credentials.server_token``)."""
    return config.secret(SERVER_TOKEN, f"Postmark account {account!r}")


def client(
    account: str,
    settings: PostmarkSettings,
    token: str,
    *,
    transport: httpx.BaseTransport | None = None,
) -> ApiClient:
    """A pooled client sending the server token with every request."""
    return ApiClient(
        account,
        settings,
        headers={"Accept": "application/json", "X-Postmark-Server-Token": token},
        transport=transport,
    )


def error_body(response: httpx.Response) -> tuple[int | None, str]:
    """``(ErrorCode, Message)`` of a Postmark error answer (``{ErrorCode, Message}``)."""
    try:
        data = response.json()
    except ValueError:
        return None, ""
    if not isinstance(data, dict):
        return None, ""
    code = data.get("ErrorCode")
    return (code if isinstance(code, int) else None), str(data.get("Message") or "")[:300]
