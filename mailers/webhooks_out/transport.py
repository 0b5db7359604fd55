"""The seam to HTTP: the core posts a signed body and reads back what happened."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PostResult:
    """One attempt's outcome: the answer's status (None when there was none) or the error."""

    status_code: int | None
    latency_ms: float
    error: str | None = None

    @property
    def delivered(self) -> bool:
        """Standard Webhooks: any 2xx answer is success; anything else is retried."""
        return self.status_code is not None and 200 <= self.status_code < 300


class Transport(Protocol):
    """POSTs one webhook message; never raises for a network failure or a bad answer."""

    def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_seconds: float
    ) -> PostResult:
        """Send ``body`` to ``url``; the result says whether and how it was answered."""
        ...
