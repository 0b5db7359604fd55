"""A green run means nothing is wrong: Dagster materializations of a campaign's sends and of
provider events on a real DuckDB file, with the asset checks they evaluate.

Sandbox accounts drill the faults: ``throttled`` (every message answered not sent, the
account stays up), ``timeout`` (every batch in doubt), a template variable the segment does
not have, a NULL a template needs, a polled account whose API is down.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from adapters.settings import load
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.audience import AudienceSpec, resolve
from mailers.clock import FixedClock, use_clock
from mailers.config import Settings
from mailers.ledger import LedgerContext, LedgerEntry, LedgerStatus, LedgerWriter
from orchestration.defs.build import build_definitions
from orchestration.defs.campaigns import audience_key, sends_key
from orchestration.defs.records import EVENTS_KEY
from orchestration.defs.runs import SEND_WINDOW_TAG
from tests.conftest import eml_files, query, write_config
from tests.test_render_failures import with_template

WINDOW = "2026-11-23T08:00:00Z"
IN_WINDOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
"""Now, for these runs: WINDOW is the current window (so no run here is a backfill)."""


@pytest.fixture(autouse=True)
def _in_window() -> Iterator[None]:
    with use_clock(FixedClock(IN_WINDOW)):
        yield


def _run(
    settings: Settings,
    campaign: str = "acme.pro_tips",
    *,
    window: str = WINDOW,
    selection: Sequence[dg.AssetKey] | None = None,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    ref = settings.campaign(campaign)
    job = build_definitions(str(settings.path)).resolve_job_def("mailers_pipeline")
    return job.execute_in_process(
        instance=instance or dg.DagsterInstance.ephemeral(),
        asset_selection=list(selection or [audience_key(ref), sends_key(ref)]),
        raise_on_error=False,
        tags={SEND_WINDOW_TAG: window},
    )


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _failure(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure)


def _fault(fault: str, *accounts: str) -> Callable[[dict[str, Any]], None]:
    def mutate(config: dict[str, Any]) -> None:
        for account in accounts:
            config["workspaces"]["acme"]["provider_accounts"][account]["settings"]["fault"] = fault

    return mutate


def _latest(settings: Settings, campaign: str) -> list[dict[str, Any]]:
    return query(
        settings,
        f"""
        select message_key, status from (
            select message_key, status, row_number() over (
                partition by message_key order by recorded_at desc,
                case status when 'dispatching' then 0 else 1 end desc) as r
            from mailers.send_ledger where campaign = '{campaign}') where r = 1
        """,
    )


def test_a_run_leaving_messages_not_sent_fails_after_recording_them(
    core_project, tmp_path: Path
) -> None:
    settings = core_project(_fault("throttled", "acme_sandbox_b"))

    result = _run(settings)

    assert not result.success
    not_sent = [r for r in _latest(settings, "pro_tips") if r["status"] == "not_sent"]
    message = _failure(result)
    assert f"{len(not_sent)} messages of acme.pro_tips (window {WINDOW}) were not sent" in message
    assert "acme_sandbox_b: sandbox fault: rate limited (429)" in message
    assert f"re-run window {WINDOW}" in message
    audit = query(settings, "select counts from mailers.audit_log where action = 'send'")
    assert json.loads(audit[0]["counts"])["not_sent"] == len(not_sent) > 20
    assert json.loads(audit[0]["counts"])["accepted"] > 0  # the other account took its share
    check = _checks(result)["not_sent"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["messages"].value == len(not_sent)

    # The same warehouse and data directory, the provider is back.
    healed = load(write_config(tmp_path))
    retry = _run(healed)

    assert retry.success, _failure(retry)
    assert _checks(retry)["not_sent"].passed
    statuses = {r["status"] for r in _latest(healed, "pro_tips")}
    assert "not_sent" not in statuses
    accepted = query(
        healed, "select message_key from mailers.send_ledger where status = 'accepted'"
    )
    assert len(accepted) == len({r["message_key"] for r in accepted}) == len(eml_files(healed))


def test_messages_in_doubt_fail_the_unknown_check_not_the_run(core_project) -> None:
    settings = core_project(_fault("timeout", "acme_sandbox_a", "acme_sandbox_b"))

    result = _run(settings)

    assert result.success, _failure(result)
    unknown = [r for r in _latest(settings, "pro_tips") if r["status"] == "unknown"]
    check = _checks(result)["unknown"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["messages"].value == len(unknown) > 20
    assert "timed out after sending" in str(check.description)
    assert _checks(result)["not_sent"].passed


def test_a_recipient_failing_to_render_every_run_is_a_warning_naming_the_variable(
    core_project,
) -> None:
    settings = core_project()
    instance = dg.DagsterInstance.ephemeral()

    runs = [
        _run(settings, "globex.launch_newsletter", window="once", instance=instance)
        for _ in range(2)
    ]

    for result in runs:
        assert result.success, _failure(result)
        check = _checks(result)["render_failed"]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert check.metadata["variables"].value == "first_name"
        # The check judges this run's materialization, not the one before it.
        assert check.target_materialization_data is not None
        assert check.target_materialization_data.run_id == result.run_id
        assert "retried by later runs, failing on 'first_name'" in str(check.description)
    skipped = _checks(runs[1])["skipped_by_reason"]
    assert skipped.passed
    assert skipped.metadata["suppressed"].value > 0


def test_a_template_rendering_for_nobody_is_an_error_naming_the_variable(
    core_project, tmp_path
) -> None:
    body = "Your code: {{ coupon_code }}\n{{ unsubscribe_url }}\n"
    settings = core_project(with_template(tmp_path, "pro_tips", "body.txt", body))

    result = _run(settings)

    checks = _checks(result)
    render = checks["render_failed"]
    assert not render.passed and render.severity == dg.AssetCheckSeverity.ERROR
    assert "the segment has no 'coupon_code'" in str(render.description)
    assert render.metadata["template_variable_missing"].value > 50
    everyone = checks["skipped_by_reason"]
    assert not everyone.passed and everyone.severity == dg.AssetCheckSeverity.WARN
    assert everyone.metadata["template_variable_missing"].value > 50
    assert eml_files(settings) == []


def test_a_run_settling_a_killed_runs_messages_warns_in_its_summary(core_project) -> None:
    settings = core_project()
    ref = settings.campaign("acme.pro_tips")
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        killed = LedgerWriter(warehouse, LedgerContext.of(ref, WINDOW, run_id="killed-run"))
        table = resolve(warehouse, AudienceSpec.of(ref, WINDOW), killed.settled_keys_sql())
        keys = warehouse.query(
            f"select mailers_message_key as k from {table} "
            "where mailers_disposition = 'send' order by k limit 7"
        )["k"].to_pylist()
        killed.record([LedgerEntry(k, LedgerStatus.DISPATCHING) for k in keys])
    instance = dg.DagsterInstance.ephemeral()

    result = _run(settings, instance=instance)

    assert result.success, _failure(result)
    materialization = result.asset_materializations_for_node("acme__pro_tips__sends")[0]
    assert materialization.metadata["reconciled_unknown"].value == 7
    warnings = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.level >= 30 and "earlier run of this window died" in entry.user_message
    ]
    assert len(warnings) == 1 and "7 messages of acme.pro_tips" in warnings[0]


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_poll_error_is_a_failed_check_and_ingestion_goes_on(
    core_project, monkeypatch: pytest.MonkeyPatch
) -> None:
    def polled_account(config: dict[str, Any]) -> None:
        config["workspaces"]["acme"]["provider_accounts"]["acme_polled"] = {
            "kind": "mailgun",
            "credentials": {"api_key": {"env": "TEST_POLLED_MAILGUN_KEY"}},
            "settings": {"base_url": f"http://127.0.0.1:{_dead_port()}", "domain": "mg.test"},
            "poll_events": True,
        }

    monkeypatch.setenv("TEST_POLLED_MAILGUN_KEY", "test-key")
    settings = core_project(polled_account)

    result = _run(settings, selection=[EVENTS_KEY, dg.AssetKey(["mailers", "suppressions"])])

    assert result.success, _failure(result)
    check = _checks(result)["poll_errors"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["poll_errors"].value == 1
    assert "acme_polled" in str(check.description)
    assert "test-key" not in json.dumps({k: str(v.value) for k, v in check.metadata.items()})


def test_a_missing_secret_fails_the_run_before_dbt_naming_the_variable(
    core_project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAILERS_UNSUBSCRIBE_KEY")
    settings = core_project()
    instance = dg.DagsterInstance.ephemeral()
    job = build_definitions(str(settings.path)).resolve_job_def("send__acme__pro_tips")

    result = job.execute_in_process(
        instance=instance, raise_on_error=False, tags={SEND_WINDOW_TAG: WINDOW}
    )

    assert not result.success
    failed = [e.step_key for e in result.all_events if e.is_step_failure]
    assert failed == ["audience_dbt_models"]
    message = _failure(result)
    assert "this run cannot start" in message
    assert "MAILERS_UNSUBSCRIBE_KEY (for unsubscribe.signing_key)" in message
    assert not any(
        "Running dbt command" in (entry.user_message or "")
        for entry in instance.all_logs(result.run_id)
    )
    assert query(settings, "select count(*) as n from mailers.send_ledger") == [{"n": 0}]


def test_a_sends_step_alone_checks_its_campaigns_secrets_first(
    core_project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAILERS_UNSUBSCRIBE_KEY")
    settings = core_project()

    result = _run(settings)

    assert not result.success
    assert "environment variable is not set: MAILERS_UNSUBSCRIBE_KEY" in _failure(result)
    assert query(settings, "select count(*) as n from mailers.send_ledger") == [{"n": 0}]
