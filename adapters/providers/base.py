"""The flow every batch provider shares; provider modules fill in one hook.

:class:`BatchProvider.send_batch` cuts a batch to the provider's per-call limit, calls the
provider's :meth:`~BatchProvider._send_chunk`, and turns what the hook raises into the
outcome the core expects:

==========================  ====================================================
hook raises                 what happens
==========================  ====================================================
:class:`Retryable`          wait (``Retry-After`` when given, else backoff) and try
                            again, up to the policy; then ``ProviderUnavailable``
:class:`BatchRejected`      the provider refused the whole call for one bad entry:
                            split in halves and retry, down to single messages,
                            which become ``rejected`` with the provider's reason
:class:`AuthFailed`         ``ProviderAuthError``: the account leaves the run
:class:`Ambiguous`          ``ProviderOutcomeUnknown``: recorded unknown, never resent
==========================  ====================================================

Per-recipient rejections inside an accepted call are returned by the hook as
``SendResult(accepted=False, reason=...)``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailers.errors import ProviderAuthError, ProviderOutcomeUnknown, ProviderUnavailable
from mailers.messages import OutboundMessage, SendResult


class Retryable(Exception):
    """Nothing was accepted and trying again may work (429, 5xx, connection refused)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class BatchRejected(Exception):
    """The provider refused the whole call because of (at least) one entry in it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AuthFailed(Exception):
    """The provider refused the account's credentials or configuration."""


class Ambiguous(Exception):
    """The request may have been processed, but no usable answer came back."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry a retryable failure within one send."""

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0


class BatchProvider(ABC):
    """Base of every provider adapter that sends in batches."""

    kind: str
    max_batch_size: int

    def __init__(
        self,
        account: str,
        *,
        max_batch_size: int,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.account = account
        self.max_batch_size = max_batch_size
        self.retry = retry or RetryPolicy()
        self._sleep = sleep

    @abstractmethod
    def _send_chunk(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Send at most ``max_batch_size`` messages in one provider call."""

    def close(self) -> None:  # noqa: B027 - most providers hold nothing to release
        """Release connections (HTTP pools, SMTP sessions). Safe to call twice."""

    def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Send ``messages``, one result per message; see the module docstring."""
        results: list[SendResult] = []
        for start in range(0, len(messages), self.max_batch_size):
            results.extend(self._send_splitting(messages[start : start + self.max_batch_size]))
        return results

    def _send_splitting(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        try:
            return self._send_retrying(messages)
        except BatchRejected as err:
            if len(messages) == 1:
                return [SendResult(messages[0].message_key, accepted=False, reason=err.reason)]
            middle = len(messages) // 2
            return self._send_splitting(messages[:middle]) + self._send_splitting(messages[middle:])

    def _send_retrying(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return self._send_chunk(messages)
            except Retryable as err:
                wait = (
                    err.retry_after
                    if err.retry_after is not None
                    else self.retry.base_delay * 2 ** (attempt - 1)
                )
                if attempt == self.retry.attempts or wait > self.retry.max_delay:
                    raise ProviderUnavailable(
                        self.account, f"{err.reason} (gave up after {attempt} attempts)"
                    ) from err
                self._sleep(wait)
            except AuthFailed as err:
                raise ProviderAuthError(self.account, str(err)) from err
            except Ambiguous as err:
                raise ProviderOutcomeUnknown(self.account, str(err)) from err
        raise AssertionError("unreachable: the loop returns or raises")
