"""Postmark account settings, credential keys and the API's fixed limits."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from adapters.providers.http import HttpSettings

KIND = "postmark"
MAX_BATCH_SIZE = 500
"""``/email/batch`` accepts up to 500 messages per call (and 50 MB), see the batch page."""

DEFAULT_BASE_URL = "https://api.postmarkapp.com"

SERVER_TOKEN = "server_token"
WEBHOOK_USERNAME = "webhook_username"
WEBHOOK_PASSWORD = "webhook_password"
"""Credential keys (``credentials:`` in the account config; env var references only)."""


class PostmarkSettings(HttpSettings):
    """Settings of a Postmark account (``settings:`` in the config). Secrets are credentials."""

    example_url: ClassVar[str] = DEFAULT_BASE_URL

    base_url: str = Field(default=DEFAULT_BASE_URL, description="Postmark API base URL.")
    message_stream: str = Field(
        default="outbound",
        min_length=1,
        description="Postmark message stream ID to send through (and to poll bounces of).",
    )
    track_opens: bool | None = Field(
        default=None, description="TrackOpens per message; unset uses the server's default."
    )
    track_links: Literal["None", "HtmlAndText", "HtmlOnly", "TextOnly"] | None = Field(
        default=None, description="TrackLinks per message; unset uses the server's default."
    )
    poll_page_size: int = Field(
        default=500, ge=1, le=500, description="Bounces per GET /bounces page (max 500)."
    )
    poll_lookback_seconds: int = Field(
        default=900,
        ge=1,
        le=86_400,
        description="How far before the newest bounce seen each poll reads again, for "
        "bounces listed late with an earlier BouncedAt.",
    )
    backfill_max_details: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Most GET /messages/outbound/{id}/details calls one backfill makes (one "
        "per open message the window's bounces did not settle); the rest stay open for the "
        "next backfill.",
    )
