"""What happens to a message the simulator accepted: the sandbox's deterministic rule.

Provider simulator modules turn these outcome names into their provider's own event
format (webhook bodies, events API pages), so every provider reports the same story for
the same recipient and the tests can predict it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from adapters.providers.sandbox import EVENT_OFFSETS, SandboxSettings, is_rejected, planned_events


@dataclass(frozen=True)
class Outcome:
    """One thing that happened to an accepted message, and when."""

    name: str
    occurred_at: datetime


def outcomes(
    message_key: str, recipient: str, accepted_at: datetime, rule: SandboxSettings | None = None
) -> list[Outcome]:
    """The outcomes of one accepted message, in order (sandbox rule, default rates)."""
    names = planned_events(message_key, recipient, rule or SandboxSettings())
    return [Outcome(name, accepted_at + EVENT_OFFSETS[name]) for name in names]


def refuses(recipient: str) -> bool:
    """Whether providers refuse this recipient at send time (the sandbox's reject domain)."""
    return is_rejected(recipient)
