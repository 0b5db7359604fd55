"""Amazon SES v2 against moto (real HTTP on 127.0.0.1), plus SNS webhooks and SQS polling.

moto runs as a ``ThreadedMotoServer`` on an ephemeral loopback port. Sends go through a
small loopback front (an :class:`adapters.simulator.Simulator` route that forwards each
``SendEmail`` to moto) because moto cannot do what the contract needs on its own:

* it accepts any access key, so the front checks the SigV4 ``Credential`` and answers
  ``403 UnrecognizedClientException`` for a wrong key, as SES does;
* it cannot throttle or hang, so the front injects ``429 Retry-After``, ``503``, a
  held request (read timeout) or a dropped socket through ``Simulator.inject``;
* it does not keep ``EmailTags``, so the front records the request body as SES received
  it, and refuses recipients at the reject domain the way the SES sandbox refuses
  unverified recipients (``400 MessageRejected``).

Everything else (identity verification, ``MessageRejected`` for an unverified sender, the
stored raw MIME, SQS queues, SNS → SQS delivery) is moto's own behaviour. SNS signatures
are checked with a real RSA key and a self-signed certificate made here, served by an
injected fetcher (there is no internet).
"""

from __future__ import annotations

import base64
import email
import json
import logging
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from botocore.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from moto.backends import get_backend
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from pydantic import ValidationError

from adapters.providers import ses
from adapters.providers.registry import account_quotas, build_provider, check_account
from adapters.providers.ses import SesSettings as Settings
from adapters.providers.ses import webhooks
from adapters.providers.ses.sending import SesProvider
from adapters.providers.ses.sns import CertificateStore, https_get, string_to_sign
from adapters.providers.ses.webhooks import SubscriptionConfirmations
from adapters.serve.embedded import EmbeddedServer
from adapters.simulator import Fault, Request, Response, Simulator
from adapters.simulator.outcomes import refuses
from mailers import clock
from mailers.config import MailersConfig, ProviderAccountConfig
from mailers.config import Settings as MailersSettings
from mailers.errors import ConfigError, ProviderUnavailable, SecretMissing, WebhookRejected
from mailers.events import BounceClass, EventType
from mailers.keys import message_key
from mailers.messages import MESSAGE_KEY_HEADER
from mailers.pacing import ProviderQuota
from mailers.polling import PollTarget, poll_into_landing
from mailers.secrets import SecretRef
from mailers.webhooks import SeenTokens, WebhookRequest
from tests.adapters.provider_contract import (
    CLIENT_TIMEOUT,
    HELD,
    ProviderContract,
    account_left_the_run,
    all_in_doubt,
    make_message,
)

ACCOUNT = "acme_ses"
REGION = "us-east-1"
SENDING_DOMAIN = "news.acme.test"
TOPIC_ARN = f"arn:aws:sns:{REGION}:123456789012:ses-events"
CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "ses"
FIXTURE_TYPES = {
    "delivered": (EventType.DELIVERED, None),
    "hard_bounce": (EventType.BOUNCED, BounceClass.HARD),
    "soft_bounce": (EventType.BOUNCED, BounceClass.SOFT),
    "deferral": (EventType.DEFERRED, None),
    "complaint": (EventType.COMPLAINED, None),
    "open": (EventType.OPENED, None),
    "click": (EventType.CLICKED, None),
    "unsubscribe": (EventType.UNSUBSCRIBED, None),
    "reject": (EventType.REJECTED, None),
    "rendering_failure": (EventType.FAILED, None),
    "send": (EventType.UNKNOWN, None),
    "unknown": (EventType.UNKNOWN, None),
}

VALID_KEY_ID = "AKIAMAILERSVALID0001"
VALID_SECRET = "mailers-test-secret-access-key-valid-0001"
SESSION_TOKEN = "mailers-test-session-token-0001-IQoJb3JpZ2luX2Vj"
WRONG_KEY_ID = "AKIAMAILERSWRONG0002"
WRONG_SECRET = "mailers-test-secret-access-key-wrong-0002"
SECRETS = [VALID_KEY_ID, VALID_SECRET, SESSION_TOKEN, WRONG_KEY_ID, WRONG_SECRET]
ENV = {
    "SES_TEST_KEY_ID": VALID_KEY_ID,
    "SES_TEST_SECRET": VALID_SECRET,
    "SES_TEST_TOKEN": SESSION_TOKEN,
    "SES_TEST_WRONG_KEY_ID": WRONG_KEY_ID,
    "SES_TEST_WRONG_SECRET": WRONG_SECRET,
}

# SES's answers, as documented on the SendEmail and common errors pages.
SANDBOX_REFUSAL = (
    "Email address is not verified. The following identities failed the check in region "
    "US-EAST-1: {recipient}"
)
INVALID_TOKEN = "The security token included in the request is invalid."


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = clock.now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM)


SNS_KEY = _key()
SNS_CERT = _certificate(SNS_KEY)
ATTACKER_KEY = _key()

# The string to sign, written out here from the SNS docs (independently of the adapter).
CANONICAL_FIELDS = {
    "Notification": ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"],
    "SubscriptionConfirmation": [
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ],
}
CANONICAL_FIELDS["UnsubscribeConfirmation"] = CANONICAL_FIELDS["SubscriptionConfirmation"]


def sign(
    message: dict[str, Any],
    key: rsa.RSAPrivateKey = SNS_KEY,
    *,
    version: str = "2",
    cert_url: str = CERT_URL,
) -> dict[str, Any]:
    """``message`` signed the way SNS signs it (SignatureVersion 1: SHA1, 2: SHA256)."""
    signed = {**message, "SignatureVersion": version, "SigningCertURL": cert_url}
    text = "".join(
        f"{name}\n{signed[name]}\n" for name in CANONICAL_FIELDS[signed["Type"]] if name in signed
    )
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(text.encode(), padding.PKCS1v15(), digest)
    signed["Signature"] = base64.b64encode(signature).decode()
    return signed


def sns_request(message: dict[str, Any], **headers: str) -> WebhookRequest:
    return WebhookRequest(
        body=json.dumps(message, indent=2).encode(),
        headers={
            "x-amz-sns-message-type": message["Type"],
            "x-amz-sns-message-id": message["MessageId"],
            "x-amz-sns-topic-arn": message["TopicArn"],
            "Content-Type": "text/plain; charset=UTF-8",
            **headers,
        },
    )


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def envelope(record: dict[str, Any] | str, *, sent: datetime | None = None) -> dict[str, Any]:
    """An SNS Notification carrying ``record`` (unsigned)."""
    body = record if isinstance(record, str) else json.dumps(record, separators=(",", ":"))
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid5(uuid.NAMESPACE_URL, body)),
        "TopicArn": TOPIC_ARN,
        "Message": body,
        "Timestamp": iso(sent or clock.now()),
        "UnsubscribeURL": f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe&x=1",
    }


class FakeCertificates:
    """An injected certificate fetcher: serves the test certificate, records every URL."""

    def __init__(self, pem: bytes = SNS_CERT) -> None:
        self.pem = pem
        self.fetched: list[str] = []
        self.store = CertificateStore(self.fetch)

    def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        return self.pem


def ses_record(event: str, recipient: str, key: str, **detail: Any) -> dict[str, Any]:
    """An SES event-publishing record of the contract's ``event`` name for one message."""
    mail = {
        "timestamp": "2026-11-23T08:00:00.000Z",
        "source": f"Acme <news@{SENDING_DOMAIN}>",
        "sendingAccountId": "123456789012",
        "messageId": f"0100019{message_key('x', 'y', key, 'z')[:20]}-000000",
        "destination": [recipient],
        "headersTruncated": False,
        "headers": [{"name": MESSAGE_KEY_HEADER, "value": key}],
        "tags": {
            "ses:configuration-set": ["mailers-events"],
            "mailers_message_key": [key],
            "mailers_workspace": ["acme"],
            "mailers_stream": ["lifecycle"],
            "mailers_campaign": ["pro_tips"],
        },
    }
    at = "2026-11-23T08:00:05.000Z"
    records: dict[str, dict[str, Any]] = {
        "delivered": {
            "eventType": "Delivery",
            "delivery": {"timestamp": at, "recipients": [recipient], "smtpResponse": "250 ok"},
        },
        "bounce": {
            "eventType": "Bounce",
            "bounce": {
                "bounceType": "Permanent",
                "bounceSubType": "General",
                "bouncedRecipients": [
                    {"emailAddress": recipient, "status": "5.1.1", "diagnosticCode": "550"}
                ],
                "timestamp": at,
                "feedbackId": "fb-1",
            },
        },
        "complaint": {
            "eventType": "Complaint",
            "complaint": {
                "complainedRecipients": [{"emailAddress": recipient}],
                "timestamp": at,
                "feedbackId": "fb-2",
                "complaintFeedbackType": "abuse",
            },
        },
        "open": {"eventType": "Open", "open": {"timestamp": at, "ipAddress": "192.0.2.1"}},
        "click": {
            "eventType": "Click",
            "click": {"timestamp": at, "link": "https://example.test/landing"},
        },
    }
    record = {**records[event], "mail": mail}
    if detail:
        record[next(k for k in record if k not in ("eventType", "mail"))].update(detail)
    return record


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


ADMIN = boto3.session.Session(aws_access_key_id="moto-admin", aws_secret_access_key="moto-admin")


def aws_client(service: str, url: str) -> Any:
    """A client for setting moto up (not the adapter's)."""
    return ADMIN.client(
        service,
        region_name=REGION,
        endpoint_url=url,
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


@pytest.fixture
def moto(moto_url: str) -> Iterator[str]:
    """A fresh moto, with the sending domain verified."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"))
    admin = aws_client("sesv2", moto_url)
    admin.create_email_identity(EmailIdentity=SENDING_DOMAIN)
    admin.close()
    yield moto_url


def moto_sent() -> list[Any]:
    """The messages moto's SES backend accepted (its in-process store)."""
    return list(get_backend("ses")[DEFAULT_ACCOUNT_ID][REGION].sent_messages)


def access_key_of(request: Request) -> str | None:
    authorization = request.header("Authorization") or ""
    if "Credential=" not in authorization:
        return None
    return authorization.split("Credential=", 1)[1].split("/", 1)[0]


def ses_error(status: int, code: str, message: str) -> Response:
    """An SES v2 (rest-json) error answer."""
    return Response.json({"message": message}, status, **{"x-amzn-ErrorType": code})


class SesFront:
    """SES's send endpoint on loopback: checks the key, records, refuses, forwards to moto."""

    def __init__(self, moto_url: str) -> None:
        self.moto_url = moto_url
        self.sim = Simulator().start()
        self.sim.store["ses"] = {"requests": []}
        self.answers: list[Response] = []
        self.sim.route("ses", "POST", r"/v2/email/outbound-emails", self._send_email)

    @property
    def requests(self) -> list[dict[str, Any]]:
        recorded: list[dict[str, Any]] = self.sim.store["ses"]["requests"]
        return recorded

    def _send_email(self, request: Request) -> Response:
        if access_key_of(request) != VALID_KEY_ID:
            return ses_error(403, "UnrecognizedClientException", INVALID_TOKEN)
        body = request.json()
        raw = base64.b64decode(body["Content"]["Raw"]["Data"])
        self.requests.append(
            {**body, "raw": raw, "session_token": request.header("X-Amz-Security-Token")}
        )
        if self.answers:
            return self.answers.pop(0)
        for recipient in body["Destination"]["ToAddresses"]:
            if refuses(recipient):
                message = SANDBOX_REFUSAL.format(recipient=recipient)
                return ses_error(400, "MessageRejected", message)
        return self._forward(request)

    def _forward(self, request: Request) -> Response:
        skip = {"host", "content-length", "connection"}
        forwarded = urllib.request.Request(
            self.moto_url + request.path,
            data=request.body,
            headers={k: v for k, v in request.headers.items() if k.lower() not in skip},
            method=request.method,
        )
        try:
            with urllib.request.urlopen(forwarded, timeout=5) as answer:
                status, headers, body = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as err:
            status, headers, body = err.code, err.headers, err.read()
        kept = {
            k: v
            for k, v in headers.items()
            if k.lower() in {"content-type", "x-amzn-requestid", "x-amzn-errortype"}
        }
        return Response(status, body, kept)

    def stop(self) -> None:
        self.sim.stop()


@pytest.fixture
def front(moto: str) -> Iterator[SesFront]:
    """A front of the test's own (before a fresh moto): no request outlives its test."""
    front = SesFront(moto)
    yield front
    front.stop()


class SesHarness:
    """The contract's harness: SES through the loopback front to moto."""

    secrets = SECRETS
    supports_webhooks = True
    rate_limits_lift = True
    spec = ses.SPEC
    fixtures = FIXTURES
    fixture_types = FIXTURE_TYPES
    parse = staticmethod(ses.parse)

    def __init__(self, front: SesFront) -> None:
        self.front = front
        self.slept: list[float] = []
        self.certificates = FakeCertificates()
        self.providers: list[SesProvider] = []

    def config(self, *, valid_credentials: bool = True, **settings: Any) -> ProviderAccountConfig:
        key_id, secret = (
            ("SES_TEST_KEY_ID", "SES_TEST_SECRET")
            if valid_credentials
            else ("SES_TEST_WRONG_KEY_ID", "SES_TEST_WRONG_SECRET")
        )
        return ProviderAccountConfig(
            kind="ses",
            credentials={
                "access_key_id": SecretRef(env=key_id),
                "secret_access_key": SecretRef(env=secret),
                "session_token": SecretRef(env="SES_TEST_TOKEN"),
            },
            settings={
                "region": REGION,
                "endpoint_url": self.front.sim.base_url,
                "configuration_set": "mailers-events",
                "timeout_seconds": CLIENT_TIMEOUT,
                **settings,
            },
        )

    def provider(self, *, valid_credentials: bool = True, **settings: Any) -> SesProvider:
        config = self.config(valid_credentials=valid_credentials, **settings)
        provider = SesProvider(
            ACCOUNT,
            Settings.model_validate(config.settings),
            credentials=ses.resolve_credentials(ACCOUNT, config),
            sleep=self.slept.append,
        )
        self.providers.append(provider)
        return provider

    def inject_rate_limit(self, retry_after: float) -> None:
        self.front.sim.inject("ses", Fault(status=429, retry_after=retry_after))

    def inject_timeout(self) -> None:
        # Held far past the client's read timeout; the test's front drops it when it stops,
        # so it never reaches moto during a later test.
        self.front.sim.inject("ses", Fault(timeout=HELD))

    def delivered_keys(self) -> dict[str, str]:
        keys = {}
        for sent in moto_sent():
            parsed = email.message_from_string(sent.raw_data)
            keys[str(parsed[MESSAGE_KEY_HEADER])] = str(parsed["To"])
        return keys

    def signed_webhook(self, body: bytes) -> WebhookRequest:
        return sns_request(sign(json.loads(body)))

    def forged_webhook(self, body: bytes) -> WebhookRequest:
        return sns_request(sign(json.loads(body), ATTACKER_KEY))

    def stale_webhook(self, body: bytes) -> WebhookRequest:
        message = json.loads(body)
        message["Timestamp"] = iso(clock.now() - timedelta(hours=2))
        return sns_request(sign(message))

    def verify(self, request: WebhookRequest, guard: SeenTokens) -> None:
        ses.verify_webhook(request, self.config(), guard, certificates=self.certificates.store)

    def event_body(self, event: str, recipient: str, key: str) -> bytes:
        return json.dumps(envelope(ses_record(event, recipient, key))).encode()

    def unknown_event_body(self) -> bytes:
        record = ses_record("open", "ann@example.com", "k" * 32)
        record["eventType"] = "Teleport"
        return json.dumps(envelope(record)).encode()

    def close(self) -> None:
        for provider in self.providers:
            provider.close()


@pytest.fixture
def harness(front: SesFront, monkeypatch: pytest.MonkeyPatch) -> Iterator[SesHarness]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    harness = SesHarness(front)
    yield harness
    harness.close()


class TestContract(ProviderContract):
    """The shared provider contract, against moto behind the loopback front."""


def test_tags_headers_and_configuration_set_reach_ses(harness: SesHarness) -> None:
    message = make_message("ann@example.com")

    [result] = harness.provider().send_batch([message])

    assert result.accepted
    [request] = harness.front.requests
    assert request["EmailTags"] == [{"Name": k, "Value": v} for k, v in message.metadata.items()]
    assert request["ConfigurationSetName"] == "mailers-events"
    assert request["FromEmailAddress"] == "news@news.acme.test"
    assert request["Destination"] == {"ToAddresses": ["ann@example.com"]}
    assert request["session_token"] == SESSION_TOKEN
    [sent] = moto_sent()
    assert sent.id == result.provider_message_id
    mime = email.message_from_string(sent.raw_data)
    assert mime[MESSAGE_KEY_HEADER] == message.message_key
    assert mime["List-Unsubscribe"] == "<https://u.test/x>"
    assert mime["From"] == "Acme <news@news.acme.test>"
    assert mime.get_content_type() == "multipart/alternative"


def test_a_batch_goes_out_as_one_send_email_per_message(harness: SesHarness) -> None:
    messages = [make_message(f"user{i}@example.com") for i in range(5)]
    provider = harness.provider()

    results = provider.send_batch(messages)

    assert provider.max_batch_size == ses.MAX_BATCH_SIZE == 1
    assert [r.accepted for r in results] == [True] * 5
    assert len(harness.front.requests) == 5
    assert [r["Destination"]["ToAddresses"] for r in harness.front.requests] == [
        [m.recipient] for m in messages
    ]
    assert len(moto_sent()) == 5


def test_one_bad_entry_is_rejected_alone_and_the_others_go(harness: SesHarness) -> None:
    good = [make_message(f"ok{i}@example.com") for i in range(3)]
    unverified = replace(make_message("ann@example.com"), from_address="news@unverified.test")

    results = harness.provider().send_batch([good[0], unverified, *good[1:]])

    by_key = {r.message_key: r for r in results}
    rejected = by_key[unverified.message_key]
    assert not rejected.accepted
    # moto's own answer for an unverified sender: 400 MessageRejected.
    assert rejected.reason and "MessageRejected" in rejected.reason
    assert "Did not have authority to send from email news@unverified.test" in rejected.reason
    assert all(by_key[m.message_key].accepted for m in good)
    assert len(moto_sent()) == 3


def test_a_503_with_retry_after_then_success_is_retried(harness: SesHarness) -> None:
    harness.front.sim.inject("ses", Fault(status=503, retry_after=0.25))

    [result] = harness.provider().send_batch([make_message("retry@example.com")])

    assert result.accepted
    assert harness.slept == [0.25]
    assert len(moto_sent()) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_server_error_without_retry_after_is_in_doubt_not_retried(
    harness: SesHarness, status: int
) -> None:
    harness.front.sim.inject("ses", Fault(status=status))
    before = len(harness.front.sim.requests)

    results = harness.provider().send_batch([make_message("maybe@example.com")])

    assert all_in_doubt(results)
    assert f"SES {status}" in (results[0].reason or "")
    assert harness.slept == []
    assert len(harness.front.sim.requests) == before + 1


def test_throttling_that_persists_takes_the_account_out(harness: SesHarness) -> None:
    harness.front.sim.inject("ses", *[Fault(status=429)] * 3)
    messages = [make_message("busy@example.com"), make_message("next@example.com")]

    results = harness.provider().send_batch(messages)

    assert "gave up after 3 attempts" in account_left_the_run(results)
    assert harness.slept == [0.5, 1.0]
    assert moto_sent() == []


def test_a_refused_connection_is_retried_then_takes_the_account_out(
    harness: SesHarness,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    # Nothing listens there any more: connections are refused.

    results = harness.provider(endpoint_url=url).send_batch([make_message("x@example.com")])

    assert "could not connect" in account_left_the_run(results)
    assert harness.slept == [0.5, 1.0]


def test_a_dropped_connection_is_unknown_and_not_retried(harness: SesHarness) -> None:
    harness.front.sim.inject("ses", Fault(drop=True))

    results = harness.provider().send_batch([make_message("dropped@example.com")])

    assert all_in_doubt(results)
    assert harness.slept == []


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (400, "MessageRejected", "rejected"),
        (400, "MailFromDomainNotVerifiedException", "rejected"),
        (400, "BadRequestException", "rejected"),
        (400, "AccountSuspendedException", "auth"),
        (400, "SendingPausedException", "auth"),
        (404, "NotFoundException", "auth"),
        (403, "AccessDeniedException", "auth"),
        (403, "SignatureDoesNotMatch", "auth"),
        (400, "ThrottlingException", "retried"),
        (429, "TooManyRequestsException", "retried"),
        (500, "InternalFailure", "in doubt"),
        (503, "ServiceUnavailable", "in doubt"),
    ],
)
def test_ses_error_codes_map_to_outcomes(
    harness: SesHarness, status: int, code: str, outcome: str
) -> None:
    harness.front.answers.append(ses_error(status, code, f"SES says {code}"))
    message = make_message("coded@example.com")
    provider = harness.provider()

    results = provider.send_batch([message])

    if outcome == "auth":
        assert code in account_left_the_run(results)
        assert harness.slept == []
        return
    [result] = results
    if outcome == "rejected":
        assert not result.accepted
        assert result.reason == f"SES rejected: {code}: SES says {code}"
        assert harness.slept == []
    elif outcome == "in doubt":
        assert all_in_doubt(results)
        assert harness.slept == []
        assert len(harness.front.requests) == 1
    else:
        assert result.accepted  # the second attempt reached moto
        assert harness.slept == [0.5]


def test_credentials_never_reach_logs_errors_or_events(
    harness: SesHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    message = make_message("ann@example.com")

    [result] = harness.provider().send_batch([message])
    refused = harness.provider(valid_credentials=False).send_batch([message])
    harness.front.answers.append(ses_error(400, "MessageRejected", "nope"))
    [rejected] = harness.provider().send_batch([message])

    assert result.accepted and not rejected.accepted
    assert "UnrecognizedClientException" in account_left_the_run(refused)
    assert "Sending http request" in caplog.text  # botocore did log the requests...
    texts = [
        caplog.text,  # ...with every credential masked
        repr(refused),
        repr(ses.resolve_credentials(ACCOUNT, harness.config())),
        repr(rejected),
    ]
    body = harness.event_body("delivered", "ann@example.com", message.message_key)
    texts += [repr(e) for e in ses.parse(body, ACCOUNT)]
    for text in texts:
        assert all(secret not in text for secret in SECRETS)


def test_build_resolves_credentials_from_env_refs(
    harness: SesHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = harness.config()
    settings = Settings.model_validate(config.settings)

    provider = ses.build(ACCOUNT, config, settings, app=None)  # type: ignore[arg-type]
    try:
        assert provider.send_batch([make_message("built@example.com")])[0].accepted
    finally:
        provider.close()

    monkeypatch.delenv("SES_TEST_SECRET")
    with pytest.raises(SecretMissing, match="SES_TEST_SECRET") as info:
        ses.build(ACCOUNT, config, settings, app=None)  # type: ignore[arg-type]
    assert "secret_access_key" in str(info.value)


def test_credentials_come_in_pairs_or_not_at_all() -> None:
    half = ProviderAccountConfig(
        kind="ses", credentials={"access_key_id": SecretRef(env="X")}, settings={}
    )
    with pytest.raises(ConfigError, match="both"):
        ses.resolve_credentials(ACCOUNT, half)
    odd = ProviderAccountConfig(kind="ses", credentials={"api_key": SecretRef(env="X")})
    with pytest.raises(ConfigError, match="unknown credential keys"):
        ses.resolve_credentials(ACCOUNT, odd)
    assert ses.resolve_credentials(ACCOUNT, ProviderAccountConfig(kind="ses")) is None


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"region": "Europe"},
        {"region": REGION, "endpoint_url": "ftp://x"},
        {"region": REGION, "timeout_seconds": 0},
        {"region": REGION, "events_wait_seconds": 21},
        {"region": REGION, "api_key": "x"},
    ],
)
def test_invalid_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate(settings)


FIXTURE_KEY = message_key("acme", "pro_tips", "recipient@example.com", "w1")


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


@pytest.mark.parametrize("name", sorted(FIXTURE_TYPES))
def test_recorded_fixtures_carry_the_message_its_recipient_and_the_ses_record(
    name: str,
) -> None:
    payload = fixture(name)
    notification = json.loads(payload)

    [event] = ses.parse(payload, ACCOUNT)

    assert event.recipient == "recipient@example.com"
    assert event.provider_message_id == json.loads(notification["Message"])["mail"]["messageId"]
    assert (event.message_key, event.workspace, event.stream, event.campaign) == (
        FIXTURE_KEY,
        "acme",
        "lifecycle",
        "pro_tips",
    )
    assert event.sending_domain == "example.com"
    assert event.raw_payload == notification["Message"]
    assert event.event_id.startswith("ses:")


def test_fixture_details_reasons_times_and_urls() -> None:
    [bounce] = ses.parse(fixture("hard_bounce"), ACCOUNT)
    [soft] = ses.parse(fixture("soft_bounce"), ACCOUNT)
    [delay] = ses.parse(fixture("deferral"), ACCOUNT)
    [complaint] = ses.parse(fixture("complaint"), ACCOUNT)
    [click] = ses.parse(fixture("click"), ACCOUNT)
    [delivered] = ses.parse(fixture("delivered"), ACCOUNT)

    assert bounce.reason == "Permanent/General; 5.1.1; smtp; 550 5.1.1 user unknown"
    assert bounce.occurred_at == datetime(2017, 8, 5, 0, 41, 2, 669000)
    assert soft.reason and "452 4.2.2" in soft.reason
    assert delay.reason and "421 4.4.1" in delay.reason
    assert complaint.reason == "complaint; abuse"
    assert click.url == "http://docs.aws.amazon.com/ses/latest/DeveloperGuide/send-email-smtp.html"
    assert delivered.occurred_at == datetime(2016, 10, 19, 23, 21, 4, 133000)
    assert len({e.event_id for e in (bounce, soft, delay, complaint, click, delivered)}) == 6


def test_one_event_per_recipient_with_distinct_stable_ids() -> None:
    record = ses_record("bounce", "a@example.com", "k" * 32)
    record["bounce"]["bouncedRecipients"] = [
        {"emailAddress": "a@example.com", "status": "5.1.1"},
        {"emailAddress": "B <b@example.com>", "status": "5.1.1"},
    ]
    payload = json.dumps(envelope(record)).encode()

    events = ses.parse(payload, ACCOUNT)

    assert [e.recipient for e in events] == ["a@example.com", "b@example.com"]
    assert len({e.event_id for e in events}) == 2
    assert [e.event_id for e in ses.parse(payload, ACCOUNT)] == [e.event_id for e in events]


def test_the_bare_record_and_its_sns_envelope_give_the_same_events() -> None:
    record = ses_record("delivered", "ann@example.com", "k" * 32)
    wrapped = ses.parse(json.dumps(envelope(record)).encode(), ACCOUNT)
    # SQS raw message delivery: the body is the SES record itself.
    bare = ses.parse(json.dumps(record).encode(), ACCOUNT)

    assert [(e.event_id, e.event_type, e.message_key) for e in bare] == [
        (e.event_id, e.event_type, e.message_key) for e in wrapped
    ]


def test_the_message_key_header_is_the_fallback_for_missing_tags() -> None:
    record = ses_record("open", "ann@example.com", "f" * 32)
    del record["mail"]["tags"]

    [event] = ses.parse(json.dumps(envelope(record)).encode(), ACCOUNT)

    assert event.message_key == "f" * 32
    assert event.workspace is None


@pytest.mark.parametrize(
    ("new", "old", "expected"),
    [
        ({"unsubscribeAll": True}, {"unsubscribeAll": False}, EventType.UNSUBSCRIBED),
        (
            {"topicSubscriptionStatus": [{"topicName": "news", "subscriptionStatus": "OptOut"}]},
            {"topicSubscriptionStatus": [{"topicName": "news", "subscriptionStatus": "OptIn"}]},
            EventType.UNSUBSCRIBED,
        ),
        (
            {"topicSubscriptionStatus": [{"topicName": "news", "subscriptionStatus": "OptIn"}]},
            {"topicSubscriptionStatus": [{"topicName": "news", "subscriptionStatus": "OptOut"}]},
            EventType.UNKNOWN,
        ),
        ({"unsubscribeAll": False}, {"unsubscribeAll": True}, EventType.UNKNOWN),
    ],
)
def test_only_opt_outs_are_unsubscribes(
    new: dict[str, Any], old: dict[str, Any], expected: EventType
) -> None:
    sns = json.loads(fixture("unsubscribe"))
    record = json.loads(sns["Message"])
    record["subscription"]["newTopicPreferences"] = new
    record["subscription"]["oldTopicPreferences"] = old

    [event] = ses.parse(json.dumps(record).encode(), ACCOUNT)

    assert event.event_type is expected


def test_a_not_spam_report_is_no_complaint() -> None:
    record = ses_record("complaint", "ann@example.com", "k" * 32, complaintFeedbackType="not-spam")

    [event] = ses.parse(json.dumps(record).encode(), ACCOUNT)

    assert event.event_type is EventType.UNKNOWN


def test_a_malformed_known_record_still_parses() -> None:
    record = ses_record("bounce", "ann@example.com", "k" * 32)
    record["bounce"]["bouncedRecipients"] = ["not an object", None]
    record["mail"]["timestamp"] = "yesterday"
    record["bounce"]["timestamp"] = 17

    [event] = ses.parse(json.dumps(envelope(record)).encode(), ACCOUNT)

    assert (event.event_type, event.recipient) == (EventType.BOUNCED, None)
    assert event.occurred_at.tzinfo is None


def test_sns_control_messages_and_odd_payloads() -> None:
    confirmation = {"Type": "SubscriptionConfirmation", "MessageId": "m", "Message": "confirm"}
    assert ses.parse(json.dumps(confirmation).encode(), ACCOUNT) == []

    # SES's test notification when an SNS destination is set up: Message is plain text.
    test = envelope("Successfully validated SNS topic for Amazon SES event publishing.")
    [event] = ses.parse(json.dumps(test).encode(), ACCOUNT)
    assert event.event_type is EventType.UNKNOWN
    assert event.raw_payload == json.dumps(test, sort_keys=True)
    assert event.occurred_at.tzinfo is None

    [listed] = ses.parse(b'["not", "an", "object"]', ACCOUNT)
    assert listed.event_type is EventType.UNKNOWN and listed.raw_payload

    with pytest.raises(ValueError):
        ses.parse(b"{not json", ACCOUNT)


def webhook_config(**settings: Any) -> ProviderAccountConfig:
    return ProviderAccountConfig(kind="ses", settings={"region": REGION, **settings})


def delivered_notification(**changes: Any) -> dict[str, Any]:
    message = envelope(ses_record("delivered", "ann@example.com", "k" * 32))
    message.update(changes)
    return message


def verify(
    request: WebhookRequest,
    certificates: FakeCertificates | None = None,
    guard: SeenTokens | None = None,
    sns: FakeSns | None = None,
    **settings: Any,
) -> None:
    ses.verify_webhook(
        request,
        webhook_config(**settings),
        guard or SeenTokens(),
        certificates=(certificates or FakeCertificates()).store,
        confirmations=(sns or FakeSns()).confirmations,
    )


def test_the_documented_string_to_sign() -> None:
    # The Notification example of the SNS "Verifying the signatures" page.
    message = {
        "Type": "Notification",
        "MessageId": "4d4dc071-ddbf-465d-bba8-08f81c89da64",
        "Subject": "My subject",
        "Message": "My Test Message",
        "Timestamp": "2012-06-05T04:37:04.321Z",
        "TopicArn": "arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P",
        "UnsubscribeURL": "https://sns.us-east-2.amazonaws.com/?Action=Unsubscribe",
    }
    assert string_to_sign(message) == (
        b"Message\nMy Test Message\nMessageId\n4d4dc071-ddbf-465d-bba8-08f81c89da64\n"
        b"Subject\nMy subject\nTimestamp\n2012-06-05T04:37:04.321Z\n"
        b"TopicArn\narn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P\n"
        b"Type\nNotification\n"
    )


@pytest.mark.parametrize("version", ["1", "2"])
def test_both_signature_versions_verify(version: str) -> None:
    certificates = FakeCertificates()
    message = sign(delivered_notification(Subject="Amazon SES Email Event"), version=version)

    verify(sns_request(message), certificates)

    assert certificates.fetched == [CERT_URL]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.update(Message=m["Message"].replace("ann@", "eve@")),
        lambda m: m.update(MessageId=str(uuid.uuid4())),
        lambda m: m.update(TopicArn=TOPIC_ARN + "-other"),
        lambda m: m.update(Subject="added after signing"),
        lambda m: m.update(SignatureVersion="1"),  # signed as 2, claimed as 1
        lambda m: m.update(Signature="AAAA" + m["Signature"][4:]),
    ],
)
def test_a_tampered_message_is_refused(tamper: Callable[[dict[str, Any]], None]) -> None:
    message = sign(delivered_notification())
    tamper(message)

    with pytest.raises(WebhookRejected):
        verify(sns_request(message))


@pytest.mark.parametrize(
    "url",
    [
        f"http://sns.{REGION}.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.us-east-1.amazonaws.com.evil.test/SimpleNotificationService-x.pem",
        "https://evil.test/SimpleNotificationService-x.pem",
        "https://s3.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-x.pem",
        "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.txt",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem",  # other region
    ],
)
def test_a_certificate_url_off_sns_is_refused_before_fetching(url: str) -> None:
    certificates = FakeCertificates()
    # Signed with the real key: only the URL is wrong, and it is never fetched.
    message = sign(delivered_notification(), cert_url=url)

    with pytest.raises(WebhookRejected, match="SigningCertURL"):
        verify(sns_request(message), certificates)

    assert certificates.fetched == []


def test_a_forged_signature_does_not_use_up_the_message_id() -> None:
    guard = SeenTokens()
    genuine = sign(delivered_notification())
    forged = sign(delivered_notification(), ATTACKER_KEY)

    with pytest.raises(WebhookRejected, match="signature"):
        verify(sns_request(forged), guard=guard)
    verify(sns_request(genuine), guard=guard)
    with pytest.raises(WebhookRejected, match="replayed"):
        verify(sns_request(genuine), guard=guard)


def test_a_certificate_from_another_key_is_refused() -> None:
    certificates = FakeCertificates(_certificate(ATTACKER_KEY))

    with pytest.raises(WebhookRejected, match="signature"):
        verify(sns_request(sign(delivered_notification())), certificates)


def test_certificates_are_fetched_once_per_url() -> None:
    certificates = FakeCertificates()
    guard = SeenTokens()
    for recipient in ("a@example.com", "b@example.com", "c@example.com"):
        message = envelope(ses_record("open", recipient, "k" * 32))
        verify(sns_request(sign(message)), certificates, guard)

    assert certificates.fetched == [CERT_URL]


def test_an_unfetchable_certificate_refuses_the_message() -> None:
    def down(url: str) -> bytes:
        raise OSError("network unreachable")

    store = CertificateStore(down)
    with pytest.raises(WebhookRejected, match="could not fetch"):
        ses.verify_webhook(
            sns_request(sign(delivered_notification())),
            webhook_config(),
            SeenTokens(),
            certificates=store,
        )


def test_freshness_follows_mailers_clock(fixed_clock: clock.FixedClock) -> None:
    fixed_clock.set(datetime(2031, 1, 6, 8, 0, tzinfo=UTC))
    request = sns_request(sign(delivered_notification()))  # timestamped at Mailers' now

    verify(request)
    fixed_clock.advance(webhooks.WEBHOOK_MAX_AGE_SECONDS + 1)
    with pytest.raises(WebhookRejected, match="stale"):
        verify(request)


def test_timestamps_from_the_future_and_the_past_are_refused() -> None:
    future = sign(delivered_notification(Timestamp=iso(clock.now() + timedelta(hours=1))))
    with pytest.raises(WebhookRejected, match="future"):
        verify(sns_request(future))
    old = sign(delivered_notification(Timestamp=iso(clock.now() - timedelta(minutes=61))))
    with pytest.raises(WebhookRejected, match="stale"):
        verify(sns_request(old))
    recent = sign(delivered_notification(Timestamp=iso(clock.now() - timedelta(minutes=59))))
    verify(sns_request(recent))


@pytest.mark.parametrize(
    "request_",
    [
        WebhookRequest(body=b"not json"),
        WebhookRequest(body=b'{"Type": "Notification"}'),
        WebhookRequest(body=b'{"Type": "Teleport", "MessageId": "x"}'),
        WebhookRequest(body=b"[]"),
        sns_request({**sign(delivered_notification()), "SignatureVersion": "3"}),
        sns_request(sign(delivered_notification()), **{"x-amz-sns-message-type": "Other"}),
        sns_request({**sign(delivered_notification()), "Signature": "%%% not base64"}),
        sns_request(sign(delivered_notification(TopicArn="arn:aws:sqs:us-east-1:1:q"))),
    ],
)
def test_malformed_messages_are_refused(request_: WebhookRequest) -> None:
    with pytest.raises(WebhookRejected):
        verify(request_)


def test_messages_from_unexpected_topics_are_refused() -> None:
    message = sign(delivered_notification())

    with pytest.raises(WebhookRejected, match="events_topic_arns"):
        verify(sns_request(message), events_topic_arns=[TOPIC_ARN + "-other"])
    verify(sns_request(message), events_topic_arns=[TOPIC_ARN])


TOKEN = "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3"
CONFIRMED = (
    b'<ConfirmSubscriptionResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
    b"<ConfirmSubscriptionResult><SubscriptionArn>"
    + f"{TOPIC_ARN}:0f1e2d3c".encode()
    + b"</SubscriptionArn></ConfirmSubscriptionResult></ConfirmSubscriptionResponse>"
)
"""SNS's answer to a visit of a SubscribeURL (the ConfirmSubscription action's response)."""


def confirmation(kind: str = "SubscriptionConfirmation", **changes: Any) -> dict[str, Any]:
    message = {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "Token": TOKEN,
        "TopicArn": TOPIC_ARN,
        "Message": f"You have chosen to subscribe to the topic {TOPIC_ARN}.\n"
        "To confirm the subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": f"https://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription"
        f"&TopicArn={TOPIC_ARN}&Token={TOKEN}",
        "Timestamp": iso(clock.now()),
    }
    message.update(changes)
    return message


class FakeSns:
    """An injected SubscribeURL fetcher: records every visit, answers as SNS does (after
    ``failures`` visits that fail)."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.visited: list[str] = []
        self.confirmations = SubscriptionConfirmations(self.fetch)

    def fetch(self, url: str) -> bytes:
        self.visited.append(url)
        if self.failures:
            self.failures -= 1
            raise OSError("connection reset by peer")
        return CONFIRMED


def test_a_listed_topics_confirmation_is_confirmed_once_and_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    sns, guard = FakeSns(), SeenTokens()
    message = sign(confirmation())
    request = sns_request(message)

    verify(request, guard=guard, sns=sns, events_topic_arns=[TOPIC_ARN])

    assert sns.visited == [message["SubscribeURL"]]
    assert sns.confirmations.confirmed_topics == [TOPIC_ARN]
    assert f"confirmed the SNS subscription to {TOPIC_ARN}" in caplog.text
    assert TOKEN not in caplog.text
    assert ses.parse(request.body, ACCOUNT) == []
    # SNS retrying it (same MessageId) is a replay; a receiver that forgot the MessageId
    # still does not confirm twice.
    with pytest.raises(WebhookRejected, match="replayed"):
        verify(request, guard=guard, sns=sns, events_topic_arns=[TOPIC_ARN])
    verify(request, sns=sns, events_topic_arns=[TOPIC_ARN])
    verify(sns_request(sign(delivered_notification())), sns=sns, events_topic_arns=[TOPIC_ARN])
    assert sns.visited == [message["SubscribeURL"]]


def test_a_failed_confirmation_is_tried_again_when_sns_retries() -> None:
    sns, guard = FakeSns(failures=1), SeenTokens()
    request = sns_request(sign(confirmation()))

    with pytest.raises(WebhookRejected, match="could not confirm") as failed:
        verify(request, guard=guard, sns=sns, events_topic_arns=[TOPIC_ARN])
    assert sns.confirmations.confirmed_topics == []
    assert TOKEN not in str(failed.value)
    verify(request, guard=guard, sns=sns, events_topic_arns=[TOPIC_ARN])  # the MessageId was kept

    assert len(sns.visited) == 2
    assert sns.confirmations.confirmed_topics == [TOPIC_ARN]


@pytest.mark.parametrize(
    ("listed", "why"),
    [
        ([], "events_topic_arns is empty"),
        ([TOPIC_ARN + "-other"], "not in events_topic_arns"),
    ],
)
def test_a_confirmation_of_an_unlisted_topic_is_refused_and_not_confirmed(
    listed: list[str], why: str
) -> None:
    sns, certificates = FakeSns(), FakeCertificates()

    with pytest.raises(WebhookRejected, match=why):
        verify(sns_request(sign(confirmation())), certificates, sns=sns, events_topic_arns=listed)

    assert sns.visited == [] and certificates.fetched == []
    assert sns.confirmations.confirmed_topics == []


def test_a_forged_or_tampered_confirmation_is_not_confirmed() -> None:
    sns = FakeSns()
    forged = sign(confirmation(), ATTACKER_KEY)
    tampered = sign(confirmation())
    tampered["SubscribeURL"] = tampered["SubscribeURL"].replace(TOKEN, "f" * len(TOKEN))

    for message in (forged, tampered):
        with pytest.raises(WebhookRejected, match="signature"):
            verify(sns_request(message), sns=sns, events_topic_arns=[TOPIC_ARN])

    assert sns.visited == []


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.test/?Action=ConfirmSubscription",
        f"http://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription",
        f"https://sns.{REGION}.amazonaws.com.evil.test/?Action=ConfirmSubscription",
        f"https://sns.{REGION}.amazonaws.com:8443/?Action=ConfirmSubscription",
        f"https://user@sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription",
        "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",  # other region
        f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe",
    ],
)
def test_a_subscribe_url_off_sns_is_refused_before_anything_is_fetched(url: str) -> None:
    sns, certificates = FakeSns(), FakeCertificates()
    # Signed with the real key: only the URL is wrong, and it is never visited.
    message = sign(confirmation(SubscribeURL=url))

    with pytest.raises(WebhookRejected, match="SubscribeURL"):
        verify(sns_request(message), certificates, sns=sns, events_topic_arns=[TOPIC_ARN])

    assert sns.visited == [] and certificates.fetched == []


def test_an_unsubscribe_confirmation_is_signature_checked_and_visits_nothing() -> None:
    sns = FakeSns()
    verify(sns_request(sign(confirmation("UnsubscribeConfirmation"))), sns=sns)

    tampered = sign(confirmation("UnsubscribeConfirmation"))
    tampered["Token"] = "f" * len(TOKEN)
    with pytest.raises(WebhookRejected, match="signature"):
        verify(sns_request(tampered), sns=sns)
    assert sns.visited == []


def receiver_settings(root: Path, **settings: Any) -> MailersSettings:
    """A config with one SES account, for the webhook receiver."""
    config = MailersConfig.model_validate(
        {
            "unsubscribe": {"base_url": "https://u.test", "signing_key": {"env": "UNUSED"}},
            "workspaces": {
                "acme": {
                    "provider_accounts": {
                        ACCOUNT: {"kind": "ses", "settings": {"region": REGION, **settings}}
                    },
                    "identities": {
                        "news": {
                            "from_address": "news@news.acme.test",
                            "provider_accounts": [ACCOUNT],
                        }
                    },
                    "streams": {
                        "lifecycle": {"routing": {"strategy": "failover", "accounts": [ACCOUNT]}}
                    },
                }
            },
        }
    )
    return MailersSettings(
        config=config, path=root / "mailers.yaml", config_hash="-", data_dir=root
    )


def test_the_receiver_confirms_a_listed_topic_at_a_loopback_sns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    visits: list[dict[str, list[str]]] = []

    def confirm_subscription(request: Request) -> Response:
        visits.append(request.query)
        return Response(200, CONFIRMED, {"Content-Type": "text/xml"})

    with Simulator() as standin:
        standin.route("sns", "GET", r"/", confirm_subscription)

        def at_the_standin(url: str) -> bytes:  # the real GET, SNS's https origin swapped
            parts = urlsplit(url)
            return https_get(f"{standin.base_url}{parts.path}?{parts.query}")

        monkeypatch.setattr(
            webhooks, "DEFAULT_CONFIRMATIONS", SubscriptionConfirmations(at_the_standin)
        )
        monkeypatch.setattr(webhooks, "DEFAULT_CERTIFICATES", FakeCertificates().store)
        settings = receiver_settings(tmp_path, events_topic_arns=[TOPIC_ARN])
        with EmbeddedServer(settings) as receiver:
            url = receiver.url_for("acme", ACCOUNT)
            listed = sns_request(sign(confirmation()))
            answers = [httpx.post(url, content=listed.body, headers=dict(listed.headers))]
            answers.append(httpx.post(url, content=listed.body, headers=dict(listed.headers)))
            other = sns_request(sign(confirmation(TopicArn=TOPIC_ARN + "-other")))
            answers.append(httpx.post(url, content=other.body, headers=dict(other.headers)))

    # confirmed; a retry of it (acknowledged, not landed or confirmed again); unlisted
    assert [a.status_code for a in answers] == [200, 200, 401]
    assert visits == [
        {"Action": ["ConfirmSubscription"], "TopicArn": [TOPIC_ARN], "Token": [TOKEN]}
    ]
    assert webhooks.DEFAULT_CONFIRMATIONS.confirmed_topics == [TOPIC_ARN]
    assert (receiver.landed, receiver.rejected) == (1, 1)


WITHOUT_THE_SDK = """
import json, sys
from adapters.providers import registry, ses
from adapters.providers.ses.sns import CertificateStore
from adapters.providers.ses.webhooks import SubscriptionConfirmations
from mailers.config import ProviderAccountConfig
from mailers.errors import ConfigError
from mailers.webhooks import SeenTokens, WebhookRequest

given = json.load(sys.stdin)
spec = registry.provider_spec("ses")
assert spec.parse(given["fixture"].encode(), "acct")
config = ProviderAccountConfig(kind="ses", settings=given["settings"])
visited = []
for body in given["bodies"]:
    ses.verify_webhook(
        WebhookRequest(body=body.encode()),
        config,
        SeenTokens(),
        certificates=CertificateStore(lambda url: given["certificate"].encode()),
        confirmations=SubscriptionConfirmations(lambda url: visited.append(url) or b""),
    )
assert len(visited) == 1, visited
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore"))
assert not loaded, loaded

sys.modules["boto3"] = sys.modules["botocore"] = None  # as if the SDK were not installed
for needs_the_sdk in (
    lambda: ses.build("acct", config, spec.settings_of(config), None),
    lambda: ses.poll_events("acct", config, spec.settings_of(config), None),
):
    try:
        needs_the_sdk()
    except ConfigError as err:
        assert "boto3" in str(err) and "mailers[ses]" in str(err), err
    else:
        raise AssertionError("built without boto3")
"""


def test_receiving_parsing_and_verifying_never_import_the_aws_sdk() -> None:
    given = {
        "fixture": fixture("delivered").decode(),
        "settings": {"region": REGION, "events_topic_arns": [TOPIC_ARN]},
        "bodies": [
            json.dumps(sign(delivered_notification())),
            json.dumps(sign(confirmation())),
        ],
        "certificate": SNS_CERT.decode(),
    }

    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_SDK],
        input=json.dumps(given),
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},  # the suite's clock too
        timeout=120,
    )

    assert done.returncode == 0, done.stderr


@pytest.fixture
def queue(moto: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    sqs = aws_client("sqs", moto)
    url = sqs.create_queue(QueueName="ses-events")["QueueUrl"]
    yield sqs, url
    sqs.close()


def poll_settings(moto: str, queue_url: str, **changes: Any) -> Settings:
    return Settings(
        region=REGION,
        endpoint_url=moto,
        events_queue_url=queue_url,
        events_wait_seconds=0,
        timeout_seconds=5,
        **changes,
    )


POLL_CONFIG = ProviderAccountConfig(
    kind="ses",
    credentials={
        "access_key_id": SecretRef(env="SES_TEST_KEY_ID"),
        "secret_access_key": SecretRef(env="SES_TEST_SECRET"),
    },
    poll_events=True,
)


def push(sqs: Any, url: str, *recipients: str) -> list[dict[str, Any]]:
    """Queue SNS notifications (pretty-printed, as SNS writes them to SQS)."""
    messages = [
        envelope(ses_record("delivered", r, message_key("a", "c", r, "w"))) for r in recipients
    ]
    for message in messages:
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(message, indent=2))
    return messages


def in_queue(sqs: Any, url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[n]) for n in names)


def recipients_of(payloads: list[bytes]) -> list[str]:
    return [e.recipient or "" for p in payloads for e in ses.parse(p, ACCOUNT)]


def test_poll_events_deletes_only_on_the_next_call(moto: str, queue: tuple[Any, str]) -> None:
    sqs, url = queue
    push(sqs, url, "a@example.com", "b@example.com", "c@example.com")
    settings = poll_settings(moto, url)

    payloads, cursor = ses.poll_events(ACCOUNT, POLL_CONFIG, settings, None)

    assert sorted(recipients_of(payloads)) == ["a@example.com", "b@example.com", "c@example.com"]
    assert all(b"\n" not in p for p in payloads)  # one landing line each
    assert cursor is not None
    assert in_queue(sqs, url) == 3  # received, hidden, not yet deleted

    again, emptied = ses.poll_events(ACCOUNT, POLL_CONFIG, settings, cursor)

    assert again == []
    assert in_queue(sqs, url) == 0
    assert emptied is not None and emptied != cursor
    assert ses.poll_events(ACCOUNT, POLL_CONFIG, settings, emptied) == ([], emptied)


def test_poll_events_resumes_with_only_newer_messages(moto: str, queue: tuple[Any, str]) -> None:
    sqs, url = queue
    settings = poll_settings(moto, url)
    assert ses.poll_events(ACCOUNT, POLL_CONFIG, settings, None) == ([], None)
    push(sqs, url, "old@example.com")
    first, cursor = ses.poll_events(ACCOUNT, POLL_CONFIG, settings, None)
    push(sqs, url, "new1@example.com", "new2@example.com")

    second, _ = ses.poll_events(ACCOUNT, POLL_CONFIG, settings, cursor)

    assert recipients_of(first) == ["old@example.com"]
    assert sorted(recipients_of(second)) == ["new1@example.com", "new2@example.com"]


def test_messages_come_back_when_the_cursor_was_not_stored(
    moto: str, queue: tuple[Any, str]
) -> None:
    sqs, url = queue
    push(sqs, url, "a@example.com", "b@example.com")
    settings = poll_settings(moto, url, events_visibility_timeout=0)

    first, _ = ses.poll_events(ACCOUNT, POLL_CONFIG, settings, None)
    # The payloads never landed, so the cursor was never stored: poll from the old one.
    second, _ = ses.poll_events(ACCOUNT, POLL_CONFIG, settings, None)

    assert sorted(recipients_of(second)) == sorted(recipients_of(first))
    assert len(first) == 2


def test_a_poll_reads_up_to_events_max_messages(moto: str, queue: tuple[Any, str]) -> None:
    sqs, url = queue
    push(sqs, url, *[f"user{i}@example.com" for i in range(25)])

    limited, _ = ses.poll_events(
        ACCOUNT, POLL_CONFIG, poll_settings(moto, url, events_max_messages=12), None
    )
    rest, _ = ses.poll_events(ACCOUNT, POLL_CONFIG, poll_settings(moto, url), None)

    assert len(limited) == 12
    assert len(rest) == 13


def test_polling_lands_and_stores_the_cursor(
    moto: str, queue: tuple[Any, str], tmp_path: Path
) -> None:
    sqs, url = queue
    settings = poll_settings(moto, url)
    target = PollTarget(
        kind="ses",
        account=ACCOUNT,
        fetch=lambda cursor: ses.poll_events(ACCOUNT, POLL_CONFIG, settings, cursor),
    )
    push(sqs, url, "a@example.com", "b@example.com")

    assert poll_into_landing(tmp_path, target) == 2
    assert poll_into_landing(tmp_path, target) == 0

    [landed] = (tmp_path / "ses" / ACCOUNT).glob("*.jsonl")
    lines = landed.read_bytes().splitlines()
    assert sorted(recipients_of(lines)) == ["a@example.com", "b@example.com"]
    assert in_queue(sqs, url) == 0


def test_sns_to_sqs_delivery_is_polled_and_parsed(moto: str, queue: tuple[Any, str]) -> None:
    sqs, url = queue
    sns = aws_client("sns", moto)
    topic = sns.create_topic(Name="ses-events")["TopicArn"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    key = message_key("acme", "pro_tips", "ann@example.com", "w1")
    record = ses_record("bounce", "ann@example.com", key)
    sns.publish(TopicArn=topic, Message=json.dumps(record))
    sns.close()

    payloads, _ = ses.poll_events(ACCOUNT, POLL_CONFIG, poll_settings(moto, url), None)

    [event] = [e for p in payloads for e in ses.parse(p, ACCOUNT)]
    assert (event.event_type, event.bounce_class) == (EventType.BOUNCED, BounceClass.HARD)
    assert (event.message_key, event.recipient) == (key, "ann@example.com")
    assert json.loads(payloads[0])["Type"] == "Notification"


def test_polling_needs_a_queue_and_maps_errors(moto: str, queue: tuple[Any, str]) -> None:
    with pytest.raises(ConfigError, match="events_queue_url"):
        ses.poll_events(ACCOUNT, POLL_CONFIG, Settings(region=REGION, endpoint_url=moto), None)
    missing = poll_settings(moto, f"{moto}/{DEFAULT_ACCOUNT_ID}/no-such-queue")
    with pytest.raises(ProviderUnavailable, match="SQS"):
        ses.poll_events(ACCOUNT, POLL_CONFIG, missing, None)


def quota_settings(root: Path, moto: str, **pacing: Any) -> MailersSettings:
    """A config with one SES account on moto whose pacing reads the account's quota."""
    config = MailersConfig.model_validate(
        {
            "unsubscribe": {"base_url": "https://u.test", "signing_key": {"env": "UNUSED"}},
            "workspaces": {
                "acme": {
                    "provider_accounts": {
                        ACCOUNT: {
                            "kind": "ses",
                            "credentials": {
                                "access_key_id": {"env": "SES_TEST_KEY_ID"},
                                "secret_access_key": {"env": "SES_TEST_SECRET"},
                            },
                            "settings": {"region": REGION, "endpoint_url": moto},
                            "pacing": {"quota_from_provider": True, **pacing},
                        }
                    },
                    "identities": {
                        "news": {
                            "from_address": "news@news.acme.test",
                            "provider_accounts": [ACCOUNT],
                        }
                    },
                    "streams": {
                        "lifecycle": {"routing": {"strategy": "failover", "accounts": [ACCOUNT]}}
                    },
                }
            },
        }
    )
    return MailersSettings(
        config=config, path=root / "mailers.yaml", config_hash="-", data_dir=root
    )


def test_the_sending_quota_is_read_from_get_send_quota(
    harness: SesHarness, moto: str, tmp_path: Path
) -> None:
    settings = quota_settings(tmp_path, moto, messages_per_second=50, daily_cap=150)
    account = settings.config.workspaces["acme"].provider_accounts[ACCOUNT]
    # moto's sandbox account: 1 message a second, 200 a day.
    assert ses.SPEC.provider_quota(ACCOUNT, account) == ProviderQuota(1.0, 200, 0)

    sent = harness.provider(endpoint_url=moto).send_batch([make_message("q@example.com")])
    assert sent[0].accepted

    counted = ses.SPEC.provider_quota(ACCOUNT, account)
    assert counted is not None and (counted.sent_last_24_hours or 0) > 0  # as moto counts
    quotas = account_quotas(settings, "acme")
    assert quotas == {ACCOUNT: ProviderQuota(1.0, 150, counted.sent_last_24_hours)}
    provider = build_provider(ACCOUNT, account, settings)
    assert isinstance(provider, SesProvider)
    try:
        assert provider.pacer is not None
        assert provider.pacer.rate == 1.0  # the tighter of GetSendQuota and the config's 50
    finally:
        provider.close()


def test_an_unreadable_quota_leaves_pacing_to_the_config(
    harness: SesHarness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{probe.getsockname()[1]}"
    settings = quota_settings(tmp_path, nowhere, messages_per_second=20)
    account = settings.config.workspaces["acme"].provider_accounts[ACCOUNT]

    with pytest.raises(ProviderUnavailable, match="GetSendQuota"):
        ses.SPEC.provider_quota(ACCOUNT, account)
    provider = build_provider(ACCOUNT, account, settings)
    assert isinstance(provider, SesProvider)
    try:
        assert provider.pacer is not None
        assert provider.pacer.rate == 20
    finally:
        provider.close()
    assert "sending quota not read" in caplog.text
    assert all(secret not in caplog.text for secret in SECRETS)


def test_quota_from_provider_is_refused_for_a_provider_that_publishes_none() -> None:
    config = ProviderAccountConfig.model_validate(
        {
            "kind": "postmark",
            "credentials": {"server_token": {"env": "X"}},
            "pacing": {"quota_from_provider": True},
        }
    )
    assert any("publishes no sending quota" in problem for problem in check_account(config))
