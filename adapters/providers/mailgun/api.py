"""The Mailgun API client of one account, its paths, and how Mailgun words its errors."""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx

from adapters.providers.http import ApiClient
from adapters.providers.mailgun.settings import API_KEY, MailgunSettings
from mailers.config import ProviderAccountConfig


def api_key(account: str, config: ProviderAccountConfig) -> str:
    """The account's API key (``credentials.api_key``)."""
    return config.secret(API_KEY, f"mailgun account {account!r}")


def client(
    account: str,
    settings: MailgunSettings,
    key: str,
    *,
    transport: httpx.BaseTransport | None = None,
) -> ApiClient:
    """A pooled client sending basic auth ``api:<key>`` with every request."""
    return ApiClient(
        account,
        settings,
        headers={"Accept": "application/json"},
        auth=("api", key),
        transport=transport,
    )


def domain_path(settings: MailgunSettings, resource: str) -> str:
    """``/v3/{domain}/{resource}`` of the account's sending domain."""
    return f"/v3/{quote(settings.domain, safe='')}/{resource}"


def error_message(response: httpx.Response) -> str:
    """Mailgun's ``{"message": ...}`` error text, or a short excerpt of the body."""
    try:
        payload = response.json()
    except ValueError:
        return response.text[:200].strip() or "no details"
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        return str(payload["message"])
    return json.dumps(payload)[:200]
