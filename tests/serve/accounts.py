"""Every webhook-sending provider kind in one config, with a signer for each.

:func:`all_kinds_settings` configures one account per kind that has a verifier in the
registry (Postmark, Mailgun, Resend, SendGrid, SES) in workspace ``acme``, plus the
one-click unsubscribe route at ``/unsubscribe``; :data:`SIGNERS` signs a body (or an
event) the way each provider does. SNS certificates come from :class:`SnsCertificates`
(the tests' own CA-less certificate, served without any network).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from adapters.providers.registry import SPECS
from adapters.providers.ses import webhooks as ses_webhooks
from adapters.providers.ses.sns import CertificateStore, string_to_sign
from adapters.simulator import mailgun, postmark, resend, sendgrid
from mailers import clock
from mailers.config import MailersConfig, Settings
from mailers.webhooks import WebhookRequest
from tests.serve.helpers import config_document, webhook_accounts

WEBHOOK_KINDS = sorted(kind for kind, spec in SPECS.items() if spec.verify_webhook is not None)
"""Every provider kind the registry verifies webhooks for."""

ACCOUNT_OF = {
    "postmark": "pm",
    "mailgun": "mg",
    "resend": "rs",
    "sendgrid": "sg",
    "ses": "ses",
}
UNSUBSCRIBE_KEY = "unsubscribe-signing-key-for-tests"
UNSUBSCRIBE_PATH = "/unsubscribe"
REGION = "us-east-1"
TOPIC_ARN = f"arn:aws:sns:{REGION}:123456789012:ses-events"
CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"

_SG_PRIVATE, _SG_PUBLIC = sendgrid.generate_webhook_keys()
_SNS_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)

CREDENTIALS = {
    "MAILERS_PROPS_PM_TOKEN": "pm-token",
    "MAILERS_PROPS_PM_USER": "hook-user",
    "MAILERS_PROPS_PM_PASSWORD": "hook-password",
    "MAILERS_PROPS_MG_KEY": "mg-key",
    "MAILERS_PROPS_MG_SIGNING": "mg-signing-key",
    "MAILERS_PROPS_RS_KEY": "rs-key",
    "MAILERS_PROPS_RS_SECRET": resend.generate_webhook_secret(),
    "MAILERS_PROPS_SG_KEY": "sg-key",
    "MAILERS_PROPS_SG_PUBLIC": _SG_PUBLIC,
    "MAILERS_PROPS_UNSUBSCRIBE": UNSUBSCRIBE_KEY,
}


def _sns_certificate() -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    moment = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_SNS_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - timedelta(days=3650))
        .not_valid_after(moment + timedelta(days=3650))
        .sign(_SNS_KEY, hashes.SHA256())
        .public_bytes(Encoding.PEM)
    )


_SNS_PEM = _sns_certificate()


def use_sns_certificates(monkeypatch: pytest.MonkeyPatch) -> None:
    """SES verification fetches the tests' certificate, never the network."""
    monkeypatch.setattr(ses_webhooks, "DEFAULT_CERTIFICATES", CertificateStore(lambda _: _SNS_PEM))


def all_kinds_settings(root: Path, monkeypatch: pytest.MonkeyPatch, **serve: Any) -> Settings:
    """One account per webhook kind in workspace ``acme``; data under ``root``."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    use_sns_certificates(monkeypatch)
    accounts: dict[str, Any] = {
        **webhook_accounts("MAILERS_PROPS"),
        "sg": {
            "kind": "sendgrid",
            "credentials": {
                "api_key": {"env": "MAILERS_PROPS_SG_KEY"},
                "webhook_public_key": {"env": "MAILERS_PROPS_SG_PUBLIC"},
            },
        },
        "ses": {"kind": "ses", "settings": {"region": REGION, "events_topic_arns": [TOPIC_ARN]}},
    }
    assert sorted(accounts[a]["kind"] for a in ACCOUNT_OF.values()) == WEBHOOK_KINDS
    unsubscribe = {
        "base_url": f"https://u.test{UNSUBSCRIBE_PATH}",
        "signing_key": {"env": "MAILERS_PROPS_UNSUBSCRIBE"},
    }
    serve_section = {"segment_max_age_seconds": 0, **serve}
    config = MailersConfig.model_validate(config_document(accounts, unsubscribe, serve_section))
    return Settings(config=config, path=root / "mailers.yaml", config_hash="-", data_dir=root)


def sns_message(text: str, message_id: str | None = None) -> dict[str, Any]:
    """An SNS ``Notification`` carrying ``text``, signed as SNS signs (version 2)."""
    moment = clock.now().astimezone(UTC)
    message: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": message_id or str(uuid.uuid4()),
        "TopicArn": TOPIC_ARN,
        "Message": text,
        "Timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "SignatureVersion": "2",
        "SigningCertURL": CERT_URL,
        "UnsubscribeURL": f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe&x=1",
    }
    signature = _SNS_KEY.sign(string_to_sign(message), padding.PKCS1v15(), hashes.SHA256())
    message["Signature"] = base64.b64encode(signature).decode()
    return message


def _ses(body: bytes) -> WebhookRequest:
    message = sns_message(body.decode("utf-8", "replace"))
    return WebhookRequest(
        body=json.dumps(message).encode(),
        headers={"x-amz-sns-message-type": "Notification", "Content-Type": "text/plain"},
    )


def _mailgun(body: bytes) -> WebhookRequest:
    """Mailgun signs a token inside the body: ``body`` (a JSON object) is the event-data."""
    return mailgun.webhook_request(
        json.loads(body), {"webhook_signing_key": CREDENTIALS["MAILERS_PROPS_MG_SIGNING"]}
    )


SIGNERS: dict[str, Callable[[bytes], WebhookRequest]] = {
    "postmark": lambda body: postmark.signed_request(
        body, {"webhook_username": "hook-user", "webhook_password": "hook-password"}
    ),
    "mailgun": _mailgun,
    "resend": lambda body: resend.signed_request(body, CREDENTIALS["MAILERS_PROPS_RS_SECRET"]),
    "sendgrid": lambda body: sendgrid.webhook_request(body, {"webhook_private_key": _SG_PRIVATE}),
    "ses": _ses,
}
"""Kind → sign a body as that provider would. Mailgun's body must be a JSON object (the
event); SES's is carried as the SNS ``Message`` text."""

SIGNED_HEADERS = {
    "postmark": ["Authorization"],
    "resend": ["svix-id", "svix-timestamp", "svix-signature"],
    "sendgrid": [sendgrid.SIGNATURE_HEADER, sendgrid.TIMESTAMP_HEADER],
    "mailgun": [],
    "ses": ["x-amz-sns-message-type"],
}
"""The headers each provider authenticates with (arbitrary values are tried for them)."""


def landed_line_count(landing: Path) -> int:
    """Lines in every segment under ``landing``, open (partial) or closed."""
    return sum(
        path.read_bytes().count(b"\n")
        for path in landing.glob("*/*/*")
        if path.is_file() and (path.name.endswith(".jsonl") or ".jsonl.partial" in path.name)
    )
