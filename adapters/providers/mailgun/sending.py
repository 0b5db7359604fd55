"""Sending through Mailgun's ``POST /v3/{domain}/messages``: one API call per message.

Form fields, sent as ``multipart/form-data``, with HTTP basic auth ``api:<api key>``.
Mailgun's own batch path (several ``to`` fields plus a ``recipient-variables`` JSON, at
most 1,000 recipients per call) substitutes ``%recipient.x%`` into *one* subject/body
template and gives the whole call *one* message id. Our messages are rendered one by one
(subject, HTML, text, the signed ``List-Unsubscribe`` header and ``X-Mailers-Message-Key``
all differ per recipient), and each needs its own provider message id to be matched with
its events. Squeezing them into a template would mean shipping every rendered body as a
recipient variable and relying on undocumented substitution in ``h:`` headers, so this
adapter does not batch at the HTTP level: **each message is one API call** over the
account's pooled keep-alive client, ``concurrency`` calls in flight at a time.
``MAX_BATCH_SIZE`` stays Mailgun's documented per-call recipient limit (1,000, enforced by
the simulator too) and is how many messages the core hands over per ``send_batch``.

Per message: ``200`` → accepted with Mailgun's ``id`` (angle brackets stripped, the way
events carry it in ``message.headers.message-id``); ``400``/``402``/``413`` → that message
is rejected with Mailgun's ``message``; ``404`` (unknown domain, e.g. an EU domain on the
US base URL) and ``401``/``403`` → the account is refused; ``429``, ``503`` with
``Retry-After`` and connect failures are retried for that message alone; a timeout after
the request was sent, a dropped connection or another ``5xx`` leaves that message alone in
doubt. Each call is its own request in the shared flow (:mod:`adapters.providers.base`),
which records it before it leaves and keeps every other call's outcome.

Every message carries our metadata as ``v:`` custom variables (they come back in every
event under ``user-variables``) and our headers as ``h:`` fields.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from email.utils import formataddr

import httpx

from adapters.providers.hooks import Ambiguous, AuthFailed, BatchRejected, RetryPolicy
from adapters.providers.mailgun.api import api_key, client, domain_path, error_message
from adapters.providers.mailgun.settings import KIND, MAX_BATCH_SIZE, MailgunSettings
from adapters.providers.per_message import OneMessagePerCall
from mailers.config import ProviderAccountConfig, Settings
from mailers.messages import OutboundMessage, SendResult

log = logging.getLogger(__name__)


class MailgunProvider(OneMessagePerCall):
    """One Mailgun account (API key + sending domain): one API call per message."""

    kind = KIND

    def __init__(
        self,
        account: str,
        settings: MailgunSettings,
        api_key: str,
        *,
        max_batch_size: int = MAX_BATCH_SIZE,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            account,
            max_batch_size=max_batch_size,
            concurrency=settings.concurrency,
            retry=retry,
            sleep=sleep,
        )
        self.settings = settings
        self._api = client(account, settings, api_key, transport=transport)
        self._path = domain_path(settings, "messages")

    def close(self) -> None:
        """Close the pooled HTTP client (safe to call twice)."""
        self._api.close()
        super().close()

    def _send_one(self, message: OutboundMessage) -> SendResult:
        """One ``POST /v3/{domain}/messages``; failures raise the hook exceptions."""
        body, content_type = _multipart(_form_fields(message, self.settings))
        response = self._api.send(
            "POST", self._path, content=body, headers={"Content-Type": content_type}
        )
        status = response.status_code
        if status == 200:
            return SendResult(
                message.message_key, accepted=True, provider_message_id=_message_id(response)
            )
        detail = error_message(response)
        if status == 404:
            # "Not Found - The requested item doesn't exist": the domain is not on this
            # account or region (https://documentation.mailgun.com/docs/mailgun/api-reference/).
            raise AuthFailed(
                f"Mailgun answered 404 for domain {self.settings.domain!r} ({detail}); check "
                "settings.domain and settings.base_url (US api.mailgun.net vs EU "
                "api.eu.mailgun.net)"
            )
        if 400 <= status < 500:
            # 400 "Bad Request", 402 "Request Failed - Parameters were valid but request
            # failed", 413 too large: about this message, which is the whole call.
            raise BatchRejected(f"mailgun {status}: {detail}")
        raise Ambiguous(f"mailgun answered an unexpected status {status}: {detail}")


def _form_fields(message: OutboundMessage, settings: MailgunSettings) -> list[tuple[str, str]]:
    """The form fields of one message (https://documentation.mailgun.com/docs/mailgun/
    api-reference/send/mailgun/messages/post-v3--domain-name--messages)."""
    fields = [
        ("from", formataddr((message.from_name or "", message.from_address))),
        ("to", message.recipient),
        ("subject", message.subject),
    ]
    # At least one of text/html is required; send whichever the template produced.
    if message.text:
        fields.append(("text", message.text))
    if message.html:
        fields.append(("html", message.html))
    if message.reply_to:
        fields.append(("h:Reply-To", message.reply_to))
    # "h:" prefix: a custom MIME header; "v:" prefix: a custom variable, returned in every
    # event of the message under "user-variables".
    fields.extend((f"h:{name}", value) for name, value in message.headers.items())
    fields.extend((f"v:{name}", value) for name, value in message.metadata.items())
    if settings.test_mode:
        fields.append(("o:testmode", "yes"))
    return fields


def _multipart(fields: Sequence[tuple[str, str]]) -> tuple[bytes, str]:
    """``multipart/form-data`` encoding of text fields (repeated names allowed)."""
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in fields:
        safe_name = (
            name.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "")
        )
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{safe_name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _message_id(response: httpx.Response) -> str | None:
    """Mailgun's ``id`` without the angle brackets (events carry it without them)."""
    try:
        payload = response.json()
    except ValueError:
        log.warning("mailgun accepted a message but its answer was not JSON")
        return None
    value = payload.get("id") if isinstance(payload, dict) else None
    return value.strip().strip("<>") if isinstance(value, str) and value.strip() else None


def build(
    account: str, config: ProviderAccountConfig, settings: MailgunSettings, app: Settings
) -> MailgunProvider:
    """A Mailgun account; ``batch_size`` above :data:`MAX_BATCH_SIZE` is capped to it."""
    size = min(config.batch_size or MAX_BATCH_SIZE, MAX_BATCH_SIZE)
    return MailgunProvider(account, settings, api_key(account, config), max_batch_size=size)
