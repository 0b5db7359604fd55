"""Backfilling missed feedback from Mailgun's events API and Postmark's bounces and
messages APIs (the simulator) end to end.

A receiver that was down never landed some messages' webhooks: the backfill finds those
messages (no final event past ``backfill_after_hours``), fetches their window from the
events API into the landing zone, and ingestion loads each missing event once while the
events that did arrive are not stored twice.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from adapters.providers import mailgun, postmark
from adapters.providers.mailgun import MailgunProvider, MailgunSettings
from adapters.providers.postmark import PostmarkSettings
from adapters.providers.postmark.sending import PostmarkProvider
from adapters.providers.registry import event_parser
from adapters.settings import load
from adapters.simulator import Simulator
from adapters.simulator import mailgun as mailgun_sim
from adapters.simulator import postmark as postmark_sim
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers import clock
from mailers.backfill import BackfillTarget, backfill_into_landing, open_windows
from mailers.completeness import CompletenessConfig
from mailers.config import ProviderAccountConfig
from mailers.ingest import ingest
from mailers.landing import land
from mailers.ledger import LEDGER_SCHEMA
from mailers.messages import MESSAGE_KEY_FIELD
from mailers.secrets import SecretRef
from mailers.tables import ensure_tables
from orchestration.cli import app
from tests.adapters.provider_contract import make_message
from tests.conftest import write_config

ACCOUNT = "acme_mailgun"
DOMAIN = "mg.backfill.test"
CREDENTIALS = {"api_key": "key-backfill-test", "webhook_signing_key": "whsk-backfill-test"}
CONFIG = CompletenessConfig(deadline_hours=72, backfill_after_hours=6)


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    monkeypatch.setenv("MAILGUN_BACKFILL_API_KEY", CREDENTIALS["api_key"])
    with Simulator() as simulator:
        mailgun_sim.register(simulator, credentials=CREDENTIALS, domains={DOMAIN})
        yield simulator


def _target(sim: Simulator) -> BackfillTarget:
    config = ProviderAccountConfig(
        kind="mailgun",
        credentials={"api_key": SecretRef(env="MAILGUN_BACKFILL_API_KEY")},
        settings={"domain": DOMAIN, "base_url": sim.base_url},
    )
    return BackfillTarget(
        kind="mailgun",
        account=ACCOUNT,
        fetch=lambda start, end, ids: mailgun.SPEC.backfill_events(
            ACCOUNT, config, start, end, ids
        ),
    )


def _ledger_rows(
    results: list[tuple[str, str | None, str]],
    provider: str = "mailgun",
    account: str = ACCOUNT,
) -> pa.Table:
    """``accepted`` ledger rows of (message key, provider message id, recipient), now."""
    at = clock.utcnow()
    return pa.Table.from_pylist(
        [
            {
                "ledger_id": uuid.uuid4().hex,
                "message_key": key,
                "status": "accepted",
                "workspace": "acme",
                "stream": "lifecycle",
                "campaign": "pro_tips",
                "send_window": "w1",
                "recipient": recipient,
                "provider": provider,
                "provider_account": account,
                "provider_message_id": message_id,
                "run_id": "run-1",
                "recorded_at": at,
            }
            for key, message_id, recipient in results
        ],
        schema=LEDGER_SCHEMA,
    )


def _events(warehouse: DuckDBWarehouse) -> list[dict[str, object]]:
    return warehouse.query(
        "select event_id, event_type, message_key from mailers.events order by event_id"
    ).to_pylist()


def test_a_receiver_that_was_down_loses_nothing(
    sim: Simulator, tmp_path: Path, fixed_clock: clock.FixedClock
) -> None:
    landing = tmp_path / "landing"
    settings = MailgunSettings.model_validate({"domain": DOMAIN, "base_url": sim.base_url})
    messages = [make_message(f"reader{i}@example.com") for i in range(6)]
    provider = MailgunProvider(ACCOUNT, settings, CREDENTIALS["api_key"])
    try:
        results = provider.send_batch(messages)
    finally:
        provider.close()
    assert all(r.accepted for r in results)
    with DuckDBWarehouse(tmp_path / "wh.duckdb") as warehouse:
        ensure_tables(warehouse)
        rows = [
            (m.message_key, r.provider_message_id, m.recipient)
            for m, r in zip(messages, results, strict=True)
        ]
        warehouse.append("mailers", "send_ledger", _ledger_rows(rows))
        fixed_clock.advance(1 * 3600)  # the simulator's events lie in the past now
        arrived = {m.message_key for m in messages[:2]}
        # the receiver was up for the first two messages' webhooks only
        delivered = [
            body
            for body in mailgun_sim.events_as_webhooks(sim)
            if json.loads(body)["event-data"]["user-variables"].get(MESSAGE_KEY_FIELD) in arrived
        ]
        assert delivered
        land(landing, "mailgun", ACCOUNT, delivered)
        ingest(warehouse, landing, event_parser)
        before = _events(warehouse)

        assert open_windows(warehouse, CONFIG) == []  # not past backfill_after_hours yet
        fixed_clock.advance(6 * 3600)
        [window] = open_windows(warehouse, CONFIG)
        assert (window.provider_account, window.messages) == (ACCOUNT, 4)
        assert open_windows(warehouse, CONFIG, accounts={"other"}) == []

        report = backfill_into_landing(landing, [_target(sim)], [window])
        assert report.errors == {} and report.total > 0
        ingest(warehouse, landing, event_parser)
        after = _events(warehouse)
        again = backfill_into_landing(landing, [_target(sim)], [window])
        ingest(warehouse, landing, event_parser)

        assert open_windows(warehouse, CONFIG) == []
        ids = [row["event_id"] for row in _events(warehouse)]
        assert len(ids) == len(set(ids)), "an event was stored twice"
        assert _events(warehouse) == after and again.total == report.total
        assert {r["event_id"] for r in before} < {r["event_id"] for r in after}
        finals = {r["message_key"] for r in after if r["event_type"] in ("delivered", "bounced")}
        assert finals == {m.message_key for m in messages}


def test_a_failing_account_is_reported_and_others_still_backfilled(
    sim: Simulator, tmp_path: Path, fixed_clock: clock.FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILGUN_BACKFILL_API_KEY", "key-wrong")
    with DuckDBWarehouse(tmp_path / "wh.duckdb") as warehouse:
        ensure_tables(warehouse)
        warehouse.append("mailers", "send_ledger", _ledger_rows([("k1", "m1", "a@example.com")]))
        fixed_clock.advance(7 * 3600)
        windows = open_windows(warehouse, CONFIG)
    report = backfill_into_landing(tmp_path / "landing", [_target(sim)], windows)
    assert list(report.errors) == [ACCOUNT] and "key-wrong" not in report.errors[ACCOUNT]
    assert report.total == 0


def _simulated_mailgun(sim: Simulator) -> Callable[[dict[str, Any]], None]:
    def mutate(config: dict[str, Any]) -> None:
        config["workspaces"]["acme"]["provider_accounts"][ACCOUNT] = {
            "kind": "mailgun",
            "credentials": {"api_key": {"env": "MAILGUN_BACKFILL_API_KEY"}},
            "settings": {"base_url": sim.base_url, "domain": DOMAIN},
        }

    return mutate


def test_the_cli_backfills_one_account_into_the_landing_zone(
    sim: Simulator, tmp_path: Path, fixed_clock: clock.FixedClock
) -> None:
    settings = load(write_config(tmp_path, _simulated_mailgun(sim)))
    mailgun_settings = MailgunSettings.model_validate({"domain": DOMAIN, "base_url": sim.base_url})
    messages = [make_message(f"cli{i}@example.com") for i in range(3)]
    provider = MailgunProvider(ACCOUNT, mailgun_settings, CREDENTIALS["api_key"])
    try:
        results = provider.send_batch(messages)
    finally:
        provider.close()
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
        rows = [
            (m.message_key, r.provider_message_id, m.recipient)
            for m, r in zip(messages, results, strict=True)
        ]
        warehouse.append("mailers", "send_ledger", _ledger_rows(rows))
    fixed_clock.advance(7 * 3600)
    runner = CliRunner()
    config = ["--config", str(settings.path)]

    unknown = runner.invoke(app, ["events", "backfill", *config, "--account", "nope"])
    assert unknown.exit_code == 2 and "unknown provider account nope" in unknown.output
    result = runner.invoke(app, ["events", "backfill", *config, "--account", ACCOUNT])

    assert result.exit_code == 0, result.output
    assert (
        f"{ACCOUNT} " in result.output
        and "3 messages without a final event (asked)" in result.output
    )
    assert list((settings.landing_dir / "mailgun" / ACCOUNT).glob("*.jsonl"))
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ingest(warehouse, settings.landing_dir, event_parser)
        assert open_windows(warehouse, settings.config.completeness) == []


PM_ACCOUNT = "acme_postmark"
PM_CREDENTIALS = {"server_token": "pm-backfill-token-7c1d"}
PM_RECIPIENTS = [
    "hard@bounce.mailers.test",
    "soft@softbounce.mailers.test",
    "angry@complaint.mailers.test",
    *(f"reader{i}@example.com" for i in range(5)),
]


@pytest.fixture
def pm_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    monkeypatch.setenv("POSTMARK_BACKFILL_TOKEN", PM_CREDENTIALS["server_token"])
    with Simulator() as simulator:
        postmark_sim.register(simulator, credentials=PM_CREDENTIALS)
        yield simulator


def _pm_target(sim: Simulator) -> BackfillTarget:
    config = ProviderAccountConfig(
        kind="postmark",
        credentials={"server_token": SecretRef(env="POSTMARK_BACKFILL_TOKEN")},
        settings={"base_url": sim.base_url},
    )
    return BackfillTarget(
        kind="postmark",
        account=PM_ACCOUNT,
        fetch=lambda start, end, ids: postmark.SPEC.backfill_events(
            PM_ACCOUNT, config, start, end, ids
        ),
    )


def _completeness(warehouse: DuckDBWarehouse) -> float:
    """Share of ledger messages with a final event, joined by key or Postmark's id."""
    [row] = warehouse.query(
        """
        select avg(case when exists (
            select 1 from mailers.events as e
            where e.event_type in ('delivered', 'bounced', 'rejected', 'failed', 'complained')
              and (e.message_key = l.message_key
                   or (e.provider_account = l.provider_account
                       and e.provider_message_id = l.provider_message_id))
        ) then 1.0 else 0.0 end) as rate
        from mailers.send_ledger as l
        """
    ).to_pylist()
    return float(row["rate"])


def test_a_postmark_receiver_that_was_down_loses_nothing(
    pm_sim: Simulator, tmp_path: Path, fixed_clock: clock.FixedClock
) -> None:
    landing = tmp_path / "landing"
    settings = PostmarkSettings.model_validate({"base_url": pm_sim.base_url})
    messages = [make_message(r) for r in PM_RECIPIENTS]
    provider = PostmarkProvider(PM_ACCOUNT, settings, PM_CREDENTIALS["server_token"])
    try:
        results = provider.send_batch(messages)
    finally:
        provider.close()
    assert all(r.accepted for r in results)
    webhooks = postmark_sim.events_as_webhooks(pm_sim)
    with DuckDBWarehouse(tmp_path / "wh.duckdb") as warehouse:
        ensure_tables(warehouse)
        rows = [
            (m.message_key, r.provider_message_id, m.recipient)
            for m, r in zip(messages, results, strict=True)
        ]
        warehouse.append("mailers", "send_ledger", _ledger_rows(rows, "postmark", PM_ACCOUNT))
        fixed_clock.advance(1 * 3600)
        # The receiver was up for two messages' webhooks (a bounce and a delivery) only.
        arrived = {messages[0].message_key, messages[3].message_key}
        delivered = [
            body
            for body in webhooks
            if json.loads(body)["Metadata"].get(MESSAGE_KEY_FIELD) in arrived
        ]
        missed = [body for body in webhooks if body not in delivered]
        land(landing, "postmark", PM_ACCOUNT, delivered)
        ingest(warehouse, landing, event_parser)
        before = _events(warehouse)
        assert _completeness(warehouse) == pytest.approx(2 / len(messages))

        fixed_clock.advance(6 * 3600)
        [window] = open_windows(warehouse, CONFIG)
        assert (window.provider_account, window.messages) == (PM_ACCOUNT, len(messages) - 2)
        assert set(window.provider_message_ids) == {
            r.provider_message_id for r in results[1:3] + results[4:]
        }

        report = backfill_into_landing(landing, [_pm_target(pm_sim)], [window])
        assert report.errors == {} and report.total > 0
        ingest(warehouse, landing, event_parser)
        after = _events(warehouse)
        assert open_windows(warehouse, CONFIG) == []
        assert _completeness(warehouse) == 1.0

        # Postmark's retries of the missed webhooks arrive once the receiver is back, and
        # a second backfill asks again: nothing is stored twice.
        land(landing, "postmark", PM_ACCOUNT, missed)
        again = backfill_into_landing(landing, [_pm_target(pm_sim)], [window])
        ingest(warehouse, landing, event_parser)
        final = _events(warehouse)

    ids = [row["event_id"] for row in final]
    assert len(ids) == len(set(ids)), "an event was stored twice"
    assert again.errors == {} and again.total == report.total
    assert {r["event_id"] for r in before} < {r["event_id"] for r in after}
    finals = ("delivered", "bounced", "complained")
    assert {r["event_id"] for r in final if r["event_type"] in finals} == {
        r["event_id"] for r in after if r["event_type"] in finals
    }, "a webhook retry brought a final event the backfill had under another id"
    keyed = {r["message_key"] for r in after if r["event_type"] == "delivered"}
    assert keyed == {m.message_key for m in messages[2:]}  # details carry our Metadata


def test_the_cli_backfills_a_postmark_account_through_the_registry(
    pm_sim: Simulator, tmp_path: Path, fixed_clock: clock.FixedClock
) -> None:
    def mutate(config: dict[str, Any]) -> None:
        config["workspaces"]["acme"]["provider_accounts"][PM_ACCOUNT] = {
            "kind": "postmark",
            "credentials": {"server_token": {"env": "POSTMARK_BACKFILL_TOKEN"}},
            "settings": {"base_url": pm_sim.base_url},
        }

    settings = load(write_config(tmp_path, mutate))
    pm_settings = PostmarkSettings.model_validate({"base_url": pm_sim.base_url})
    messages = [make_message(f"cli{i}@example.com") for i in range(3)]
    provider = PostmarkProvider(PM_ACCOUNT, pm_settings, PM_CREDENTIALS["server_token"])
    try:
        results = provider.send_batch(messages)
    finally:
        provider.close()
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
        rows = [
            (m.message_key, r.provider_message_id, m.recipient)
            for m, r in zip(messages, results, strict=True)
        ]
        warehouse.append("mailers", "send_ledger", _ledger_rows(rows, "postmark", PM_ACCOUNT))
    fixed_clock.advance(7 * 3600)

    result = CliRunner().invoke(
        app, ["events", "backfill", "--config", str(settings.path), "--account", PM_ACCOUNT]
    )

    assert result.exit_code == 0, result.output
    assert "3 messages without a final event (asked)" in result.output
    assert f"{PM_ACCOUNT}: 3 events landed" in result.output
    details = [path for p, _, path in pm_sim.requests if path.endswith("/details")]
    assert sorted(details) == sorted(
        f"/messages/outbound/{r.provider_message_id}/details" for r in results
    )
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ingest(warehouse, settings.landing_dir, event_parser)
        assert open_windows(warehouse, settings.config.completeness) == []
