"""Sending through SendGrid's v3 ``POST /v3/mail/send``: a request per shared content.

The call carries ``Authorization: Bearer <api key>``; SendGrid answers ``202 Accepted``
with one ``X-Message-Id`` header for the whole request.

A request carries up to 1,000 *personalizations* (one per message here: ``to``,
``subject``, ``headers``, ``custom_args``) but only ONE ``content`` (and one ``from`` /
``reply_to``) shared by all of them. Mailers renders every message individually, so
:meth:`SendGridProvider._requests` groups a batch by (from, reply-to, text, html): the
messages of a group go in one request, a personalization each; different contents go in
separate requests. Templates that put anything per-recipient in the body (a name, the
signed unsubscribe link) therefore cost one request per message: that is what the API
allows, stated plainly rather than hidden. Folding the body into per-personalization
``substitutions`` was rejected: they are capped at 10,000 bytes per personalization, and
substituting whole bodies would make SendGrid rewrite our HTML.

Each request is one :meth:`~SendGridProvider._send_request` of the shared flow
(:mod:`adapters.providers.base`), so retries, the ``Retry-After`` wait and the halving on
a ``400`` for one bad entry (``BatchRejected``) apply per request, each half keeps its own
outcome, and a later request that fails never changes what an earlier one of the batch
got accepted.

Every personalization carries ``message.metadata`` in ``custom_args`` (SendGrid returns
them as top-level keys of every event) and ``message.headers`` (with
``X-Mailers-Message-Key``) as email headers. The per-message provider id is
:func:`provider_message_id`: the request's ``X-Message-Id`` and the message key, unique
per message and rebuilt from every event (:mod:`.events`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from adapters.providers.base import BatchProvider
from adapters.providers.hooks import AuthFailed, BatchRejected, RetryPolicy
from adapters.providers.http import ApiClient
from adapters.providers.sendgrid.settings import API_KEY, KIND, MAX_BATCH_SIZE, SendGridSettings
from mailers.config import ProviderAccountConfig, Settings
from mailers.errors import ConfigError
from mailers.messages import MESSAGE_KEY_HEADER, OutboundMessage, SendResult

SEND_PATH = "/v3/mail/send"

log = logging.getLogger(__name__)


def provider_message_id(x_message_id: str, message_key: str) -> str:
    """Our per-message id: the request's ``X-Message-Id`` and the message key."""
    return f"{x_message_id}:{message_key}"


_ContentKey = tuple[str, str | None, str | None, str, str]


def _content_key(message: OutboundMessage) -> _ContentKey:
    """What the messages of one request must share (everything outside a personalization)."""
    return (message.from_address, message.from_name, message.reply_to, message.text, message.html)


def _request_groups(
    messages: Sequence[OutboundMessage], max_size: int
) -> list[list[OutboundMessage]]:
    """Messages grouped into requests: same content, at most ``max_size``, each address once.

    SendGrid refuses a request naming one address in two personalizations, so a repeated
    recipient goes to the next request of its content group.
    """
    groups: dict[_ContentKey, list[tuple[list[OutboundMessage], set[str]]]] = {}
    for message in messages:
        address = message.recipient.lower()
        requests = groups.setdefault(_content_key(message), [])
        for members, addresses in requests:
            if len(members) < max_size and address not in addresses:
                members.append(message)
                addresses.add(address)
                break
        else:
            requests.append(([message], {address}))
    return [members for requests in groups.values() for members, _ in requests]


class SendGridProvider(BatchProvider):
    """One SendGrid account: a pooled HTTP client and the v3 Mail Send endpoint."""

    kind = KIND

    def __init__(
        self,
        account: str,
        settings: SendGridSettings,
        *,
        api_key: str,
        max_batch_size: int = MAX_BATCH_SIZE,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(account, max_batch_size=max_batch_size, retry=retry, sleep=sleep)
        self.settings = settings
        self._api = ApiClient(
            account,
            settings,
            headers={"Authorization": f"Bearer {api_key}"},
            transport=transport,
        )

    def close(self) -> None:
        """Close the pooled HTTP client (safe to call twice)."""
        self._api.close()
        super().close()

    def _requests(self, messages: Sequence[OutboundMessage]) -> list[Sequence[OutboundMessage]]:
        """One request per content group; see the module docstring."""
        return list(_request_groups(messages, self.max_batch_size))

    def _send_request(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        if len({_content_key(m) for m in messages}) != 1:
            raise ValueError("one SendGrid request carries one content: group messages first")
        log.debug(
            "SendGrid %s: POST %s, %d personalizations", self.account, SEND_PATH, len(messages)
        )
        response = self._api.send("POST", SEND_PATH, json=self._request_body(messages))
        status = response.status_code
        if 200 <= status < 300:
            x_message_id = response.headers.get("X-Message-Id")
            if not x_message_id:
                log.warning("SendGrid %s accepted a request without an X-Message-Id", self.account)
            return [
                SendResult(
                    m.message_key,
                    accepted=True,
                    provider_message_id=(
                        provider_message_id(x_message_id, m.message_key) if x_message_id else None
                    ),
                )
                for m in messages
            ]
        if status in (400, 413):
            # 400 names the offending field (e.g. personalizations.3.to.0.email); 413 is a
            # request over 30 MB. Either way halving isolates the entry responsible.
            # https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors
            raise BatchRejected(f"SendGrid refused the request ({status}): {_errors(response)}")
        raise AuthFailed(
            f"SendGrid answered {status} to {SEND_PATH}: {_errors(response)}; "
            "check the account's base_url and API key permissions (Mail Send)"
        )

    def _request_body(self, messages: Sequence[OutboundMessage]) -> dict[str, Any]:
        first = messages[0]
        sender: dict[str, str] = {"email": first.from_address}
        if first.from_name:
            sender["name"] = first.from_name
        # text/plain must come before text/html, and no content value may be empty.
        # https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send
        content = [
            {"type": kind, "value": value}
            for kind, value in (("text/plain", first.text), ("text/html", first.html))
            if value
        ]
        body: dict[str, Any] = {
            "personalizations": [
                {
                    "to": [{"email": m.recipient}],
                    "subject": m.subject,
                    "headers": {MESSAGE_KEY_HEADER: m.message_key, **m.headers},
                    # custom_args come back as top-level keys of every event of the message.
                    "custom_args": m.metadata,
                }
                for m in messages
            ],
            "from": sender,
            "content": content,
        }
        if first.reply_to:
            body["reply_to"] = {"email": first.reply_to}
        if self.settings.ip_pool_name:
            body["ip_pool_name"] = self.settings.ip_pool_name
        tracking = {
            name: {"enable": enabled}
            for name, enabled in (
                ("open_tracking", self.settings.open_tracking),
                ("click_tracking", self.settings.click_tracking),
            )
            if enabled is not None
        }
        if tracking:
            body["tracking_settings"] = tracking
        return body


def _errors(response: httpx.Response) -> str:
    """SendGrid's ``{"errors": [{"field", "message"}]}`` as one line of text."""
    try:
        errors = response.json().get("errors") or []
        text = "; ".join(
            f"{e['field']}: {e.get('message')}" if e.get("field") else str(e.get("message"))
            for e in errors
            if isinstance(e, dict)
        )
    except (ValueError, AttributeError):
        text = ""
    return (text or response.text.strip() or response.reason_phrase)[:500]


def build(
    account: str, config: ProviderAccountConfig, settings: SendGridSettings, app: Settings
) -> SendGridProvider:
    """A SendGrid account with its API key resolved from ``credentials.api_key``.

    A ``batch_size`` above :data:`MAX_BATCH_SIZE` is a ``ConfigError``.
    """
    batch_size = config.batch_size or MAX_BATCH_SIZE
    if batch_size > MAX_BATCH_SIZE:
        raise ConfigError(
            f"provider account {account!r}: batch_size {batch_size} exceeds SendGrid's "
            f"{MAX_BATCH_SIZE} personalizations per request"
        )
    api_key = config.secret(API_KEY, f"provider account {account!r} (kind {KIND})")
    return SendGridProvider(account, settings, api_key=api_key, max_batch_size=batch_size)
