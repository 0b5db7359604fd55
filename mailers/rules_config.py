"""The ``pause_rules:`` of a workspace: when hard bounces or complaints pause sending.

Every key is optional; the defaults sit below what providers enforce, so a rule pauses a
scope before a provider reviews or suspends the account:

* Amazon SES puts an account under review at a 5% bounce rate and at a 0.1% complaint
  rate (https://docs.aws.amazon.com/ses/latest/dg/reputationdashboardmessages.html).
  Pausing at 4% hard bounces leaves a margin below the 5%; warning at 2% leaves time to
  clean a list before that.
* Gmail and Yahoo ask bulk senders to keep the spam rate under 0.1% and never reach 0.3%
  (https://support.google.com/a/answer/81126). The complaint pause equals SES's review
  level, 0.1%, but SES (and Postmaster Tools) measure over a longer, representative
  period, while here 0.1% over one hour or one day already stops the scope; the warning
  at 0.08% comes first.
* A rate over a few recipients means nothing (one complaint in 50 messages is 2%), so a
  scope is judged only once at least ``min_volume`` (300) recipients were accepted in
  the window.

What the rules mean is in :mod:`mailers.pause_rules`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mailers.secrets import SecretRef

Rate = Annotated[float, Field(gt=0, lt=1)]
"""A share of recipients, strictly between 0 and 1 (0.04 is 4%)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleLevel(StrEnum):
    """Which scopes of a workspace the rules judge (a stream, an identity, an account)."""

    STREAM = "stream"
    IDENTITY = "identity"
    ACCOUNT = "account"


class RateLevels(_Strict):
    """A warning level and a pause level for one rate."""

    warn: Rate
    pause: Rate

    @model_validator(mode="after")
    def _warn_not_above_pause(self) -> RateLevels:
        if self.warn > self.pause:
            raise ValueError(f"warn ({self.warn}) must not be above pause ({self.pause})")
        return self


class AlertWebhook(_Strict):
    """Where alerts are POSTed as JSON, signed with HMAC-SHA256 of the body."""

    url: str = Field(pattern=r"^https?://\S+$")
    secret: SecretRef = Field(description="The signing key, as {env: NAME}.")
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)


class PauseRulesConfig(_Strict):
    """Automatic pause rules of one workspace (every key optional)."""

    enabled: bool = True
    window_hours: list[Annotated[float, Field(gt=0, le=24 * 7)]] = Field(
        default_factory=lambda: [1.0, 24.0],
        min_length=1,
        max_length=4,
        description="The windows rates are measured over, in hours (default 1 and 24).",
    )
    min_volume: int = Field(
        default=300,
        gt=0,
        description="Recipients accepted in a window before a scope's rate is judged.",
    )
    hard_bounce: RateLevels = Field(default_factory=lambda: RateLevels(warn=0.02, pause=0.04))
    complaint: RateLevels = Field(default_factory=lambda: RateLevels(warn=0.0008, pause=0.001))
    levels: list[RuleLevel] = Field(
        default_factory=lambda: list(RuleLevel),
        min_length=1,
        description="Scopes judged: stream, identity, account (default: all three).",
    )
    recheck_seconds: float = Field(
        default=60.0,
        gt=0,
        description="During a send, how often the rules are re-evaluated when no new "
        "feedback landed (new feedback re-evaluates before the next batch).",
    )
    alert_webhook: AlertWebhook | None = None

    @model_validator(mode="after")
    def _distinct(self) -> PauseRulesConfig:
        if len(set(self.window_hours)) != len(self.window_hours):
            raise ValueError("window_hours must not repeat a window")
        if len(set(self.levels)) != len(self.levels):
            raise ValueError("levels must not repeat a level")
        return self
