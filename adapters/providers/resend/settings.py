"""Resend account settings, credential keys and the API's fixed limits."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from adapters.providers.http import HttpSettings

KIND = "resend"
MAX_BATCH_SIZE = 100
"""``POST /emails/batch`` takes up to 100 emails per call.
https://resend.com/docs/api-reference/emails/send-batch-emails"""

DEFAULT_BASE_URL = "https://api.resend.com"

API_KEY = "api_key"
WEBHOOK_SECRET = "webhook_secret"
"""Credential keys (``credentials:`` in the account config; env var references only). The
webhook secret is the endpoint's signing secret as Resend shows it (``whsec_...``)."""


class ResendSettings(HttpSettings):
    """Settings of a Resend account (``settings:`` in the config). Secrets are credentials."""

    example_url: ClassVar[str] = DEFAULT_BASE_URL

    base_url: str = Field(default=DEFAULT_BASE_URL, description="Resend API base URL.")
