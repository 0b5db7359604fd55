"""Sending through Resend's ``POST /emails/batch``: up to 100 messages per call.

The body is a JSON array of emails; the answer is ``200`` with ``{"data": [{"id"}, ...]}``,
one id per email in request order. Batches are validated in Resend's default *strict*
mode: one invalid email refuses the whole call (``400``/``422`` naming the first problem),
so the flow halves it (``BatchRejected``) until the bad entry is alone.
https://resend.com/docs/api-reference/emails/send-batch-emails
https://resend.com/docs/dashboard/emails/batch-sending

Our ``message.metadata`` travels as Resend ``tags`` (``[{name, value}]``; both may only
hold ASCII letters, digits, ``_`` and ``-``, at most 256 characters: our names are config
names and our values hex keys and config names, all within that) and comes back in every
webhook; our headers go in ``headers``.

Every call carries an ``Idempotency-Key`` derived from the message keys it carries
(:func:`idempotency_key`). Resend keeps a key for 24 hours and answers a repeat with the
same body by the first request's answer without sending again, so the flow makes a call
without a usable answer (a timeout, a 500 after storing) again under the same key.
https://resend.com/docs/dashboard/emails/idempotency-keys

Answers beyond the common mapping (:mod:`adapters.providers.http`), from the errors page
https://resend.com/docs/api-reference/errors:

==============================================  =========================================
answer                                          hook exception
==============================================  =========================================
429 ``daily_quota_exceeded`` / ``monthly_...``  ``AuthFailed``: the account cannot send
                                                until the quota resets; it leaves the run
403 ``validation_error`` (domain not verified)  ``AuthFailed``, naming Resend's reason
409 ``concurrent_idempotent_requests``          ``Retryable``: the first request with the
                                                key is still being processed
409 ``invalid_idempotent_request``              ``Ambiguous``: these messages were sent
                                                with another body in the last 24 hours
400 ``invalid_idempotency_key``, 404, 405       ``AuthFailed``: our request or base_url
                                                is wrong for every call
any other 4xx (400/422 validation errors)       ``BatchRejected``
==============================================  =========================================
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from email.utils import formataddr
from typing import Any

import httpx

from adapters.providers.base import BatchProvider
from adapters.providers.hooks import Ambiguous, AuthFailed, BatchRejected, RetryPolicy
from adapters.providers.http import ApiClient
from adapters.providers.payloads import mapping, mappings, text
from adapters.providers.resend.settings import API_KEY, KIND, MAX_BATCH_SIZE, ResendSettings
from mailers.config import ProviderAccountConfig, Settings
from mailers.messages import OutboundMessage, SendResult

BATCH_PATH = "/emails/batch"
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_PREFIX = "mailers-"
"""Our keys are this prefix and a SHA-256 in hex: 72 characters (Resend allows 1 to 256)."""

QUOTA_ERRORS = frozenset({"daily_quota_exceeded", "monthly_quota_exceeded"})
"""429 names that mean the account's sending quota is used up (not a rate limit)."""

log = logging.getLogger(__name__)


def idempotency_key(messages: Sequence[OutboundMessage]) -> str:
    """The key of one call: the same messages in the same order always give the same key."""
    keys = "\n".join(m.message_key for m in messages)
    return IDEMPOTENCY_PREFIX + hashlib.sha256(keys.encode()).hexdigest()


class ResendProvider(BatchProvider):
    """One Resend API key, sending through ``POST /emails/batch`` under idempotency keys."""

    kind = KIND

    def __init__(
        self,
        account: str,
        settings: ResendSettings,
        api_key: str,
        *,
        max_batch_size: int = MAX_BATCH_SIZE,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            account,
            max_batch_size=min(max_batch_size, MAX_BATCH_SIZE),
            retry=retry,
            sleep=sleep,
        )
        self.settings = settings
        self._api = ApiClient(
            account,
            settings,
            headers={"Accept": "application/json", "Authorization": f"Bearer {api_key}"},
            transport=transport,
        )

    def close(self) -> None:
        """Close the pooled HTTP client (safe to call twice)."""
        self._api.close()
        super().close()

    def _idempotency_key(self, messages: Sequence[OutboundMessage]) -> str:
        return idempotency_key(messages)

    def _send_request(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        response = self._api.send(
            "POST",
            BATCH_PATH,
            content=json.dumps([_payload(m) for m in messages]).encode(),
            headers={
                "Content-Type": "application/json",
                IDEMPOTENCY_HEADER: self._idempotency_key(messages),
            },
            check=_account_refusal,
        )
        if response.status_code >= 400:
            _raise_for_batch_status(response)
        results = _batch_results(response, messages)
        log.debug("resend %s: batch of %d accepted", self.account, len(results))
        return results


def _payload(message: OutboundMessage) -> dict[str, Any]:
    """One email in Resend's shape (send-batch-emails page, body parameters)."""
    email: dict[str, Any] = {
        "from": formataddr((message.from_name or "", message.from_address)),
        "to": [message.recipient],
        "subject": message.subject,
        "html": message.html,
        "text": message.text,
        "headers": dict(message.headers),
        "tags": [{"name": name, "value": value} for name, value in message.metadata.items()],
    }
    if message.reply_to:
        email["reply_to"] = message.reply_to
    return email


def error_body(response: httpx.Response) -> tuple[str, str]:
    """``(name, message)`` of a Resend error answer (``{name, statusCode, message}``)."""
    try:
        data = mapping(response.json())
    except ValueError:
        return "", ""
    return text(data.get("name")) or "", (text(data.get("message")) or "")[:300]


def _account_refusal(response: httpx.Response) -> None:
    """Answers the common mapping would misread: a used-up quota is no rate limit, and an
    unverified domain is no bad key."""
    if response.status_code not in (403, 429):
        return
    name, message = error_body(response)
    if response.status_code == 429 and name in QUOTA_ERRORS:
        raise AuthFailed(f"Resend refused the account: {name} (429): {message}")
    if response.status_code == 403 and name == "validation_error":
        raise AuthFailed(f"Resend refused the account (403 validation_error): {message}")


def _raise_for_batch_status(response: httpx.Response) -> None:
    """A whole-call refusal (401/403/429/5xx were handled by the common mapping)."""
    status = response.status_code
    name, message = error_body(response)
    detail = f"{status} {name or response.reason_phrase}: {message}".rstrip(": ")
    if status == 409 and name == "invalid_idempotent_request":
        raise Ambiguous(
            "Resend refused the idempotency key: these messages were sent with another "
            f"body in the last 24 hours ({detail})"
        )
    if status == 409:
        # Another request under this key is being processed, and it may be accepted: never
        # "not sent" (that would fail the messages over to another account); the flow makes
        # the call again under the key until Resend answers the first request's outcome.
        raise Ambiguous(f"Resend is still processing a request with this key ({detail})")
    if status in (404, 405):
        raise AuthFailed(f"Resend answered {status} for {BATCH_PATH}; check settings.base_url")
    if name == "invalid_idempotency_key":
        raise AuthFailed(f"Resend refused our idempotency key ({detail})")
    raise BatchRejected(f"Resend refused the batch ({detail})")


def _batch_results(
    response: httpx.Response, messages: Sequence[OutboundMessage]
) -> list[SendResult]:
    """One result per email; ``data`` lists the ids in request order (batch page)."""
    try:
        items = mapping(response.json()).get("data")
    except ValueError as err:
        raise Ambiguous("Resend answered the batch with a body that is not JSON") from err
    ids = [text(item.get("id")) for item in mappings(items)]
    if not isinstance(items, list) or len(ids) != len(messages):
        raise Ambiguous(
            f"Resend answered {len(messages)} messages with "
            f"{len(items) if isinstance(items, list) else 'no'} ids"
        )
    # An entry without an id is left out: the flow records that message in doubt.
    return [
        SendResult(message.message_key, True, provider_message_id=email_id)
        for message, email_id in zip(messages, ids, strict=True)
        if email_id
    ]


def build(
    account: str,
    config: ProviderAccountConfig,
    settings: ResendSettings,
    app: Settings | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    retry: RetryPolicy | None = None,
) -> ResendProvider:
    """A Resend account, its API key resolved from ``credentials.api_key``."""
    return ResendProvider(
        account,
        settings,
        config.secret(API_KEY, f"Resend account {account!r}"),
        max_batch_size=config.batch_size or MAX_BATCH_SIZE,
        retry=retry,
        sleep=sleep,
    )
