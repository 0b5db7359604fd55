"""Webhooks out over HTTP: :class:`HttpxTransport`, the core's ``Transport`` with httpx.

Redirects are not followed (a subscriber's URL is configured exactly); errors name the
exception kind and URL only, never a header, so no signature or secret reaches a log.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import httpx

from mailers.webhooks_out.transport import PostResult


class HttpxTransport:
    """POSTs with one pooled :class:`httpx.Client`; ``transport`` is injectable for tests."""

    def __init__(self, transport: httpx.BaseTransport | None = None) -> None:
        self._client = httpx.Client(follow_redirects=False, transport=transport)

    def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_seconds: float
    ) -> PostResult:
        started = time.perf_counter()
        try:
            answer = self._client.post(
                url, content=body, headers=dict(headers), timeout=timeout_seconds
            )
        except httpx.TimeoutException:
            return PostResult(None, _since(started), f"timed out after {timeout_seconds:g} s")
        except httpx.HTTPError as err:
            return PostResult(None, _since(started), f"{type(err).__name__} posting to {url}")
        error = None if answer.is_success else f"answered {answer.status_code}"
        return PostResult(answer.status_code, _since(started), error)

    def close(self) -> None:
        self._client.close()


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
