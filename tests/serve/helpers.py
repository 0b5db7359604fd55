"""A config with one account per webhook-sending provider kind, and signed requests."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from adapters.simulator import mailgun, postmark, resend
from mailers.config import MailersConfig, Settings
from mailers.webhooks import WebhookRequest

CREDENTIALS = {
    "MAILERS_TEST_PM_TOKEN": "pm-token",
    "MAILERS_TEST_PM_USER": "hook-user",
    "MAILERS_TEST_PM_PASSWORD": "hook-password",
    "MAILERS_TEST_MG_KEY": "mg-key",
    "MAILERS_TEST_MG_SIGNING": "mg-signing-key",
    "MAILERS_TEST_RS_KEY": "rs-key",
    "MAILERS_TEST_RS_SECRET": resend.generate_webhook_secret(),
}


def webhook_accounts(prefix: str) -> dict[str, Any]:
    """Postmark (``pm``), Mailgun (``mg``) and Resend (``rs``) accounts whose credentials
    are read from ``{prefix}_PM_TOKEN``, ``{prefix}_MG_SIGNING`` and so on."""
    return {
        "pm": {
            "kind": "postmark",
            "credentials": {
                "server_token": {"env": f"{prefix}_PM_TOKEN"},
                "webhook_username": {"env": f"{prefix}_PM_USER"},
                "webhook_password": {"env": f"{prefix}_PM_PASSWORD"},
            },
        },
        "mg": {
            "kind": "mailgun",
            "credentials": {
                "api_key": {"env": f"{prefix}_MG_KEY"},
                "webhook_signing_key": {"env": f"{prefix}_MG_SIGNING"},
            },
            "settings": {"domain": "news.acme.test"},
        },
        "rs": {
            "kind": "resend",
            "credentials": {
                "api_key": {"env": f"{prefix}_RS_KEY"},
                "webhook_secret": {"env": f"{prefix}_RS_SECRET"},
            },
        },
    }


def config_document(
    accounts: dict[str, Any], unsubscribe: dict[str, Any], serve: dict[str, Any]
) -> dict[str, Any]:
    """A ``mailers.yaml`` document: ``accounts`` in workspace ``acme`` (one identity, one
    stream routed to ``pm``), with these ``unsubscribe`` and ``serve`` sections."""
    return {
        "unsubscribe": unsubscribe,
        "serve": serve,
        "workspaces": {
            "acme": {
                "provider_accounts": accounts,
                "identities": {
                    "news": {"from_address": "news@news.acme.test", "provider_accounts": ["pm"]}
                },
                "streams": {"lifecycle": {"routing": {"strategy": "failover", "accounts": ["pm"]}}},
            }
        },
    }


def serve_settings(root: Path, monkeypatch: pytest.MonkeyPatch, **serve: Any) -> Settings:
    """Postmark, Mailgun and Resend accounts in workspace ``acme``; data under ``root``."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    unsubscribe = {"base_url": "https://u.test", "signing_key": {"env": "UNUSED"}}
    document = config_document(webhook_accounts("MAILERS_TEST"), unsubscribe, serve)
    config = MailersConfig.model_validate(document)
    return Settings(config=config, path=root / "mailers.yaml", config_hash="-", data_dir=root)


def postmark_request(record_id: str | None = None) -> WebhookRequest:
    """A Postmark delivery webhook with valid basic-auth credentials."""
    record = {
        "RecordType": "Delivery",
        "MessageID": record_id or secrets.token_hex(8),
        "Recipient": "ann@example.com",
        "DeliveredAt": "2026-01-05T10:00:00Z",
    }
    return postmark.signed_request(
        json.dumps(record).encode(),
        {"webhook_username": "hook-user", "webhook_password": "hook-password"},
    )


def mailgun_request(**event: Any) -> WebhookRequest:
    return mailgun.webhook_request(
        {"event": "delivered", "id": secrets.token_hex(8), **event},
        {"webhook_signing_key": "mg-signing-key"},
    )


def resend_request(body: bytes) -> WebhookRequest:
    return resend.signed_request(body, CREDENTIALS["MAILERS_TEST_RS_SECRET"])


def landed_lines(landing: Path, kind: str = "*") -> list[bytes]:
    """Every line of every closed segment of ``kind``."""
    return [
        line
        for path in sorted(landing.glob(f"{kind}/*/*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]
