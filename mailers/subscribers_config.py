"""Webhook subscribers of a workspace: where canonical events are delivered, and how.

``webhook_subscribers: {NAME: {url, secrets, event_types, streams, batch_size, ...}}`` in
a workspace. Secrets are ``{env: NAME}`` references to Standard Webhooks secrets
(``whsec_<base64>``); the first signs, and every one listed signs too, so a receiver
rotating its key accepts either (see :mod:`mailers.webhooks_out.signing`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mailers.events import EventType
from mailers.secrets import SecretRef

THREE_DAYS = 3 * 24 * 3600.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryConfig(_Strict):
    """Exponential retries with jitter: ``first_delay * factor**(n-1)``, capped at
    ``max_delay``, each moved by up to ``jitter`` of itself, until ``give_up_after`` has
    passed since the first attempt (then the delivery is dead-lettered)."""

    first_delay_seconds: float = Field(default=30.0, gt=0, le=24 * 3600)
    factor: float = Field(default=2.0, ge=1.0, le=10.0)
    max_delay_seconds: float = Field(default=8 * 3600.0, gt=0, le=7 * 24 * 3600)
    jitter: float = Field(default=0.2, ge=0.0, le=0.5, description="Fraction of each delay.")
    give_up_after_seconds: float = Field(
        default=THREE_DAYS, gt=0, le=30 * 24 * 3600, description="Retry for this long."
    )

    @model_validator(mode="after")
    def _delays_fit(self) -> RetryConfig:
        if self.max_delay_seconds < self.first_delay_seconds:
            raise ValueError("max_delay_seconds is shorter than first_delay_seconds")
        return self


class DisableConfig(_Strict):
    """A subscriber failing without a single success for ``after_hours`` and at least
    ``min_failures`` attempts is disabled (audit record and alert)."""

    after_hours: float = Field(default=72.0, gt=0, le=30 * 24)
    min_failures: int = Field(default=10, ge=1, le=10_000)


class SubscriberConfig(_Strict):
    """One subscriber: an HTTPS (or loopback HTTP) endpoint and what it wants."""

    url: str = Field(pattern=r"^https?://\S+$")
    secrets: list[SecretRef] = Field(
        min_length=1, max_length=5, description="{env: NAME} each; the first is current."
    )
    event_types: list[EventType] = Field(
        default_factory=list, description="Canonical event types delivered (empty: all)."
    )
    streams: list[Literal["transactional", "lifecycle", "outbound"]] = Field(
        default_factory=list, description="Streams whose events are delivered (empty: all)."
    )
    batch_size: int = Field(default=1, ge=1, le=1000, description="1: one event per request.")
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    max_events_per_run: int = Field(default=5000, ge=1, le=1_000_000)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    disable: DisableConfig = Field(default_factory=DisableConfig)
    enabled: bool = True
