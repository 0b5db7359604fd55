"""Incoming provider webhooks: the request as received, and replay protection.

Provider modules verify a :class:`WebhookRequest` (signature, freshness, credentials) and
raise :class:`~mailers.errors.WebhookRejected` when it fails; nothing from a rejected
request is stored. Verified bodies land in the landing zone unchanged in meaning (one JSON
document per line) and are parsed by the same ``parse`` that polled events use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from mailers.clock import epoch


@dataclass(frozen=True)
class WebhookRequest:
    """One HTTP request as a webhook receiver got it."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    url: str = ""
    method: str = "POST"
    received_at: float = field(default_factory=epoch)

    def header(self, name: str) -> str | None:
        """A header value, looked up case-insensitively."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


class ReplayGuard(Protocol):
    """Remembers tokens (nonces, signatures) seen recently, to refuse a replayed request."""

    def first_use(self, token: str, *, ttl_seconds: float) -> bool:
        """True the first time ``token`` is seen within ``ttl_seconds``; False on a replay."""
        ...


class SeenTokens:
    """An in-process :class:`ReplayGuard` (a single receiver process; thread-safe)."""

    def __init__(self, now: Callable[[], float] = epoch) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._now = now

    def first_use(self, token: str, *, ttl_seconds: float) -> bool:
        now = self._now()
        with self._lock:
            self._seen = {t: until for t, until in self._seen.items() if until > now}
            if token in self._seen:
                return False
            self._seen[token] = now + ttl_seconds
            return True
