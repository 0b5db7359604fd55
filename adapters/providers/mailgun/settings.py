"""Mailgun account settings, credential keys and the API's fixed limits."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from adapters.providers.http import HttpSettings

KIND = "mailgun"
MAX_BATCH_SIZE = 1000
"""Mailgun's documented maximum number of recipients per sending call ("Batch Sending":
https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/batch-sending)."""

DEFAULT_BASE_URL = "https://api.mailgun.net"

API_KEY = "api_key"
"""Credential key of the API key (basic auth ``api:<key>``; sending and the events API)."""
WEBHOOK_SIGNING_KEY = "webhook_signing_key"
"""Credential key of the HTTP webhook signing key (Control Panel → Webhooks)."""

WEBHOOK_MAX_AGE_SECONDS = 300
"""Default for ``settings.webhook_max_age_seconds``: older webhook timestamps are refused.

Mailgun calls the freshness check optional and warns that webhook delivery can be delayed
("you don't want to be too aggressive with this check"); raise the setting if genuine
webhooks are refused as stale (the replay guard then remembers tokens that much longer).
"""


class MailgunSettings(HttpSettings):
    """Settings of a Mailgun account (``settings:`` in the config). Secrets go in credentials."""

    example_url: ClassVar[str] = DEFAULT_BASE_URL

    domain: str = Field(
        max_length=253,
        pattern=r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$",
        description="The Mailgun sending domain, e.g. 'mg.example.com'.",
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="https://api.mailgun.net (US) or https://api.eu.mailgun.net (EU).",
    )
    concurrency: int = Field(
        default=4, ge=1, le=8, description="API calls in flight at once (pool holds 8)."
    )
    test_mode: bool = Field(
        default=False, description="Send with o:testmode=yes: Mailgun accepts, never delivers."
    )
    poll_lookback_seconds: int = Field(
        default=86_400, gt=0, description="Where the first poll (no cursor yet) begins."
    )
    poll_page_size: int = Field(default=300, ge=1, le=300, description="Events API limit (≤300).")
    poll_max_pages: int = Field(default=20, ge=1, description="Pages fetched per poll at most.")
    webhook_max_age_seconds: int = Field(
        default=WEBHOOK_MAX_AGE_SECONDS,
        ge=30,
        le=86_400,
        description="Webhooks signed longer ago than this are refused as stale.",
    )

    @field_validator("base_url")
    @classmethod
    def _host_only(cls, value: str) -> str:
        """No path, query or fragment: ``/v3/{domain}/...`` is appended to the base URL."""
        parts = urlsplit(value)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must be the API host only, without a path (the /v3 is added)")
        return value
