"""HTTP plumbing shared by the HTTP API providers (Mailgun, Postmark, SendGrid).

One pooled :class:`httpx.Client` per provider account, and one mapping from transport
failures and status codes to the hooks' exceptions (:mod:`adapters.providers.base`):

* connection refused / connect timeout / no pool slot: nothing was sent → ``Retryable``;
* read or write timeout, connection dropped mid-request: the provider may have processed
  it → ``Ambiguous``;
* 429, and 503 with ``Retry-After``: the provider says it did not process the request
  (RFC 6585 §4, RFC 9110 §15.6.4) → ``Retryable`` honouring ``Retry-After``;
* any other 5xx (500, 502, 504, a 503 without ``Retry-After``): the request left and a
  gateway or the provider failed somewhere, possibly after storing it → ``Ambiguous``,
  recorded ``unknown`` and reconciled, never blindly re-sent;
* 401 / 403 → ``AuthFailed``. Other statuses are left to the provider module, which knows
  whether a 4xx means "one bad entry" (``BatchRejected``) or something else.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from adapters.providers.base import Ambiguous, AuthFailed, Retryable
from mailers.clock import now

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


def make_client(
    base_url: str,
    *,
    headers: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """A pooled client for one provider account (reused for every batch of the run)."""
    return httpx.Client(
        base_url=base_url,
        headers={"User-Agent": "mailers/0.1", **(headers or {})},
        auth=auth,
        timeout=timeout,
        limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        transport=transport,
    )


def call(client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Make one request; transport failures become the base class's hook exceptions."""
    try:
        response = client.request(method, url, **kwargs)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as err:
        raise Retryable(f"could not connect to {client.base_url}: {type(err).__name__}") from err
    except (
        httpx.TimeoutException,
        httpx.RemoteProtocolError,
        httpx.ReadError,
        httpx.WriteError,
    ) as err:
        raise Ambiguous(
            f"{method} {url}: {type(err).__name__} after the request was sent; "
            "the provider may have accepted it"
        ) from err
    check_common_status(response)
    return response


def check_common_status(response: httpx.Response) -> None:
    """Raise for the statuses every provider means the same way."""
    status = response.status_code
    if status == 429:
        raise Retryable("rate limited (429)", retry_after=retry_after(response))
    if status == 503 and (wait := retry_after(response)) is not None:
        raise Retryable("provider unavailable (503)", retry_after=wait)
    if status >= 500:
        raise Ambiguous(
            f"provider error {status} after the request was sent; it may have been accepted"
        )
    if status in (401, 403):
        raise AuthFailed(
            f"credentials refused ({status}); check the account's credentials and settings"
        )


def retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from a response's ``Retry-After``, if present."""
    return retry_after_seconds(response.headers.get("Retry-After"))


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` value (delta-seconds or an HTTP date) in seconds from now."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - now()).total_seconds())
