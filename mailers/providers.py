"""What a provider adapter offers the core: batch sending and event parsing.

Each provider package in ``adapters/providers/`` implements :class:`Provider` for one
provider kind. The contract for :meth:`Provider.send_batch`:

* it returns one :class:`~mailers.messages.SendResult` per message, in order, and never
  raises for what the provider did: accepted, rejected, ``not_sent`` (provably not
  accepted; ``account_unavailable`` when the account failed and others may take it) or
  ``unknown`` (handed over, no usable answer);
* right before every provider call it tells the :class:`DispatchJournal` which messages
  that call carries, and right after, what became of each of them. The journal makes
  both durable, so a crash leaves in doubt only the messages of the call in flight;
* the journal may refuse a call for the account by raising :class:`AccountUnavailable`
  from :meth:`DispatchJournal.handing_over` (e.g. its circuit breaker is open,
  :mod:`mailers.breaker`): that call is not made, and every message of the batch not yet
  handed over is ``not_sent`` with ``account_unavailable`` and the journal's reason, as
  when the account itself fails, so the core fails them over to another account;
* it may also refuse by raising :class:`HandOverHeld` (a pause holds the messages' scope):
  that call is not made and every message of the batch not yet handed over is ``held``,
  never failed over (a pause never reroutes mail); messages of a call already in doubt
  stay ``unknown``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from mailers.events import CanonicalEvent
from mailers.messages import OutboundMessage, SendResult


class AccountUnavailable(Exception):
    """Raised by a journal's ``handing_over``: this account must not make the call now.

    Unlike any other exception from the journal (which stops the whole send), it only
    takes the account out of the batch: its messages fail over to another account.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HandOverHeld(Exception):
    """Raised by a journal's ``handing_over``: a pause holds these messages' scope.

    The call is not made; the messages of the batch not yet handed over end ``held`` (see
    the module docstring), and ``reason`` says which pause holds them.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DispatchJournal(Protocol):
    """Where a provider records each call it makes, before and after making it."""

    def handing_over(
        self, messages: Sequence[OutboundMessage], idempotency_keys: Mapping[str, str]
    ) -> None:
        """``messages`` are about to leave in one provider call (or one wave of calls).

        ``idempotency_keys`` maps a message key to the idempotency key its call carries,
        for providers that deduplicate by one (empty otherwise); a retry of the same call
        carries the same key. Returns once that is durable; raising stops the send before
        the call is made (:class:`AccountUnavailable`: only this account's part of it;
        :class:`HandOverHeld`: a pause holds the rest of the batch).
        """
        ...

    def answered(self, results: Sequence[SendResult]) -> None:
        """What the call(s) ended in, one result per message handed over.

        A ``not_sent`` result here may be followed by another :meth:`handing_over` of the
        same message (a retry after a 429, a half of a split batch), and so may an
        ``unknown`` one of an idempotent call (made again under the same key).
        """
        ...


class NoJournal:
    """A journal that records nothing (tests and tools that keep no ledger)."""

    def handing_over(
        self, messages: Sequence[OutboundMessage], idempotency_keys: Mapping[str, str]
    ) -> None:
        """Record nothing."""

    def answered(self, results: Sequence[SendResult]) -> None:
        """Record nothing."""


class Provider(Protocol):
    """One configured provider account, able to send batches."""

    kind: str
    account: str
    max_batch_size: int

    def send_batch(
        self, messages: Sequence[OutboundMessage], journal: DispatchJournal | None = None
    ) -> list[SendResult]:
        """Hand a batch to the provider; see the module docstring for the contract."""
        ...


class EventParser(Protocol):
    """Turns one landed provider payload into canonical events (never raises on content)."""

    def parse(self, payload: bytes, account: str) -> list[CanonicalEvent]:
        """Canonical events in ``payload``; unrecognized content maps to ``unknown``."""
        ...
