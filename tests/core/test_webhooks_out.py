"""Canonical webhooks out, core: signatures (checked by the independent ``standardwebhooks``
package), payload shapes, the retry schedule and the subscriber config."""

from __future__ import annotations

import base64
import itertools
import json
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from adapters.settings import load
from mailers.config import WorkspaceConfig
from mailers.errors import ConfigError
from mailers.preflight import environment_references, run_references
from mailers.subscribers_config import THREE_DAYS, DisableConfig, RetryConfig, SubscriberConfig
from mailers.webhooks_out import payload, schedule, signing

from .support import ConfigEditor

SECRET_A = "whsec_" + base64.b64encode(b"a" * 24).decode()
SECRET_B = "whsec_" + base64.b64encode(b"b" * 32).decode()
AT = datetime(2026, 12, 3, 9, 0, 0)


def _event(event_id: str = "ev1", event_type: str = "delivered") -> dict[str, object]:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "occurred_at": AT,
        "provider": "sandbox",
        "provider_account": "acme_sandbox_a",
        "stream": "lifecycle",
        "recipient": "a@example.test",
        "raw_payload": '{"secret": "provider data"}',
    }


def _signed(secrets: list[str], body: bytes) -> dict[str, str]:
    keys = [signing.secret_key(s, "test") for s in secrets]
    # The library checks the timestamp against the real clock (5 minutes' tolerance).
    return signing.headers(keys, "msg_1", int(time.time()), body)


def test_signature_verifies_with_standardwebhooks() -> None:
    body = payload.body([_event()], AT, batched=False)
    sent = _signed([SECRET_A], body)
    assert Webhook(SECRET_A).verify(body, sent)["data"]["event_id"] == "ev1"
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_B).verify(body, sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_A).verify(body + b" ", sent)


def test_rotation_sends_a_signature_per_secret_and_both_verify() -> None:
    body = payload.body([_event("e1"), _event("e2", "bounced")], AT, batched=True)
    sent = _signed([SECRET_A, SECRET_B], body)
    assert len(sent[signing.SIGNATURE_HEADER].split(" ")) == 2
    for secret in (SECRET_A, SECRET_B):
        document = Webhook(secret).verify(body, sent)
        assert document["type"] == payload.BATCH_TYPE
        assert [e["data"]["event_id"] for e in document["data"]["events"]] == ["e1", "e2"]


def test_bad_secret_is_named_by_where_never_by_value() -> None:
    with pytest.raises(ConfigError) as caught:
        signing.secret_key("whsec_not*base64", "webhook_subscribers.crm.secrets[0] (CRM_KEY)")
    assert "CRM_KEY" in str(caught.value) and "not*base64" not in str(caught.value)


def test_payload_leaves_the_raw_provider_payload_out() -> None:
    document = json.loads(payload.body([_event()], AT, batched=False))
    assert document["type"] == "email.delivered"
    assert document["timestamp"] == "2026-12-03T09:00:00.000000Z"
    assert "raw_payload" not in document["data"]
    with pytest.raises(ValueError):
        payload.body([_event("a"), _event("b")], AT, batched=False)


def test_webhook_id_is_the_same_for_the_same_events_only() -> None:
    one = payload.webhook_id("acme", "crm", ["e1", "e2"])
    assert one == payload.webhook_id("acme", "crm", ["e1", "e2"]).lower()
    assert one.startswith("msg_")
    assert one != payload.webhook_id("acme", "crm", ["e1"])
    assert one != payload.webhook_id("acme", "other", ["e1", "e2"])


def test_default_schedule_retries_for_three_days_then_gives_up() -> None:
    retry = RetryConfig()
    offsets = schedule.retry_offsets(retry, "delivery-1")
    assert offsets[-1] == pytest.approx(THREE_DAYS)
    assert all(b > a for a, b in itertools.pairwise(offsets))
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert gaps[0] == pytest.approx(30, rel=0.21)  # first delay, jittered by up to 20%
    assert max(gaps) <= retry.max_delay_seconds * 1.2 + 1
    first = AT
    last = first + timedelta(seconds=offsets[-1])
    assert schedule.after_failure(retry, len(offsets), first, last, "delivery-1").give_up


def test_jitter_spreads_deliveries_but_is_stable_per_delivery() -> None:
    retry = RetryConfig()
    assert schedule.delay_seconds(retry, 3, "d1") == schedule.delay_seconds(retry, 3, "d1")
    delays = {schedule.delay_seconds(retry, 3, f"d{i}") for i in range(20)}
    assert len(delays) > 10 and all(96 <= d <= 144 for d in delays)


def test_disable_needs_both_the_time_and_the_failures() -> None:
    rule = DisableConfig(after_hours=72, min_failures=10)
    since = AT - timedelta(hours=73)
    assert schedule.should_disable(rule, since, 10, AT)
    assert not schedule.should_disable(rule, since, 9, AT)
    assert not schedule.should_disable(rule, AT - timedelta(hours=71), 50, AT)
    assert not schedule.should_disable(rule, None, 50, AT)


def test_subscriber_config_is_strict_and_part_of_a_workspace() -> None:
    config = SubscriberConfig.model_validate(
        {
            "url": "https://crm.example.test/hooks",
            "secrets": [{"env": "CRM_KEY"}, {"env": "CRM_KEY_OLD"}],
            "event_types": ["bounced", "complained"],
            "streams": ["lifecycle"],
            "batch_size": 50,
        }
    )
    assert [s.env for s in config.secrets] == ["CRM_KEY", "CRM_KEY_OLD"]
    assert config.retry.give_up_after_seconds == THREE_DAYS
    with pytest.raises(ValidationError):
        SubscriberConfig.model_validate({"url": "https://x.test", "secrets": []})
    with pytest.raises(ValidationError):
        SubscriberConfig.model_validate(
            {"url": "https://x.test", "secrets": [{"env": "K"}], "event_types": ["nope"]}
        )
    assert "webhook_subscribers" in WorkspaceConfig.model_fields


def test_subscriber_secrets_are_listed_for_validate_but_not_needed_by_sends(
    edit_config: ConfigEditor,
) -> None:
    def subscribe(config: dict[str, Any]) -> None:
        config["workspaces"]["acme"]["webhook_subscribers"] = {
            "crm": {"url": "https://crm.test/h", "secrets": [{"env": "CRM_A"}, {"env": "CRM_B"}]}
        }

    settings = load(edit_config(subscribe))
    listed = [r for r in environment_references(settings) if r.subscriber == "crm"]
    assert [(r.env, r.path, r.needed) for r in listed] == [
        ("CRM_A", "workspaces.acme.webhook_subscribers.crm.secrets.0", True),
        ("CRM_B", "workspaces.acme.webhook_subscribers.crm.secrets.1", True),
    ]
    assert not [r for r in run_references(settings, settings.campaigns()) if r.subscriber]
