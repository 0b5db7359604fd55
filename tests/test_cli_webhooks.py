"""``mailers webhooks`` deliver, status, enable and replay against a loopback subscriber;
errors name the workspace and subscriber (and a secret's variable), never a secret."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.clock import FixedClock, utcnow
from mailers.config import Settings
from orchestration.cli import app
from tests.webhook_receiver import (
    SECRET_NEW,
    add_events,
    event_rows,
    receiving,
    settings_with,
    subscriber,
)

QUICK = {
    "retry": {"first_delay_seconds": 1, "max_delay_seconds": 2, "give_up_after_seconds": 5},
    "disable": {"after_hours": 0.001, "min_failures": 3},  # 3.6 s
}


def hooks(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["webhooks", *args, "--config", str(settings.path)])
    assert SECRET_NEW not in result.output
    return result.exit_code, result.output


def test_deliver_disable_status_enable_and_replay(
    tmp_path: Path, fixed_clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_KEY", SECRET_NEW)
    answer = [500]
    with receiving(lambda hook_id, before: answer[0]) as receiver:
        settings = settings_with(tmp_path, {"crm": subscriber(receiver.url, **QUICK)})
        start = utcnow()
        with DuckDBWarehouse(settings.warehouse_path) as warehouse:
            add_events(warehouse, event_rows(2))
        code, out = hooks(settings, "deliver")
        assert code == 0 and "acme/crm: 2 events in 2 new messages; 0 delivered, 2 to retry" in out
        for _ in range(10):
            fixed_clock.advance(2)
            code, out = hooks(settings, "deliver")
            if "DISABLED" in out:
                break
        assert "DISABLED" in out and "webhook subscriber acme/crm disabled" in out

        code, out = hooks(settings, "status")
        assert code == 0 and "acme/crm" in out and "disabled" in out
        code, out = hooks(settings, "status", "--json")
        (row,) = [json.loads(line) for line in out.splitlines()]
        assert (row["enabled"], row["dead_letters"], row["pending_retries"]) == (False, 2, 0)
        assert row["last_attempt"]["response_code"] == 500

        code, out = hooks(settings, "deliver")
        assert "acme/crm: skipped, disabled since" in out
        code, out = hooks(settings, "replay", "crm", "--since", f"{start:%Y-%m-%dT%H:%M:%S}")
        assert code == 2 and "acme/crm" in out and "enable it before replaying" in out

        code, out = hooks(settings, "enable", "crm", "--actor", "cli:test")
        assert code == 0 and "acme/crm: enabled" in out
        answer[0] = 200
        until = utcnow() + timedelta(seconds=1)
        code, out = hooks(
            settings,
            "replay",
            "acme/crm",
            "--since",
            f"{start - timedelta(seconds=1):%Y-%m-%dT%H:%M:%S}",
            "--until",
            f"{until:%Y-%m-%dT%H:%M:%S}",
        )
        assert code == 0 and "2 events in 2 new messages; 2 delivered" in out
        assert sorted(receiver.accepted_event_ids()) == ["ev-000000", "ev-000001"]
        code, out = hooks(settings, "status", "--json")
        assert json.loads(out)["enabled"] is True


def test_errors_name_the_subscriber_and_never_a_secret(
    tmp_path: Path, fixed_clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_with(tmp_path, {"crm": subscriber("http://127.0.0.1:9/hooks")})
    code, out = hooks(settings, "enable", "nope")
    assert code == 2 and "no webhook subscriber 'nope' (subscribers: acme/crm)" in out
    monkeypatch.delenv("HOOK_KEY", raising=False)
    code, out = hooks(settings, "deliver")
    assert code == 1 and "acme/crm" in out and "HOOK_KEY is not set" in out
    monkeypatch.setenv("HOOK_KEY", "whsec_not*base64" + SECRET_NEW)
    code, out = hooks(settings, "deliver")
    assert code == 1 and "secrets[0] (HOOK_KEY): not a Standard Webhooks secret" in out
