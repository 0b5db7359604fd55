"""Polling SES events from an SQS queue subscribed to the events topic.

SQS has no position to resume from, only messages to delete, and the poller lands what
:func:`poll_events` returns *after* it returns; so deleting is deferred by one poll (see
:func:`poll_events`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from adapters.providers.ses.client import AUTH_ERRORS, AwsError, client
from adapters.providers.ses.settings import SesSettings, resolve_credentials
from mailers.config import ProviderAccountConfig
from mailers.errors import ConfigError, ProviderAuthError, ProviderUnavailable

_log = logging.getLogger(__name__)

SQS_BATCH = 10
"""The most entries one ``ReceiveMessage`` returns and one ``DeleteMessageBatch`` takes."""


def poll_events(
    account: str, config: ProviderAccountConfig, settings: SesSettings, cursor: str | None
) -> tuple[list[bytes], str | None]:
    """New SES event messages from the account's SQS queue (``events_queue_url``).

    The returned cursor lists the receipt handles of the messages just returned, and the
    next call (which only happens once those payloads have landed and the cursor was
    stored) deletes them before reading more. A crash before landing leaves them
    undeleted; they come back after ``events_visibility_timeout`` and are landed again
    (ingestion drops repeated event ids). Nothing is lost; at worst something is read
    twice. With nothing new the cursor is unchanged (or, right after a delete, an empty
    one).
    """
    if not settings.events_queue_url:
        raise ConfigError(f"SES account {account!r}: poll_events needs settings.events_queue_url")
    pending = _pending_handles(cursor)
    sqs = client(
        "sqs",
        settings,
        resolve_credentials(account, config),
        read_timeout=settings.events_wait_seconds + settings.timeout_seconds,
    )
    try:
        _delete(sqs, account, settings.events_queue_url, pending)
        payloads, handles = _receive(sqs, account, settings)
    finally:
        sqs.close()
    if not handles and not pending:
        return [], cursor
    return payloads, json.dumps({"delete": handles}, separators=(",", ":"))


def _pending_handles(cursor: str | None) -> list[str]:
    if not cursor:
        return []
    try:
        data = json.loads(cursor)
        handles = data["delete"]
    except (ValueError, KeyError, TypeError):
        return []  # an unreadable cursor only costs duplicates, never events
    return [h for h in handles if isinstance(h, str)] if isinstance(handles, list) else []


def _delete(sqs: Any, account: str, queue_url: str, handles: list[str]) -> None:
    for start in range(0, len(handles), SQS_BATCH):
        entries = [
            {"Id": str(i), "ReceiptHandle": handle}
            for i, handle in enumerate(handles[start : start + SQS_BATCH])
        ]
        answer = _sqs_call(account, sqs.delete_message_batch, QueueUrl=queue_url, Entries=entries)
        for failure in answer.get("Failed") or []:
            # An expired receipt handle: the message came back and was (or will be) landed
            # again with a newer handle, which a later poll deletes.
            _log.debug("SES events queue: delete failed: %s", failure.get("Code"))


def _receive(sqs: Any, account: str, settings: SesSettings) -> tuple[list[bytes], list[str]]:
    """Up to ``events_max_messages`` messages, each once (a message that turns visible again
    during the poll keeps its first payload and its newest receipt handle, the one SQS
    deletes with)."""
    payloads: dict[str, bytes] = {}
    handles: dict[str, str] = {}
    while len(handles) < settings.events_max_messages:
        answer = _sqs_call(
            account,
            sqs.receive_message,
            QueueUrl=settings.events_queue_url,
            MaxNumberOfMessages=min(SQS_BATCH, settings.events_max_messages - len(handles)),
            WaitTimeSeconds=settings.events_wait_seconds if not handles else 0,
            VisibilityTimeout=settings.events_visibility_timeout,
        )
        messages = answer.get("Messages") or []
        new = 0
        for message in messages:
            sqs_id = str(message.get("MessageId") or message["ReceiptHandle"])
            if sqs_id not in payloads:
                payloads[sqs_id] = _one_line(str(message.get("Body", "")))
                new += 1
            handles[sqs_id] = str(message["ReceiptHandle"])
        if not new:
            break
    return list(payloads.values()), list(handles.values())


def _one_line(body: str) -> bytes:
    """An SQS body as one landing line: SNS sends pretty-printed JSON, landing wants one
    line per payload. Re-serialising keeps every value (``Message`` stays the same string)."""
    try:
        return json.dumps(json.loads(body), separators=(",", ":")).encode()
    except ValueError:
        return json.dumps(body).encode()  # not JSON: kept as a JSON string, parsed as unknown


def _sqs_call(account: str, method: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return method(**kwargs)
    except ClientError as err:
        error = AwsError.of(err.response)
        if error.code in AUTH_ERRORS or error.status in (401, 403):
            raise ProviderAuthError(account, f"SQS refused the account ({error.text})") from err
        raise ProviderUnavailable(account, f"SQS events queue: {error.text}") from err
    except BotoCoreError as err:
        raise ProviderUnavailable(account, f"SQS events queue: {type(err).__name__}") from err
