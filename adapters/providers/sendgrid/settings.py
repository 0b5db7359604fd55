"""SendGrid account settings, credential keys and the API's fixed limits."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from adapters.providers.http import HttpSettings

KIND = "sendgrid"
MAX_BATCH_SIZE = 1000
"""Personalizations per request (https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors)."""

DEFAULT_BASE_URL = "https://api.sendgrid.com"

API_KEY = "api_key"
"""Credential key of the API key (``Authorization: Bearer``; needs the Mail Send permission)."""
WEBHOOK_PUBLIC_KEY = "webhook_public_key"
"""Credential key of the Signed Event Webhook verification key, base64 DER as SendGrid
shows it, or PEM."""


class SendGridSettings(HttpSettings):
    """Settings of a SendGrid account (``settings:`` in the config). Secrets are credentials."""

    example_url: ClassVar[str] = DEFAULT_BASE_URL

    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="API base; https://api.eu.sendgrid.com for EU regional subusers.",
    )
    ip_pool_name: str | None = Field(
        default=None, description="Send from this IP pool (the account's default if unset)."
    )
    open_tracking: bool | None = Field(
        default=None, description="Override the account's open tracking (None: keep it)."
    )
    click_tracking: bool | None = Field(
        default=None, description="Override the account's click tracking (None: keep it)."
    )
