"""HTTP plumbing shared by the HTTP API providers (Mailgun, Postmark, SendGrid, Resend).

:class:`HttpSettings` is the base of their settings models (``base_url``, checked by
:func:`~adapters.providers.network.checked_base_url`, and ``timeout_seconds``);
:class:`ApiClient` is one pooled :class:`httpx.Client` per provider account, with one
mapping from transport failures and status codes to the hooks' exceptions
(:mod:`adapters.providers.hooks`) for sends, and to the read errors pollers report
(:meth:`ApiClient.read`):

* connection refused / connect timeout / no pool slot: nothing was sent → ``Retryable``;
* read or write timeout, connection dropped mid-request: the provider may have processed
  it → ``Ambiguous``;
* 429: the provider's rate limit, the request was not processed (RFC 6585 §4) →
  ``Throttled`` (a ``Retryable`` the account's pacer waits out) honouring ``Retry-After``;
* 503 with ``Retry-After``: unavailable, not processed (RFC 9110 §15.6.4) → ``Retryable``;
* any other 5xx (500, 502, 504, a 503 without ``Retry-After``): the request left and a
  gateway or the provider failed somewhere, possibly after storing it → ``Ambiguous``,
  recorded ``unknown`` and reconciled, never blindly re-sent;
* 401 / 403 → ``AuthFailed``. Other statuses are left to the provider module, which knows
  whether a 4xx means "one bad entry" (``BatchRejected``) or something else; a provider
  that means one of the statuses above its own way reads the answer first
  (``ApiClient.send(..., check=...)``).
"""

from __future__ import annotations

from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.providers.hooks import Ambiguous, AuthFailed, Retryable, Throttled
from adapters.providers.network import checked_base_url
from mailers.clock import now
from mailers.errors import ProviderAuthError, ProviderUnavailable

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class HttpSettings(BaseModel):
    """Settings every HTTP API provider has; a provider's model adds its own.

    Subclasses set ``base_url``'s default to their API and may tighten its check.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    example_url: ClassVar[str] = "https://api.example.com"
    """Shown in the error for a base URL that is not one."""

    base_url: str = Field(description="API base URL (plain http only for a loopback simulator).")
    timeout_seconds: float = Field(default=30.0, gt=0, le=300, description="Per-request timeout.")

    @field_validator("base_url")
    @classmethod
    def _https_unless_loopback(cls, value: str) -> str:
        return checked_base_url(value, cls.example_url)

    def timeout(self) -> httpx.Timeout:
        """The request timeout, with connecting bounded to at most 5 s."""
        return httpx.Timeout(self.timeout_seconds, connect=min(5.0, self.timeout_seconds))


class ApiClient:
    """One account's pooled connection to an HTTP API, reused for every call of a run."""

    def __init__(
        self,
        account: str,
        settings: HttpSettings,
        *,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.account = account
        self.client = make_client(
            settings.base_url,
            headers=headers,
            auth=auth,
            timeout=settings.timeout(),
            transport=transport,
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections (safe to call twice)."""
        self.client.close()

    def send(
        self,
        method: str,
        url: str,
        *,
        check: Callable[[httpx.Response], None] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """A call that may hand mail over: failures raise the hook exceptions (:func:`call`).

        ``check`` sees every answer before the common status mapping, for a status the
        provider means its own way (Resend's quota 429s take the account out of the run).
        """
        return call(self.client, method, url, check=check, **kwargs)

    def read(
        self,
        method: str,
        url: str,
        what: str,
        *,
        explain: Callable[[httpx.Response], str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """A read (polling, lookups): any failure is safe to try again on the next poll.

        Refused credentials raise :class:`~mailers.errors.ProviderAuthError`, everything
        else that is not a 2xx :class:`~mailers.errors.ProviderUnavailable`, naming
        ``what`` was read, the account, and what ``explain`` makes of the error body;
        the response is returned otherwise.
        """
        try:
            response = call(self.client, method, url, **kwargs)
        except AuthFailed as err:
            raise ProviderAuthError(self.account, f"{what}: {err}") from err
        except (Retryable, Ambiguous) as err:
            raise ProviderUnavailable(self.account, f"{what}: {err}") from err
        if response.status_code >= 300:
            detail = explain(response) if explain else response.reason_phrase
            raise ProviderUnavailable(
                self.account, f"{what} answered {response.status_code}: {detail}"
            )
        return response

    def read_json(
        self,
        method: str,
        url: str,
        what: str,
        *,
        explain: Callable[[httpx.Response], str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """:meth:`read`, decoded as JSON; a body that is not JSON is ``ProviderUnavailable``."""
        response = self.read(method, url, what, explain=explain, **kwargs)
        try:
            return response.json()
        except ValueError as err:
            raise ProviderUnavailable(self.account, f"{what} answered non-JSON") from err


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


def call(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    check: Callable[[httpx.Response], None] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Make one request; transport failures become the base class's hook exceptions.

    ``check``, when given, may raise for an answer before :func:`check_common_status` does.
    """
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
    if check is not None:
        check(response)
    check_common_status(response)
    return response


def check_common_status(response: httpx.Response) -> None:
    """Raise for the statuses every provider means the same way."""
    status = response.status_code
    if status == 429:
        raise Throttled("rate limited (429)", retry_after=retry_after(response))
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
