"""Sandbox account settings: the engagement rates of its rule and the drill faults."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

KIND = "sandbox"
MAX_BATCH_SIZE = 500
"""Messages per call; each call lands the events of its accepted messages as one file."""


class SandboxSettings(BaseModel):
    """Settings of a sandbox account (``settings:`` in the config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    open_rate: float = Field(default=0.4, ge=0, le=1)
    click_rate: float = Field(default=0.1, ge=0, le=1)
    unsubscribe_rate: float = Field(default=0.02, ge=0, le=1)
    seed: str = "mailers"
    fault: Literal["none", "unavailable", "timeout", "throttled"] = "none"

    @model_validator(mode="after")
    def _clickers_open(self) -> SandboxSettings:
        if self.click_rate > self.open_rate:
            raise ValueError("click_rate cannot exceed open_rate (clickers are openers)")
        return self
