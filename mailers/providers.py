"""What a provider adapter offers the core: batch sending and event parsing.

Each adapter module in ``adapters/providers/`` implements :class:`Provider` for one
provider kind. The contract for :meth:`Provider.send_batch`:

* return one :class:`~mailers.messages.SendResult` per message when the provider answered
  (accepted, or rejected with the provider's reason);
* raise :class:`~mailers.errors.ProviderUnavailable` when provably nothing was accepted;
* raise :class:`~mailers.errors.ProviderOutcomeUnknown` when the request may have been
  accepted but no answer came back. Never retry inside the adapter on that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from mailers.events import CanonicalEvent
from mailers.messages import OutboundMessage, SendResult


class Provider(Protocol):
    """One configured provider account, able to send batches."""

    kind: str
    account: str
    max_batch_size: int

    def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Hand a batch to the provider; see the module docstring for the contract."""
        ...


class EventParser(Protocol):
    """Turns one landed provider payload into canonical events (never raises on content)."""

    def parse(self, payload: bytes, account: str) -> list[CanonicalEvent]:
        """Canonical events in ``payload``; unrecognized content maps to ``unknown``."""
        ...
