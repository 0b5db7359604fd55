"""The sending-policy parts of ``mailers.yaml``: limits, pacing, warm-up, breakers, routes.

They are kept apart from :mod:`mailers.config` (which holds the file's overall shape) so
each policy piece reads as one small model. What they mean at send time lives in
:mod:`mailers.policy` (inheritance), :mod:`mailers.warmup` (curves),
:mod:`mailers.pacing` (token buckets) and :mod:`mailers.breaker` (circuit breakers).
"""

from __future__ import annotations

from datetime import date, time
from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator


def _known_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None
    return name


TimeZoneName = Annotated[str, AfterValidator(_known_zone)]
"""An IANA time zone name (``Europe/Berlin``), checked at load."""

Count = Annotated[int, Field(ge=0)]
DomainName = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9-]+)+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DEFAULT_MAILBOX_PROVIDERS: dict[str, list[str]] = {
    "gmail": ["gmail.com", "googlemail.com"],
    "yahoo": ["yahoo.com", "ymail.com", "rocketmail.com", "aol.com"],
    "microsoft": ["outlook.com", "hotmail.com", "live.com", "msn.com"],
}
"""Mailbox providers by recipient domain, unless a workspace configures its own lists."""


class WarmupRamp(_Strict):
    """A geometric ramp: ``start`` on day one, times ``growth`` each day, up to ``ceiling``."""

    start: int = Field(gt=0, description="Messages on the curve's first day.")
    growth: float = Field(gt=1, le=10, description="Daily factor, e.g. 1.4.")
    ceiling: int = Field(
        gt=0,
        description="Full volume: from the first day the ramp reaches it, the curve no "
        "longer limits.",
    )

    @model_validator(mode="after")
    def _ceiling_above_start(self) -> WarmupRamp:
        if self.ceiling < self.start:
            raise ValueError("ceiling must be at least start")
        return self


class CurveShape(_Strict):
    """Daily volumes, as an explicit list (day one first) or a geometric ramp."""

    daily: list[Count] | None = Field(
        default=None,
        min_length=1,
        description="Messages per day, day one first; after the list the curve no longer limits.",
    )
    ramp: WarmupRamp | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> CurveShape:
        if (self.daily is None) == (self.ramp is None):
            raise ValueError("give exactly one of 'daily' or 'ramp'")
        return self


class WarmupCurve(CurveShape):
    """A warm-up curve for a sending domain, an identity or a provider account.

    ``mailbox_providers`` caps what may go to one mailbox provider (by recipient domain) on
    each day of the same curve, e.g. a slower ramp for Gmail.
    """

    start_date: date | None = Field(
        default=None,
        description="Day one of the curve, in the owner's time zone. Omitted: the first day "
        "a send runs under the curve (recorded in mailers.warmup_starts), so a new domain "
        "starts its ramp when it starts sending.",
    )
    mailbox_providers: dict[str, CurveShape] = Field(default_factory=dict)


class LimitsConfig(_Strict):
    """Limits of a scope (workspace, stream or campaign); a narrower scope may only tighten.

    Every limit counts what the scope hands to providers on one day in ``timezone``, across
    all campaigns and runs (counted from the send ledger).
    """

    daily_cap: Count | None = Field(default=None, description="Messages per day.")
    messages_per_second: float | None = Field(
        default=None, gt=0, description="Ceiling on the pace of one send of this scope."
    )
    mailbox_provider_daily_caps: dict[str, Count] = Field(
        default_factory=dict, description="Messages per day to one mailbox provider."
    )
    timezone: TimeZoneName | None = Field(
        default=None,
        description="Where this scope's day starts (default: the wider scope's; at the "
        "workspace, its `timezone`).",
    )


class PacingConfig(_Strict):
    """How fast one provider account may be driven."""

    messages_per_second: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(
        default=None, gt=0, description="Provider requests in flight at once."
    )
    daily_cap: Count | None = Field(default=None, description="Messages per day (quota).")
    quota_from_provider: bool = Field(
        default=False,
        description="Read the rate and the daily quota from the provider where it publishes "
        "them (SES GetSendQuota); the tighter of that and the configured values wins.",
    )
    min_backoff_seconds: float = Field(
        default=1.0,
        gt=0,
        description="The shortest wait after a rate-limit answer, whatever Retry-After says.",
    )
    max_throttle_wait_seconds: float = Field(
        default=900.0,
        ge=0,
        description="How long one send may wait on rate-limit answers in all; past it the "
        "messages still waiting stay not_sent (retried by a later run).",
    )


class BreakerConfig(_Strict):
    """When a provider account's circuit breaker opens, and how it probes to close."""

    consecutive_failures: int = Field(default=5, gt=0)
    error_rate: float = Field(default=0.5, gt=0, le=1)
    window_calls: int = Field(
        default=20, gt=0, description="Calls the error rate is measured over (and at least)."
    )
    open_seconds: float = Field(
        default=120.0, gt=0, description="How long it stays open before one probe call."
    )


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


WORKDAYS = [Weekday.MON, Weekday.TUE, Weekday.WED, Weekday.THU, Weekday.FRI]


class SendHours(_Strict):
    """Hours in which a mailbox may send, on the mailbox's or the recipient's clock."""

    start: time = time(9, 0)
    end: time = time(17, 0)
    days: list[Weekday] = Field(default_factory=lambda: list(WORKDAYS), min_length=1)
    clock: Literal["mailbox", "recipient"] = Field(
        default="mailbox",
        description="'recipient' reads the recipient's time zone from the segment column "
        "`recipient_timezone_column`, falling back to the mailbox's.",
    )
    recipient_timezone_column: str = "timezone"

    @model_validator(mode="after")
    def _start_before_end(self) -> SendHours:
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class DomainRoute(_Strict):
    """Recipients at these domains (or this mailbox provider's) go to these accounts first."""

    domains: list[DomainName] = Field(default_factory=list)
    mailbox_provider: str | None = None
    accounts: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]] = Field(min_length=1)

    @field_validator("domains", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return [str(d).lower() for d in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _matches_something(self) -> DomainRoute:
        if not self.domains and self.mailbox_provider is None:
            raise ValueError("give 'domains' or 'mailbox_provider'")
        return self
