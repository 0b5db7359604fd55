"""What a provider's one hook raises, and how hard the flow retries (:mod:`.base`)."""

from __future__ import annotations

from dataclasses import dataclass


class Retryable(Exception):
    """Nothing was accepted and trying again may work (429, 503, connection refused)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Throttled(Retryable):
    """The provider refused the call for its rate limit (429, SES ``Throttling``), not for
    being unavailable: paced by the account's pacer, never counted against the retries."""


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

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        if retry_after is not None:
            return retry_after
        return self.base_delay * 2.0 ** (attempt - 1)
