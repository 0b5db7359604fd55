"""Sending through Postmark's ``POST /email/batch``: up to 500 messages per call.

The answer is ``200`` with one result per message, in request order: ``ErrorCode`` 0 is
accepted (with a ``MessageID``); any other code is a per-recipient refusal (406 inactive
recipient, 300 invalid email request, ...). Our metadata travels in Postmark
``Metadata`` (returned in every webhook) and our headers in ``Headers``.
https://postmarkapp.com/developer/user-guide/send-email-with-api/batch-emails
https://postmarkapp.com/developer/api/email-api
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from email.utils import formataddr
from typing import Any

import httpx

from adapters.providers.base import BatchProvider
from adapters.providers.hooks import Ambiguous, AuthFailed, BatchRejected, RetryPolicy
from adapters.providers.postmark.api import ACCOUNT_ERROR_CODES, client, error_body, server_token
from adapters.providers.postmark.settings import KIND, MAX_BATCH_SIZE, PostmarkSettings
from mailers.config import ProviderAccountConfig, Settings
from mailers.messages import DOMAIN_FIELD, OutboundMessage, SendResult

log = logging.getLogger(__name__)


class PostmarkProvider(BatchProvider):
    """One Postmark server (server token), sending through ``POST /email/batch``."""

    kind = KIND

    def __init__(
        self,
        account: str,
        settings: PostmarkSettings,
        server_token: str,
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
        self._api = client(account, settings, server_token, transport=transport)

    def close(self) -> None:
        """Close the pooled HTTP client (safe to call twice)."""
        self._api.close()
        super().close()

    def _send_request(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        body = json.dumps([self._payload(m) for m in messages]).encode()
        response = self._api.send(
            "POST",
            "/email/batch",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        if response.status_code >= 400:
            _raise_for_batch_status(response)
        results = _batch_results(response, messages)
        accepted = sum(r.accepted for r in results)
        log.debug(
            "postmark %s: batch of %d, %d accepted, %d refused",
            self.account,
            len(messages),
            accepted,
            len(messages) - accepted,
        )
        return results

    def _payload(self, message: OutboundMessage) -> dict[str, Any]:
        """One message in Postmark's JSON shape (email API page, "Send a single email")."""
        payload: dict[str, Any] = {
            "From": formataddr((message.from_name or "", message.from_address)),
            "To": message.recipient,
            "Subject": message.subject,
            "HtmlBody": message.html,
            "TextBody": message.text,
            "Tag": message.campaign,
            "Headers": [{"Name": name, "Value": value} for name, value in message.headers.items()],
            "Metadata": {**message.metadata, DOMAIN_FIELD: message.sending_domain},
            "MessageStream": self.settings.message_stream,
        }
        if message.reply_to:
            payload["ReplyTo"] = message.reply_to
        if self.settings.track_opens is not None:
            payload["TrackOpens"] = self.settings.track_opens
        if self.settings.track_links is not None:
            payload["TrackLinks"] = self.settings.track_links
        return payload


def _raise_for_batch_status(response: httpx.Response) -> None:
    """A whole-call refusal (401/403/429/5xx were handled by ``call``)."""
    status = response.status_code
    code, text = error_body(response)
    if code == 10:
        # Never echo the answer: it is about the token.
        raise AuthFailed("Postmark refused the server token (ErrorCode 10)")
    if code in ACCOUNT_ERROR_CODES:
        raise AuthFailed(f"Postmark refused the account: {ACCOUNT_ERROR_CODES[code]} ({code})")
    if status == 404:
        raise AuthFailed("Postmark answered 404 for /email/batch; check settings.base_url")
    # 422 with ErrorCode 300/402/403/410/411..., 413 payload too large: the call was refused
    # because of what is in it, so halving it isolates the bad entry.
    detail = f"ErrorCode {code}: {text}" if code is not None else response.reason_phrase
    raise BatchRejected(f"Postmark refused the batch ({status}, {detail})")


def _batch_results(
    response: httpx.Response, messages: Sequence[OutboundMessage]
) -> list[SendResult]:
    """Per-message results; the answer lists them in request order (batch page)."""
    try:
        items = response.json()
    except ValueError as err:
        raise Ambiguous("Postmark answered the batch with a body that is not JSON") from err
    if not isinstance(items, list) or len(items) != len(messages):
        raise Ambiguous(
            f"Postmark answered {len(messages)} messages with "
            f"{len(items) if isinstance(items, list) else 'no'} results"
        )
    results: list[SendResult] = []
    refusal_codes: set[int | None] = set()
    for message, item in zip(messages, items, strict=True):
        item = item if isinstance(item, dict) else {}
        code = item.get("ErrorCode")
        if code == 0:
            message_id = item.get("MessageID")
            results.append(
                SendResult(message.message_key, True, provider_message_id=message_id or None)
            )
            continue
        refusal_codes.add(code if isinstance(code, int) else None)
        text = str(item.get("Message") or "no message")[:300]
        results.append(
            SendResult(message.message_key, False, reason=f"Postmark ErrorCode {code}: {text}")
        )
    if (
        not any(r.accepted for r in results)
        and refusal_codes
        and refusal_codes.issubset(ACCOUNT_ERROR_CODES)
    ):
        # Every message refused for an account-level reason: the account cannot send; its
        # traffic should fail over rather than be marked rejected message by message.
        code = min(c for c in refusal_codes if c is not None)
        raise AuthFailed(f"Postmark refused the account: {ACCOUNT_ERROR_CODES[code]} ({code})")
    return results


def build(
    account: str,
    config: ProviderAccountConfig,
    settings: PostmarkSettings,
    app: Settings | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    retry: RetryPolicy | None = None,
) -> PostmarkProvider:
    """A Postmark account, its server token resolved from ``credentials.server_token``."""
    return PostmarkProvider(
        account,
        settings,
        server_token(account, config),
        max_batch_size=config.batch_size or MAX_BATCH_SIZE,
        retry=retry,
        sleep=sleep,
    )
