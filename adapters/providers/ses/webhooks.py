"""Verifying SNS messages posted to the webhook receiver, and confirming subscriptions.

SES event publishing sends each event to an SNS topic; an HTTPS subscription of the
receiver's URL to that topic posts every SNS message to it. SNS first posts a
``SubscriptionConfirmation`` and delivers nothing until its ``SubscribeURL`` is visited
(https://docs.aws.amazon.com/sns/latest/dg/http-subscription-confirmation-json.html).
:func:`verify_webhook` visits it for a verified confirmation of a topic the account lists
in ``settings.events_topic_arns`` and refuses every other confirmation: the receiver
subscribes to no topic the operator did not name.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from adapters.providers.ses.settings import KIND, SesSettings
from adapters.providers.ses.sns import (
    DEFAULT_CERTIFICATES,
    SIGNATURE_HASHES,
    SIGNED_FIELDS,
    CertificateStore,
    check_certificate_url,
    check_signature,
    check_subscribe_url,
    https_get,
    string_to_sign,
    timestamp,
)
from mailers.clock import epoch
from mailers.config import ProviderAccountConfig
from mailers.errors import WebhookMalformed, WebhookRejected
from mailers.webhooks import ReplayGuard, WebhookRequest

_log = logging.getLogger(__name__)

WEBHOOK_MAX_AGE_SECONDS = 3600.0
"""SNS messages older than this (by their signed ``Timestamp``) are refused as stale."""
WEBHOOK_MAX_SKEW_SECONDS = 300.0
"""How far in the future a ``Timestamp`` may be (clock skew) before it is refused."""
MAX_WEBHOOK_BYTES = 1 << 20
"""SNS messages are at most 256 KiB; anything much larger is not from SNS."""


class SubscriptionConfirmations:
    """Confirms SNS subscriptions by GETting their ``SubscribeURL``, each URL once.

    ``fetch(url) -> bytes`` does the GET; the default is
    :func:`~adapters.providers.ses.sns.https_get`. Only URLs that passed
    :func:`~adapters.providers.ses.sns.check_subscribe_url` reach it. Confirmations are
    made one at a time, and a URL confirmed once is not fetched again, so SNS retrying a
    confirmation (same message) never confirms twice. A failed GET is not recorded: the
    next retry tries again.
    """

    def __init__(self, fetch: Callable[[str], bytes] | None = None, *, max_entries: int = 256):
        self._fetch = fetch or https_get
        self._confirmed: dict[str, str] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    @property
    def confirmed_topics(self) -> list[str]:
        """The topic of every subscription confirmed (and still remembered), oldest first."""
        with self._lock:
            return list(self._confirmed.values())

    def confirm(self, topic: str, url: str) -> None:
        """Visit ``url`` to confirm the subscription to ``topic``, unless that was done.

        A failed visit raises ``WebhookRejected``; neither it nor the log names the URL,
        whose ``Token`` is what confirms the subscription.
        """
        with self._lock:
            if url in self._confirmed:
                return
            try:
                self._fetch(url)
            except Exception as err:
                raise WebhookRejected(
                    f"could not confirm the SNS subscription to {topic}: {type(err).__name__}"
                ) from err
            if len(self._confirmed) >= self._max:
                self._confirmed.pop(next(iter(self._confirmed)))
            self._confirmed[url] = topic
        _log.info("confirmed the SNS subscription to %s", topic)


DEFAULT_CONFIRMATIONS = SubscriptionConfirmations()
"""The process-wide record used when ``verify_webhook`` is given none."""


def verify_webhook(
    request: WebhookRequest,
    config: ProviderAccountConfig,
    guard: ReplayGuard,
    *,
    now: float | None = None,
    certificates: CertificateStore | None = None,
    confirmations: SubscriptionConfirmations | None = None,
) -> None:
    """Refuse an SNS message that is malformed, not signed by SNS, stale or replayed, and
    confirm a verified ``SubscriptionConfirmation`` of a listed topic.

    Checks, in order: the JSON shape and type (``Notification``,
    ``SubscriptionConfirmation``, ``UnsubscribeConfirmation``; the
    ``x-amz-sns-message-type`` header must agree), the topic (``events_topic_arns`` when
    configured; a ``SubscriptionConfirmation`` must name a listed topic and an SNS
    ``SubscribeURL``), the signing certificate URL (https,
    ``sns.<topic's region>.amazonaws.com``, checked before fetching), the age of the signed
    ``Timestamp`` (at most an hour), the RSA signature over the canonical string (SHA1 for
    ``SignatureVersion`` 1, SHA256 for 2), and finally that the ``MessageId`` was not seen
    before. SNS has no shared secret: authenticity comes from Amazon's certificate, fetched
    over verified TLS from an SNS host.

    A verified ``SubscriptionConfirmation`` is confirmed (:class:`SubscriptionConfirmations`)
    before the ``MessageId`` is used up, so a failed confirmation is tried again when SNS
    retries it; it then returns normally and the receiver answers 200.
    """
    settings = SesSettings.model_validate(config.settings)
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
    if kind == "SubscriptionConfirmation":
        _check_confirmation(message, settings, region=topic_parts[3])
    algorithm = SIGNATURE_HASHES.get(str(message.get("SignatureVersion")))
    if algorithm is None:
        raise WebhookRejected("unsupported SNS SignatureVersion")
    check_certificate_url(message["SigningCertURL"], region=topic_parts[3])

    sent = timestamp(message["Timestamp"])
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
    check_signature(key, signature, string_to_sign(message), algorithm)

    if kind == "SubscriptionConfirmation":
        (confirmations or DEFAULT_CONFIRMATIONS).confirm(topic, message["SubscribeURL"])
    ttl = WEBHOOK_MAX_AGE_SECONDS + WEBHOOK_MAX_SKEW_SECONDS
    if not guard.first_use(f"{KIND}:sns:{message['MessageId']}", ttl_seconds=ttl):
        raise WebhookRejected("replayed SNS message (MessageId already seen)")


def _check_confirmation(message: dict[str, Any], settings: SesSettings, *, region: str) -> None:
    """Refuse a ``SubscriptionConfirmation`` that must not be confirmed: its topic is not
    listed, or its ``SubscribeURL`` is not SNS's. Checked before any fetch."""
    topic = message["TopicArn"]
    if topic not in settings.events_topic_arns:
        listed = "is empty" if not settings.events_topic_arns else "does not list it"
        raise WebhookRejected(
            f"SubscriptionConfirmation for {topic} not confirmed: settings.events_topic_arns "
            f"{listed} (add the topic there to have its subscription confirmed)"
        )
    check_subscribe_url(message["SubscribeURL"], region=region)


def _sns_message(request: WebhookRequest) -> dict[str, Any]:
    if len(request.body) > MAX_WEBHOOK_BYTES:
        raise WebhookRejected("webhook body too large for an SNS message")
    try:
        message = json.loads(request.body)
    except ValueError as err:
        raise WebhookMalformed("webhook body is not JSON") from err
    if not isinstance(message, dict) or message.get("Type") not in SIGNED_FIELDS:
        raise WebhookMalformed("webhook body is not an SNS message")
    return message
