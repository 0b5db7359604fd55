"""Sending through SES v2 ``SendEmail``: our own raw MIME, one message per call.

SES has no multi-message call for non-template mail: ``SendBulkEmail`` only takes an SES
template (``BulkEmailContent`` holds nothing but ``Template``), and Mailers renders its own
content, so ``MAX_BATCH_SIZE`` is 1 and every outcome maps exactly onto one message. The
message's metadata travels as ``EmailTags`` (SES copies them into ``mail.tags`` of every
event) and its headers (``X-Mailers-Message-Key`` among them) are in the MIME itself
(:func:`adapters.mime.mime_bytes`). botocore's own retries are off: the send flow
(:mod:`adapters.providers.base`) retries what SES says it did not process (throttling, a
503 with ``Retry-After``, no connection); any other 5xx may come after SES stored the
message, so it is in doubt, as for the HTTP providers (:mod:`adapters.providers.http`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from adapters.mime import mime_bytes
from adapters.providers.hooks import Ambiguous, AuthFailed, Retryable, RetryPolicy, Throttled
from adapters.providers.http import retry_after_seconds
from adapters.providers.per_message import OneMessagePerCall
from adapters.providers.ses.client import AUTH_ERRORS, AwsError, client
from adapters.providers.ses.redaction import REDACTOR
from adapters.providers.ses.settings import (
    ACCESS_KEY_ID,
    KIND,
    MAX_BATCH_SIZE,
    SECRET_ACCESS_KEY,
    AwsCredentials,
    SesSettings,
    resolve_credentials,
)
from mailers.config import ProviderAccountConfig, Settings
from mailers.messages import OutboundMessage, SendResult

_log = logging.getLogger(__name__)

THROTTLING_ERRORS = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",  # "maximum sending rate exceeded"
    }
)
"""Error codes of SES's sending-rate limit (``Throttled``: the account's pacer waits them
out). The daily quota (``LimitExceededException``) is no rate limit: waiting seconds does
not lift it."""

RETRYABLE_ERRORS = frozenset(
    {
        "LimitExceededException",  # quota: retrying soon rarely helps, then failover
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
"""Other error codes meaning nothing was accepted and a later attempt may work
(``Retryable``).
``InternalFailure`` and ``ServiceUnavailable`` are not among them: a 5xx says something
failed, not that the message was not stored, so it is ``Ambiguous`` unless a 503 carries
``Retry-After``."""

REJECTED_ERRORS = frozenset(
    {
        "MessageRejected",  # content refused, or (sandbox) an unverified recipient
        "MailFromDomainNotVerifiedException",
        "BadRequestException",
        "InvalidParameterValue",
        "ValidationException",
    }
)
"""Error codes that refuse this one message: it becomes a ``rejected`` result."""

TAG_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
"""``MessageTag`` names and values: ASCII letters, digits, ``_`` and ``-``, at most 256:
https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_MessageTag.html. Mailers'
metadata (md5 keys, config names) always fits; anything else is left to the header."""


class SesProvider(OneMessagePerCall):
    """One SES account: ``SendEmail`` with raw MIME, one message per call."""

    kind = KIND

    def __init__(
        self,
        account: str,
        settings: SesSettings,
        *,
        credentials: AwsCredentials | None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(account, max_batch_size=MAX_BATCH_SIZE, retry=retry, sleep=sleep)
        self.settings = settings
        self._client = client("sesv2", settings, credentials, read_timeout=settings.timeout_seconds)

    def close(self) -> None:
        """Close the client's connection pool."""
        self._client.close()
        super().close()

    def _send_one(self, message: OutboundMessage) -> SendResult:
        request: dict[str, Any] = {
            "FromEmailAddress": message.from_address,
            "Destination": {"ToAddresses": [message.recipient]},
            "Content": {
                "Raw": {
                    "Data": mime_bytes(
                        message, message_id=f"{message.message_key}@{message.sending_domain}"
                    )
                }
            },
            "EmailTags": email_tags(message.metadata),
        }
        if self.settings.configuration_set:
            request["ConfigurationSetName"] = self.settings.configuration_set
        try:
            answer = self._client.send_email(**request)
        except ClientError as err:
            return _client_error(message, AwsError.of(err.response))
        except (ReadTimeoutError, ConnectionClosedError) as err:
            raise Ambiguous(
                f"SendEmail: {type(err).__name__} after the request was sent; "
                "SES may have accepted it"
            ) from err
        except BotoConnectionError as err:  # endpoint unreachable, connect timeout, proxy, TLS
            raise Retryable(f"could not connect to SES: {type(err).__name__}") from err
        except ParamValidationError as err:  # refused before anything was sent
            reason = REDACTOR.redact(str(err))[:500]
            return SendResult(message.message_key, False, reason=f"invalid request: {reason}")
        except NoCredentialsError as err:
            raise AuthFailed(
                f"no AWS credentials: set credentials {ACCESS_KEY_ID}/{SECRET_ACCESS_KEY} "
                "or provide them through the default AWS credential chain"
            ) from err
        except HTTPClientError as err:
            raise Ambiguous(f"SendEmail: {type(err).__name__}; SES may have accepted it") from err
        except BotoCoreError as err:
            raise Ambiguous(f"SendEmail: {type(err).__name__}") from err
        return SendResult(message.message_key, True, provider_message_id=answer["MessageId"])


def _client_error(message: OutboundMessage, error: AwsError) -> SendResult:
    """What an SES error answer to ``SendEmail`` means for the message (or the account)."""
    code, status, text = error.code, error.status, error.text
    if code in AUTH_ERRORS or (status in (401, 403) and code not in REJECTED_ERRORS):
        raise AuthFailed(
            f"SES refused the account ({text}); check credentials {ACCESS_KEY_ID}/"
            f"{SECRET_ACCESS_KEY}, settings region/configuration_set and the account's "
            "sending status"
        )
    wait = retry_after_seconds(error.header("Retry-After"))
    if code in THROTTLING_ERRORS or (status == 429 and code not in RETRYABLE_ERRORS):
        raise Throttled(f"SES {status}: {text}", retry_after=wait)
    if code in RETRYABLE_ERRORS or (status == 503 and wait is not None):
        raise Retryable(f"SES {status}: {text}", retry_after=wait)
    if status >= 500:
        raise Ambiguous(
            f"SES {status}: {text} after the request was sent; SES may have accepted it"
        )
    if code in REJECTED_ERRORS or 400 <= status < 500:
        return SendResult(message.message_key, accepted=False, reason=f"SES rejected: {text}")
    raise Ambiguous(f"SendEmail: unexpected answer {status} {text}")


def email_tags(metadata: Mapping[str, str]) -> list[dict[str, str]]:
    """The message metadata as SES ``EmailTags`` (entries SES's charset cannot hold are left
    out; the ``X-Mailers-Message-Key`` header still identifies the message)."""
    tags = []
    for name, value in metadata.items():
        if TAG_PATTERN.match(name) and TAG_PATTERN.match(value):
            tags.append({"Name": name, "Value": value})
        else:
            _log.debug("SES tag %s left out: its value does not fit SES's tag charset", name)
    return tags


def build(
    account: str, config: ProviderAccountConfig, settings: SesSettings, app: Settings
) -> SesProvider:
    """An SES account with one pooled ``sesv2`` client.

    ``config.batch_size`` cannot raise the per-call limit: ``SendEmail`` takes one message.
    """
    return SesProvider(account, settings, credentials=resolve_credentials(account, config))
