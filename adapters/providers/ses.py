"""Amazon SES (API v2): raw MIME sends, SNS-signed event webhooks, SQS event polling.

Sending
    One ``SendEmail`` call per message (``Content.Raw``: our own MIME from
    :func:`adapters.mime.mime_bytes`), over one pooled boto3 ``sesv2`` client per account.
    SES has no multi-message call for non-template mail: ``SendBulkEmail`` only takes an
    SES template (``BulkEmailContent`` holds nothing but ``Template``), and Mailers renders
    its own content, so :data:`MAX_BATCH_SIZE` is 1 and every outcome maps exactly onto
    one message. The message's metadata travels as ``EmailTags`` (SES copies them into
    ``mail.tags`` of every event) and its headers (``X-Mailers-Message-Key`` among them)
    are in the MIME itself. botocore's own retries are off: the base class retries what
    SES says it did not process (throttling, a 503 with ``Retry-After``, no connection);
    any other 5xx may come after SES stored the message, so it is in doubt, as for the
    HTTP providers (:mod:`adapters.providers.http`).

Events
    SES event publishing (a configuration set with an SNS event destination) publishes
    each event to an SNS topic. Two ways in, both landing the SNS message as-is:

    * an HTTPS subscription to the webhook receiver: :func:`verify_webhook` checks the SNS
      signature (``SignatureVersion`` 1 = SHA1withRSA, 2 = SHA256withRSA) with the signing
      certificate fetched only from ``https://sns.<region>.amazonaws.com/...pem``, refuses
      messages older than an hour and replays (by SNS ``MessageId``). A
      ``SubscriptionConfirmation`` verifies like any other message; the receiver then
      confirms with :func:`subscription_confirmation_url`;
    * an SQS queue subscribed to the topic: :func:`poll_events` (``events_queue_url``).

    :func:`parse` takes either shape (SNS envelope, or the bare SES record when the SQS
    subscription uses raw message delivery) and fans out one canonical event per
    recipient.

boto3/botocore are imported lazily (only sending and polling need them), so parsing
landed SES events and verifying webhooks work without the AWS SDK installed.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from adapters.mime import mime_bytes
from adapters.providers.base import Ambiguous, AuthFailed, BatchProvider, Retryable, RetryPolicy
from adapters.providers.http import retry_after_seconds
from mailers.clock import epoch, utcnow
from mailers.config import ProviderAccountConfig
from mailers.config import Settings as MailersSettings
from mailers.errors import ConfigError, ProviderAuthError, ProviderUnavailable, WebhookRejected
from mailers.events import BounceClass, CanonicalEvent, EventType, derive_event_id
from mailers.messages import MESSAGE_KEY_HEADER, OutboundMessage, SendResult
from mailers.webhooks import ReplayGuard, WebhookRequest

KIND = "ses"
MAX_BATCH_SIZE = 1
"""``SendEmail`` takes one message (up to 50 recipients; Mailers sends one):
https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html"""

# --- mapping tables ------------------------------------------------------------------------

EVENT_TYPES: dict[str, tuple[EventType, BounceClass | None]] = {
    "Delivery": (EventType.DELIVERED, None),
    "Bounce": (EventType.BOUNCED, None),  # class from bounce.bounceType: BOUNCE_CLASSES
    "DeliveryDelay": (EventType.DEFERRED, None),
    "Complaint": (EventType.COMPLAINED, None),  # unless NOT_COMPLAINTS
    "Reject": (EventType.REJECTED, None),
    "Rendering Failure": (EventType.FAILED, None),
    "RenderingFailure": (EventType.FAILED, None),
    "Open": (EventType.OPENED, None),
    "Click": (EventType.CLICKED, None),
    "Subscription": (EventType.UNSUBSCRIBED, None),  # only for opt-outs: see _opted_out
}
"""SES ``eventType`` → canonical (type, bounce class). Anything else (``Send``, which only
repeats what ``SendEmail`` answered, and types SES adds later) maps to ``unknown`` with the
record kept. Event types:
https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html"""

BOUNCE_CLASSES: dict[str, BounceClass] = {
    "Permanent": BounceClass.HARD,
    "Transient": BounceClass.SOFT,
    # "SES was unable to determine a specific bounce reason": not proof enough to suppress.
    "Undetermined": BounceClass.SOFT,
}
"""``bounce.bounceType`` → bounce class (bounce types are listed on the contents page)."""

NOT_COMPLAINTS = frozenset({"not-spam"})
"""``complaint.complaintFeedbackType`` values (RFC 5965 ARF) that are no complaint: the
recipient marked the message as *not* spam. They map to ``unknown`` (kept, not suppressing)."""

AUTH_ERRORS = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "IncompleteSignature",
        "InvalidClientTokenId",
        "MissingAuthenticationToken",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidSignatureException",
        # The account (not the message) cannot send: permanently restricted, paused, or
        # the configured configuration set does not exist.
        "AccountSuspendedException",
        "SendingPausedException",
        "NotFoundException",
    }
)
"""Error codes that take the account out of the run (``AuthFailed``). Common errors:
https://docs.aws.amazon.com/ses/latest/APIReference-V2/CommonErrors.html and the
``SendEmail`` errors on its API page."""

RETRYABLE_ERRORS = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",  # "maximum sending rate exceeded"
        "LimitExceededException",  # quota: retrying soon rarely helps, then failover
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
"""Error codes meaning nothing was accepted and a later attempt may work (``Retryable``).
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

SIGNATURE_HASHES = {"1": "sha1", "2": "sha256"}
"""SNS ``SignatureVersion`` → hash of the RSA PKCS#1 v1.5 signature:
https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html"""

SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
"""Fields of the SNS string to sign, per message type, in byte order (``Subject`` only when
present). Same page as :data:`SIGNATURE_HASHES`."""

SNS_HOST = re.compile(r"^sns\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.amazonaws\.com(?:\.cn)?$")
"""Hosts that serve SNS signing certificates (and subscription URLs)."""

WEBHOOK_MAX_AGE_SECONDS = 3600.0
"""SNS messages older than this (by their signed ``Timestamp``) are refused as stale."""
WEBHOOK_MAX_SKEW_SECONDS = 300.0
"""How far in the future a ``Timestamp`` may be (clock skew) before it is refused."""
MAX_WEBHOOK_BYTES = 1 << 20
"""SNS messages are at most 256 KiB; anything much larger is not from SNS."""
MAX_CERTIFICATE_BYTES = 64 << 10

_log = logging.getLogger(__name__)


# --- settings and credentials ----------------------------------------------------------------


class Settings(BaseModel):
    """Settings of an SES account (``settings:`` in the config); access keys are credentials."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$", description="e.g. eu-west-1.")
    endpoint_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Override the AWS endpoint (VPC endpoints, moto); applies to SES and SQS.",
    )
    configuration_set: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Configuration set whose event destination publishes to SNS. Needed "
        "for events unless the sending identity has a default configuration set.",
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="Read timeout per call.")
    events_queue_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="SQS queue subscribed to the events topic, for poll_events.",
    )
    events_wait_seconds: int = Field(
        default=1, ge=0, le=20, description="ReceiveMessage long-poll wait (short)."
    )
    events_visibility_timeout: int = Field(
        default=900,
        ge=0,
        le=43200,
        description="Seconds received messages stay hidden; they are deleted at the next "
        "poll, so make this longer than the polling interval.",
    )
    events_max_messages: int = Field(
        default=100, ge=1, le=1000, description="Messages read per poll (10 per call)."
    )
    events_topic_arns: list[str] = Field(
        default_factory=list,
        description="When set, webhooks from any other SNS topic are refused.",
    )


@dataclass(frozen=True)
class AwsCredentials:
    """An access key (and session token) resolved from the account's credential refs."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    @property
    def values(self) -> list[str]:
        """Every secret value, for log redaction."""
        return [v for v in (self.access_key_id, self.secret_access_key, self.session_token) if v]


def resolve_credentials(account: str, config: ProviderAccountConfig) -> AwsCredentials | None:
    """The account's access key from ``credentials`` (``access_key_id``,
    ``secret_access_key``, optional ``session_token``), or ``None`` when neither key is
    configured: boto3's default chain (instance profile, task role, env) is used then."""
    refs = config.credentials
    unknown = sorted(set(refs) - {"access_key_id", "secret_access_key", "session_token"})
    if unknown:
        raise ConfigError(f"SES account {account!r}: unknown credential keys {unknown}")
    if not refs:
        return None
    if "access_key_id" not in refs or "secret_access_key" not in refs:
        raise ConfigError(
            f"SES account {account!r}: give both credentials access_key_id and "
            "secret_access_key (or neither, to use the default AWS credential chain)"
        )

    def value(key: str) -> str:
        return refs[key].resolve(f"SES account {account!r} credential {key!r}")

    token = value("session_token") if "session_token" in refs else None
    return AwsCredentials(value("access_key_id"), value("secret_access_key"), token)


class _Redactor(logging.Filter):
    """Masks credential values in records of the AWS SDK's loggers.

    botocore logs request headers (``Authorization`` with the access key id,
    ``X-Amz-Security-Token``) and the canonical request at DEBUG; this filter, attached to
    the ``botocore``/``boto3``/``urllib3`` loggers, rewrites such records before any
    handler sees them. It only ever replaces the values registered with :meth:`add`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._secrets = self._secrets | {s for s in secrets if len(s) >= 4}
            for name in list(logging.Logger.manager.loggerDict):
                if name.split(".")[0] in {"botocore", "boto3", "urllib3", "s3transfer"}:
                    logger = logging.getLogger(name)
                    if self not in logger.filters:
                        logger.addFilter(self)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging system's business, not ours
            return True
        if any(secret in message for secret in secrets):
            record.msg, record.args = self.redact(message), None
        return True


_REDACTOR = _Redactor()


_SESSION_LOCK = threading.Lock()
_SESSION: list[Any] = []


def _session() -> Any:
    """One boto3 session per process: its loaders cache the service models, so building
    a client per account stays cheap. Credentials are given per client, not per session."""
    with _SESSION_LOCK:
        if not _SESSION:
            try:
                import boto3
            except ImportError as err:
                raise ConfigError(
                    "provider kind 'ses' needs an optional dependency: boto3 "
                    "(pip install 'mailers[ses]')"
                ) from err
            _SESSION.append(boto3.session.Session())
        return _SESSION[0]


def _client(
    service: str, settings: Settings, credentials: AwsCredentials | None, *, read_timeout: float
) -> Any:
    """A boto3 client with botocore's retries off (the base class retries)."""
    session = _session()
    from botocore.config import Config

    keys: dict[str, str | None] = {}
    if credentials is not None:
        _REDACTOR.add(credentials.values)
        keys = {
            "aws_access_key_id": credentials.access_key_id,
            "aws_secret_access_key": credentials.secret_access_key,
            "aws_session_token": credentials.session_token,
        }
    config = Config(
        region_name=settings.region,
        connect_timeout=min(5.0, settings.timeout_seconds),
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": 1},
        max_pool_connections=8,
        user_agent_extra="mailers/0.1",
    )
    with _SESSION_LOCK:  # boto3 sessions are not thread-safe while creating clients
        client = session.client(service, endpoint_url=settings.endpoint_url, config=config, **keys)
    if credentials is not None:
        _REDACTOR.add(credentials.values)  # loggers botocore created while building the client
    return client


# --- sending ---------------------------------------------------------------------------------


class SesProvider(BatchProvider):
    """One SES account: ``SendEmail`` with raw MIME, one message per call."""

    kind = KIND

    def __init__(
        self,
        account: str,
        settings: Settings,
        *,
        credentials: AwsCredentials | None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(account, max_batch_size=MAX_BATCH_SIZE, retry=retry, sleep=sleep)
        self.settings = settings
        self._client = _client(
            "sesv2", settings, credentials, read_timeout=settings.timeout_seconds
        )

    def close(self) -> None:
        """Close the client's connection pool."""
        self._client.close()
        super().close()

    def _send_request(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """One ``SendEmail`` per call (``request_size`` is ``MAX_BATCH_SIZE``, 1)."""
        return [self._send_one(message) for message in messages]

    def _send_one(self, message: OutboundMessage) -> SendResult:
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
            return self._client_error(message, err.response)
        except (ReadTimeoutError, ConnectionClosedError) as err:
            raise Ambiguous(
                f"SendEmail: {type(err).__name__} after the request was sent; "
                "SES may have accepted it"
            ) from err
        except BotoConnectionError as err:  # endpoint unreachable, connect timeout, proxy, TLS
            raise Retryable(f"could not connect to SES: {type(err).__name__}") from err
        except ParamValidationError as err:  # refused before anything was sent
            reason = _REDACTOR.redact(str(err))[:500]
            return SendResult(message.message_key, False, reason=f"invalid request: {reason}")
        except NoCredentialsError as err:
            raise AuthFailed(
                "no AWS credentials: set credentials access_key_id/secret_access_key "
                "or provide them through the default AWS credential chain"
            ) from err
        except HTTPClientError as err:
            raise Ambiguous(f"SendEmail: {type(err).__name__}; SES may have accepted it") from err
        except BotoCoreError as err:
            raise Ambiguous(f"SendEmail: {type(err).__name__}") from err
        return SendResult(message.message_key, True, provider_message_id=answer["MessageId"])

    def _client_error(self, message: OutboundMessage, response: Mapping[str, Any]) -> SendResult:
        error = response.get("Error") or {}
        meta = response.get("ResponseMetadata") or {}
        code = str(error.get("Code") or "")
        status = int(meta.get("HTTPStatusCode") or 0)
        text = _REDACTOR.redact(f"{code or status}: {error.get('Message') or ''}".strip())
        if code in AUTH_ERRORS or (status in (401, 403) and code not in REJECTED_ERRORS):
            raise AuthFailed(
                f"SES refused the account ({text}); check credentials access_key_id/"
                "secret_access_key, settings region/configuration_set and the account's "
                "sending status"
            )
        wait = _retry_after(meta.get("HTTPHeaders") or {})
        if code in RETRYABLE_ERRORS or status == 429 or (status == 503 and wait is not None):
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


def _retry_after(headers: Mapping[str, str]) -> float | None:
    return retry_after_seconds(
        next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    )


def build(
    account: str, config: ProviderAccountConfig, settings: Settings, app: MailersSettings
) -> SesProvider:
    """An SES account with one pooled ``sesv2`` client.

    ``config.batch_size`` cannot raise the per-call limit: ``SendEmail`` takes one message.
    """
    return SesProvider(account, settings, credentials=resolve_credentials(account, config))


# --- parsing ---------------------------------------------------------------------------------


def parse(payload: bytes, account: str) -> list[CanonicalEvent]:
    """Canonical events from one landed SES payload: an SNS message (webhook body or SQS
    message body) whose ``Message`` is the SES event record, or the bare record (SQS raw
    message delivery). One event per recipient the record names. SNS subscription
    confirmations carry no email event and give none."""
    data = json.loads(payload)
    if not isinstance(data, dict):
        return [_unknown(account, payload.decode("utf-8", "replace"), None)]
    if "Type" in data and "eventType" not in data and "notificationType" not in data:
        kind = data.get("Type")
        if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
            return []
        message = data.get("Message")
        if kind != "Notification" or not isinstance(message, str):
            return [_unknown(account, json.dumps(data, sort_keys=True), data)]
        try:
            record = json.loads(message)
        except ValueError:
            record = None
        if not isinstance(record, dict):  # e.g. SES's "Successfully validated SNS topic" test
            return [_unknown(account, json.dumps(data, sort_keys=True), data)]
        return _events(record, message, account, data)
    return _events(data, json.dumps(data), account, None)


def _events(
    record: dict[str, Any], raw: str, account: str, envelope: dict[str, Any] | None
) -> list[CanonicalEvent]:
    # Records from a configuration set's event destination say "eventType"; the older
    # identity notifications (same objects) say "notificationType".
    name = str(record.get("eventType") or record.get("notificationType") or "")
    event_type, bounce_class = EVENT_TYPES.get(name, (EventType.UNKNOWN, None))
    mail = _dict(record.get("mail"))
    detail = _dict(record.get(_DETAIL_KEYS.get(name, "")))
    if name == "Bounce":
        bounce_class = BOUNCE_CLASSES.get(str(detail.get("bounceType")), BounceClass.SOFT)
    elif name == "Complaint" and detail.get("complaintFeedbackType") in NOT_COMPLAINTS:
        event_type = EventType.UNKNOWN
    elif name == "Subscription" and not _opted_out(detail):
        event_type = EventType.UNKNOWN  # an opt-in or a no-op change is no unsubscribe
    occurred = (
        _timestamp(detail.get("timestamp"))
        or _timestamp(mail.get("timestamp"))
        or _timestamp((envelope or {}).get("Timestamp"))
        or utcnow()
    )
    tags = _dict(mail.get("tags"))
    metadata = {key: _tag(tags, key) for key in _METADATA}
    metadata["mailers_message_key"] = metadata["mailers_message_key"] or _header(
        mail, MESSAGE_KEY_HEADER
    )
    source = parseaddr(str(mail.get("source") or ""))[1]
    domain = source.rsplit("@", 1)[1].lower() if "@" in source else _tag(tags, "ses:from-domain")
    message_id = mail.get("messageId")
    anchor = str(message_id or (envelope or {}).get("MessageId") or "")
    events = []
    for recipient, reason in _recipients(name, detail, mail):
        if anchor:
            parts = [anchor, name, str(detail.get("timestamp") or mail.get("timestamp") or "")]
            parts += [recipient or "", str(detail.get("link") or detail.get("feedbackId") or "")]
            event_id = derive_event_id(KIND, *parts)
        else:
            event_id = derive_event_id(KIND, raw, recipient or "")
        events.append(
            CanonicalEvent(
                event_id=event_id,
                event_type=event_type,
                bounce_class=bounce_class if event_type is EventType.BOUNCED else None,
                occurred_at=occurred,
                provider=KIND,
                provider_account=account,
                provider_message_id=str(message_id) if message_id else None,
                message_key=metadata["mailers_message_key"],
                workspace=metadata["mailers_workspace"],
                stream=metadata["mailers_stream"],
                campaign=metadata["mailers_campaign"],
                recipient=recipient,
                sending_domain=domain,
                reason=reason,
                url=str(detail["link"]) if name == "Click" and detail.get("link") else None,
                raw_payload=raw,
            )
        )
    return events


_DETAIL_KEYS = {
    "Bounce": "bounce",
    "Complaint": "complaint",
    "Delivery": "delivery",
    "DeliveryDelay": "deliveryDelay",
    "Send": "send",
    "Reject": "reject",
    "Open": "open",
    "Click": "click",
    "Rendering Failure": "failure",
    "RenderingFailure": "failure",
    "Subscription": "subscription",
}
"""``eventType`` → the key of its detail object (contents page, "Top-level JSON object")."""

_METADATA = ("mailers_message_key", "mailers_workspace", "mailers_stream", "mailers_campaign")


def _recipients(
    name: str, detail: dict[str, Any], mail: dict[str, Any]
) -> list[tuple[str | None, str | None]]:
    """(recipient, reason) pairs: the per-recipient lists where SES has them, else the
    message's destination (Mailers sends to one recipient per message)."""
    if name == "Bounce":
        kind = "/".join(str(detail[k]) for k in ("bounceType", "bounceSubType") if detail.get(k))
        return [
            (
                _address(r.get("emailAddress")),
                _reason(kind, r.get("status"), r.get("diagnosticCode")),
            )
            for r in _dicts(detail.get("bouncedRecipients"))
        ] or [(None, _reason(kind))]
    if name == "DeliveryDelay":
        return [
            (
                _address(r.get("emailAddress")),
                _reason(detail.get("delayType"), r.get("status"), r.get("diagnosticCode")),
            )
            for r in _dicts(detail.get("delayedRecipients"))
        ] or [(None, _reason(detail.get("delayType")))]
    if name == "Complaint":
        why = _reason(
            "complaint", detail.get("complaintFeedbackType"), detail.get("complaintSubType")
        )
        return [
            (_address(r.get("emailAddress")), why)
            for r in _dicts(detail.get("complainedRecipients"))
        ] or [(None, why)]
    reason = None
    if name == "Reject":
        reason = _reason(detail.get("reason"))
    elif name in ("Rendering Failure", "RenderingFailure"):
        reason = _reason(detail.get("templateName"), detail.get("errorMessage"))
    elif name == "Subscription":
        reason = _reason(detail.get("source"), detail.get("contactList"))
    if name == "Delivery":
        addresses = detail.get("recipients") or mail.get("destination")
    else:
        addresses = mail.get("destination")
    found = [(_address(a), reason) for a in _list(addresses)]
    return found or [(None, reason)]


def _opted_out(subscription: dict[str, Any]) -> bool:
    """Whether a ``Subscription`` record is an opt-out: ``unsubscribeAll`` turned on, or a
    topic whose status became ``OptOut`` (an opt-in must never suppress anyone)."""
    new, old = (
        _dict(subscription.get("newTopicPreferences")),
        _dict(subscription.get("oldTopicPreferences")),
    )
    if new.get("unsubscribeAll") is True and old.get("unsubscribeAll") is not True:
        return True

    def opted_out(prefs: dict[str, Any]) -> set[str]:
        return {
            str(t.get("topicName"))
            for t in _list(prefs.get("topicSubscriptionStatus"))
            if isinstance(t, dict) and t.get("subscriptionStatus") == "OptOut"
        }

    return bool(opted_out(new) - opted_out(old))


def _unknown(account: str, raw: str, envelope: dict[str, Any] | None) -> CanonicalEvent:
    sns_id = (envelope or {}).get("MessageId")
    return CanonicalEvent(
        event_id=derive_event_id(KIND, "sns", str(sns_id))
        if sns_id
        else derive_event_id(KIND, raw),
        event_type=EventType.UNKNOWN,
        occurred_at=_timestamp((envelope or {}).get("Timestamp")) or utcnow(),
        provider=KIND,
        provider_account=account,
        raw_payload=raw,
    )


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: object) -> list[dict[str, Any]]:
    return [item for item in _list(value) if isinstance(item, dict)]


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _address(value: object) -> str | None:
    address = parseaddr(str(value))[1] if value else ""
    return address or None


def _reason(*parts: object) -> str | None:
    text = "; ".join(str(p) for p in parts if p)
    return text[:1000] or None


def _tag(tags: dict[str, Any], name: str) -> str | None:
    values = tags.get(name)
    if isinstance(values, list) and values:
        return str(values[0])
    return str(values) if isinstance(values, str) else None


def _header(mail: dict[str, Any], name: str) -> str | None:
    wanted = name.lower()
    for header in _list(mail.get("headers")):
        if isinstance(header, dict) and str(header.get("name", "")).lower() == wanted:
            return str(header.get("value", "")).strip() or None
    return None


def _timestamp(value: object) -> datetime | None:
    """An SES/SNS timestamp (ISO 8601, e.g. ``2017-08-05T00:41:02.669Z``) as naive UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace(" +", "+"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


# --- webhooks (SNS) -----------------------------------------------------------------------------


class CertificateStore:
    """SNS signing certificates' public keys, fetched once per URL and cached.

    ``fetch(url) -> bytes`` gets the PEM; the default does an HTTPS GET that follows no
    redirects. Only URLs that pass :func:`check_certificate_url` are ever fetched.
    """

    def __init__(self, fetch: Callable[[str], bytes] | None = None, *, max_entries: int = 64):
        self._fetch = fetch or _https_get
        self._keys: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def public_key(self, url: str) -> Any:
        """The RSA public key of the certificate at ``url`` (checked before any fetch)."""
        check_certificate_url(url)
        with self._lock:
            key = self._keys.get(url)
        if key is not None:
            return key
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import rsa

        try:
            pem = self._fetch(url)
        except Exception as err:
            raise WebhookRejected(
                f"could not fetch the SNS signing certificate: {type(err).__name__}"
            ) from err
        try:
            key = x509.load_pem_x509_certificate(pem).public_key()
        except ValueError as err:
            raise WebhookRejected("the SNS signing certificate is not a PEM certificate") from err
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookRejected("the SNS signing certificate has no RSA key")
        with self._lock:
            if len(self._keys) >= self._max:
                self._keys.pop(next(iter(self._keys)))
            self._keys[url] = key
        return key


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect could leave the checked host: refuse it


def _https_get(url: str) -> bytes:
    opener = urllib.request.build_opener(_NoRedirects)
    with opener.open(url, timeout=10) as response:  # URL checked: https, SNS host
        data: bytes = response.read(MAX_CERTIFICATE_BYTES + 1)
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise ValueError("certificate too large")
    return data


DEFAULT_CERTIFICATES = CertificateStore()
"""The process-wide certificate cache used when ``verify_webhook`` is given none."""


def check_certificate_url(url: str, *, region: str | None = None) -> None:
    """Refuse a ``SigningCertURL`` that is not ``https://sns.<region>.amazonaws.com/…pem``.

    Checked before anything is fetched, so a forged message cannot make the receiver
    fetch (or trust) a certificate from anywhere else.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise WebhookRejected("malformed SigningCertURL") from err
    host = parts.hostname or ""
    match = SNS_HOST.match(host)
    if (
        parts.scheme != "https"
        or match is None
        or parts.username is not None
        or parts.password is not None
        or port not in (None, 443)
        or not parts.path.endswith(".pem")
        or parts.query
        or parts.fragment
    ):
        raise WebhookRejected(
            "SigningCertURL is not an https://sns.<region>.amazonaws.com/....pem URL"
        )
    if region is not None and match.group("region") != region:
        raise WebhookRejected("SigningCertURL is in another region than the message's topic")


def verify_webhook(
    request: WebhookRequest,
    config: ProviderAccountConfig,
    guard: ReplayGuard,
    *,
    now: float | None = None,
    certificates: CertificateStore | None = None,
) -> None:
    """Refuse an SNS message that is malformed, not signed by SNS, stale or replayed.

    Checks, in order: the JSON shape and type (``Notification``,
    ``SubscriptionConfirmation``, ``UnsubscribeConfirmation``; the
    ``x-amz-sns-message-type`` header must agree), the topic (``events_topic_arns`` when
    configured), the signing certificate URL (https, ``sns.<topic's region>.amazonaws.com``,
    checked before fetching), the age of the signed ``Timestamp`` (at most an hour), the
    RSA signature over the canonical string (SHA1 for ``SignatureVersion`` 1, SHA256 for
    2), and finally that the ``MessageId`` was not seen before. SNS has no shared secret:
    authenticity comes from Amazon's certificate, fetched over verified TLS from an SNS
    host. A verified ``SubscriptionConfirmation`` returns normally; confirm it with
    :func:`subscription_confirmation_url`.
    """
    settings = Settings.model_validate(config.settings)
    message = _sns_message(request)
    kind = str(message["Type"])
    fields = SIGNED_FIELDS[kind]
    required = [f for f in fields if f != "Subject"] + ["Signature", "SigningCertURL"]
    missing = [f for f in required if not isinstance(message.get(f), str)]
    if missing:
        raise WebhookRejected(f"SNS message lacks {', '.join(missing)}")
    declared = request.header("x-amz-sns-message-type")
    if declared is not None and declared != kind:
        raise WebhookRejected("x-amz-sns-message-type does not match the message's Type")
    topic = message["TopicArn"]
    if settings.events_topic_arns and topic not in settings.events_topic_arns:
        raise WebhookRejected("SNS message from a topic not in events_topic_arns")
    topic_parts = topic.split(":")
    if len(topic_parts) != 6 or topic_parts[0] != "arn" or topic_parts[2] != "sns":
        raise WebhookRejected("TopicArn is not an SNS topic ARN")
    algorithm = SIGNATURE_HASHES.get(str(message.get("SignatureVersion")))
    if algorithm is None:
        raise WebhookRejected("unsupported SNS SignatureVersion")
    check_certificate_url(message["SigningCertURL"], region=topic_parts[3])

    sent = _timestamp(message["Timestamp"])
    if sent is None:
        raise WebhookRejected("SNS Timestamp is not an ISO 8601 time")
    current = datetime.fromtimestamp(epoch() if now is None else now, UTC)
    age = (current.replace(tzinfo=None) - sent).total_seconds()
    if age > WEBHOOK_MAX_AGE_SECONDS:
        raise WebhookRejected(f"stale SNS message (sent {age:.0f} s ago)")
    if age < -WEBHOOK_MAX_SKEW_SECONDS:
        raise WebhookRejected("SNS message timestamped in the future")

    try:
        signature = base64.b64decode(message["Signature"], validate=True)
    except (binascii.Error, ValueError) as err:
        raise WebhookRejected("SNS Signature is not base64") from err
    key = (certificates or DEFAULT_CERTIFICATES).public_key(message["SigningCertURL"])
    _check_signature(key, signature, string_to_sign(message), algorithm)

    ttl = WEBHOOK_MAX_AGE_SECONDS + WEBHOOK_MAX_SKEW_SECONDS
    if not guard.first_use(f"{KIND}:sns:{message['MessageId']}", ttl_seconds=ttl):
        raise WebhookRejected("replayed SNS message (MessageId already seen)")


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The canonical string SNS signs: ``name\\nvalue\\n`` for each signed field present."""
    fields = SIGNED_FIELDS.get(str(message.get("Type")))
    if fields is None:
        raise WebhookRejected("not an SNS message type")
    text = "".join(
        f"{name}\n{message[name]}\n" for name in fields if isinstance(message.get(name), str)
    )
    return text.encode("utf-8")


def _check_signature(key: Any, signature: bytes, data: bytes, algorithm: str) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    digest = hashes.SHA1() if algorithm == "sha1" else hashes.SHA256()  # SHA1: SignatureVersion 1
    try:
        key.verify(signature, data, padding.PKCS1v15(), digest)
    except InvalidSignature as err:
        raise WebhookRejected("SNS signature does not verify") from err


def _sns_message(request: WebhookRequest) -> dict[str, Any]:
    if len(request.body) > MAX_WEBHOOK_BYTES:
        raise WebhookRejected("webhook body too large for an SNS message")
    try:
        message = json.loads(request.body)
    except ValueError as err:
        raise WebhookRejected("webhook body is not JSON") from err
    if not isinstance(message, dict) or message.get("Type") not in SIGNED_FIELDS:
        raise WebhookRejected("webhook body is not an SNS message")
    return message


def subscription_confirmation_url(request: WebhookRequest) -> str | None:
    """The ``SubscribeURL`` to GET to confirm an SNS subscription, for a (verified)
    ``SubscriptionConfirmation``; ``None`` for any other message. The URL is checked to be
    ``https://sns.<region>.amazonaws.com/...`` so a receiver never calls elsewhere."""
    message = _sns_message(request)
    if message.get("Type") != "SubscriptionConfirmation":
        return None
    url = message.get("SubscribeURL")
    if not isinstance(url, str):
        raise WebhookRejected("SubscriptionConfirmation without SubscribeURL")
    parts = urlsplit(url)
    if parts.scheme != "https" or SNS_HOST.match(parts.hostname or "") is None:
        raise WebhookRejected("SubscribeURL is not an https://sns.<region>.amazonaws.com URL")
    return url


# --- polling (SQS) ------------------------------------------------------------------------------


def poll_events(
    account: str, config: ProviderAccountConfig, settings: Settings, cursor: str | None
) -> tuple[list[bytes], str | None]:
    """New SES event messages from the account's SQS queue (``events_queue_url``).

    SQS has no position to resume from, only messages to delete, and the poller lands what
    this returns *after* it returns. So deletion is deferred by one poll: the returned
    cursor lists the receipt handles of the messages just returned, and the next call
    (which only happens once those payloads have landed and the cursor was stored) deletes
    them before reading more. A crash before landing leaves them undeleted; they come back
    after ``events_visibility_timeout`` and are landed again (ingestion drops repeated event
    ids). Nothing is lost; at worst something is read twice. With nothing new the cursor
    is unchanged (or, right after a delete, an empty one).
    """
    if not settings.events_queue_url:
        raise ConfigError(f"SES account {account!r}: poll_events needs settings.events_queue_url")
    pending = _pending_handles(cursor)
    client = _client(
        "sqs",
        settings,
        resolve_credentials(account, config),
        read_timeout=settings.events_wait_seconds + settings.timeout_seconds,
    )
    try:
        _delete(client, account, settings.events_queue_url, pending)
        payloads, handles = _receive(client, account, settings)
    finally:
        client.close()
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


def _delete(client: Any, account: str, queue_url: str, handles: list[str]) -> None:
    for start in range(0, len(handles), 10):  # DeleteMessageBatch takes up to 10 entries
        entries = [
            {"Id": str(i), "ReceiptHandle": handle}
            for i, handle in enumerate(handles[start : start + 10])
        ]
        answer = _sqs_call(
            account, client.delete_message_batch, QueueUrl=queue_url, Entries=entries
        )
        for failure in answer.get("Failed") or []:
            # An expired receipt handle: the message came back and was (or will be) landed
            # again with a newer handle, which a later poll deletes.
            _log.debug("SES events queue: delete failed: %s", failure.get("Code"))


def _receive(client: Any, account: str, settings: Settings) -> tuple[list[bytes], list[str]]:
    """Up to ``events_max_messages`` messages, each once (a message that turns visible again
    during the poll keeps its first payload and its newest receipt handle, the one SQS
    deletes with)."""
    payloads: dict[str, bytes] = {}
    handles: dict[str, str] = {}
    while len(handles) < settings.events_max_messages:
        answer = _sqs_call(
            account,
            client.receive_message,
            QueueUrl=settings.events_queue_url,
            MaxNumberOfMessages=min(10, settings.events_max_messages - len(handles)),
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
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return method(**kwargs)
    except ClientError as err:
        error = err.response.get("Error") or {}
        status = int((err.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        code = str(error.get("Code") or status)
        text = _REDACTOR.redact(f"{code}: {error.get('Message') or ''}")
        if code in AUTH_ERRORS or status in (401, 403):
            raise ProviderAuthError(account, f"SQS refused the account ({text})") from err
        raise ProviderUnavailable(account, f"SQS events queue: {text}") from err
    except BotoCoreError as err:
        raise ProviderUnavailable(account, f"SQS events queue: {type(err).__name__}") from err
