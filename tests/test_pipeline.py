"""The whole Dagster graph materialized on a temp DuckDB warehouse with real dbt.

The marts are checked against the sandbox's documented, deterministic rule applied to the
messages the ledger says were accepted, and the ledger against the ``.eml`` files the
sandbox actually wrote.
"""

from __future__ import annotations

import csv
import email
import email.policy
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from croniter import croniter

from adapters.providers import sandbox
from adapters.settings import load
from mailers import clock
from mailers.clock import FixedClock, use_clock
from mailers.config import ScheduleConfig, Settings
from mailers.windows import send_window
from orchestration.defs.build import build_definitions
from orchestration.defs.campaigns import audience_key
from orchestration.defs.dbt_profile import DUCKDB_PATH_ENV, dbt_environment
from orchestration.defs.runs import SEND_WINDOW_TAG
from tests.conftest import eml_files, example_config, query, seed_warehouse, write_config

IN_WINDOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
"""Now, for the runs tagged with window 2026-11-23T08:00:00Z: it is the current window."""

EVENT_COLUMNS = {
    "delivered": "delivered",
    "bounce": "hard_bounces",
    "soft_bounce": "soft_bounces",
    "complaint": "complaints",
    "open": "opens",
    "click": "clicks",
    "unsubscribe": "unsubscribes",
    "deferral": "deferred",
}


def _run(
    defs: dg.Definitions, instance: dg.DagsterInstance, job: str = "mailers_pipeline", **kwargs: Any
) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=False, **kwargs
    )


def tick_after(schedule: ScheduleConfig, window: str) -> datetime:
    """The schedule's first tick after ``window`` (one of its ticks), in UTC."""
    zone = ZoneInfo(schedule.timezone)
    wall = datetime.fromisoformat(window).astimezone(zone).replace(tzinfo=None)
    following: datetime = croniter(schedule.cron, wall).get_next(datetime)
    tick = following.replace(tzinfo=zone).astimezone(UTC)
    assert send_window(schedule, tick) == f"{tick:%Y-%m-%dT%H:%M:%SZ}" != window
    return tick


@pytest.fixture(scope="module")
def module_clock() -> Iterator[clock.ShiftedClock]:
    """Mailers' clock for the module: running, from one hour into the acme.pro_tips window
    before the one of the suite's now. The module's runs share that window on any date,
    and only Mailers' clock (not the system's) puts them in it."""
    config = example_config()["workspaces"]["acme"]["campaigns"]["pro_tips"]["schedule"]
    schedule = ScheduleConfig(**config)
    current = datetime.fromisoformat(send_window(schedule, clock.now()))
    previous = datetime.fromisoformat(send_window(schedule, current - timedelta(seconds=1)))
    with clock.use_clock(clock.ShiftedClock(previous + timedelta(hours=1))) as running:
        yield running


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory, module_clock: clock.ShiftedClock
) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("pipeline")
    settings = load(write_config(root))
    seed_warehouse(settings, 1500)
    dbt_variables = dbt_environment(settings)
    environ_before = {name: os.environ.get(name) for name in dbt_variables}
    defs = build_definitions(str(settings.path))
    instance = dg.DagsterInstance.ephemeral()
    first = _run(defs, instance)
    assert first.success, _failures(first)
    snapshot = SimpleNamespace(
        emls={p: p.stat().st_mtime_ns for p in eml_files(settings)},
        ledger=query(settings, "select * from mailers.send_ledger"),
        deliverability=query(settings, "select * from marts.fct_deliverability_daily"),
        messages=query(settings, "select * from marts.fct_messages"),
        cohorts=query(settings, "select * from marts.fct_campaign_deliverability_daily"),
    )
    second = _run(defs, instance)
    assert second.success, _failures(second)
    return SimpleNamespace(
        settings=settings,
        environ_before=environ_before,
        environ_after={name: os.environ.get(name) for name in dbt_variables},
        defs=defs,
        instance=instance,
        first=first,
        second=second,
        after_first=snapshot,
        window=send_window(settings.campaign("acme.pro_tips").config.schedule, module_clock.start),
    )


def _failures(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        str(event.step_failure_data.error) for event in result.all_events if event.is_step_failure
    )


def _expected_events(settings: Settings, ledger: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Sandbox events of every accepted message, from the sandbox's published rule."""
    accounts = {
        name: sandbox.SandboxSettings.model_validate(account.settings)
        for workspace in settings.config.workspaces.values()
        for name, account in workspace.provider_accounts.items()
    }
    return {
        row["message_key"]: sandbox.planned_events(
            row["message_key"], row["recipient"], accounts[row["provider_account"]]
        )
        for row in ledger
        if row["status"] == "accepted"
    }


def test_every_asset_materializes_with_lineage(pipeline: SimpleNamespace) -> None:
    materialized = {
        key.to_user_string()
        for key in pipeline.first.get_asset_materialization_events()
        and [e.asset_key for e in pipeline.first.get_asset_materialization_events()]
    }
    for key in (
        "segments/seg_acme_active_pro",
        "acme/pro_tips/audience",
        "acme/pro_tips/sends",
        "globex/launch_newsletter/sends",
        "mailers/send_ledger",
        "mailers/events",
        "mailers/suppressions",
        "marts/fct_deliverability_daily",
        "marts/fct_messages",
        "marts/dim_suppressions",
        "marts/fct_email_events",
        "marts/fct_send_audit",
    ):
        assert key in materialized
    graph = pipeline.defs.resolve_asset_graph()
    assert (
        dg.AssetKey(["segments", "seg_acme_active_pro"])
        in graph.get(audience_key(pipeline.settings.campaign("acme.pro_tips"))).parent_keys
    )


def test_dbt_learns_the_warehouse_for_its_steps_only(pipeline: SimpleNamespace) -> None:
    """dbt's profile variables are set for the dbt processes the runs start and put back
    after: a long-lived process (the Dagster daemon, ``mailers dev``) keeps none of one
    config's values for a run on another."""
    assert pipeline.environ_after == pipeline.environ_before
    assert pipeline.environ_before[DUCKDB_PATH_ENV] != str(pipeline.settings.warehouse_path)


def test_the_ledger_agrees_with_the_eml_files(pipeline: SimpleNamespace) -> None:
    accepted = [r for r in pipeline.after_first.ledger if r["status"] == "accepted"]
    keys = [r["message_key"] for r in accepted]
    assert len(keys) == len(set(keys)) > 300
    assert {p.stem for p in pipeline.after_first.emls} == set(keys)
    for row in accepted[:25]:
        path = pipeline.settings.outbox_dir / row["provider_account"] / f"{row['message_key']}.eml"
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert message["To"] == row["recipient"]
        assert message["Message-ID"] == f"<{row['provider_message_id']}>"


def test_suppressed_and_invalid_recipients_never_reach_a_provider(pipeline) -> None:
    settings = pipeline.settings
    skipped = [r for r in pipeline.after_first.ledger if r["status"] == "skipped"]
    assert {r["reason"] for r in skipped} >= {"suppressed", "invalid_address", "missing_address"}
    sent_to = {
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["To"].lower()
        for p in pipeline.after_first.emls
    }
    manual = {
        r["address"]
        for r in query(settings, "select address from mailers.suppressions where source = 'manual'")
    }
    assert manual and not sent_to & manual
    assert not sent_to & {(r["recipient"] or "").lower() for r in skipped}


def test_deliverability_mart_matches_the_sandbox_rule_exactly(pipeline) -> None:
    ledger = pipeline.after_first.ledger
    expected_events = _expected_events(pipeline.settings, ledger)
    account_of = {
        r["message_key"]: r["provider_account"] for r in ledger if r["status"] == "accepted"
    }
    expected: dict[str, Counter[str]] = {}
    for key, events in expected_events.items():
        tally = expected.setdefault(account_of[key], Counter())
        tally["sent"] += 1
        tally.update(EVENT_COLUMNS[name] for name in set(events))
    actual: dict[str, Counter[str]] = {}
    for row in pipeline.after_first.deliverability:
        tally = actual.setdefault(row["provider_account"], Counter())
        for column in ("sent", *EVENT_COLUMNS.values()):
            tally[column] += row[column] or 0
    assert set(actual) == {"acme_sandbox_a", "acme_sandbox_b", "globex_sandbox"}
    for account, tally in expected.items():
        assert +actual[account] == +tally, account
    # The lifecycle stream of acme is split 70/30 between its two accounts.
    share_a = expected["acme_sandbox_a"]["sent"] / (
        expected["acme_sandbox_a"]["sent"] + expected["acme_sandbox_b"]["sent"]
    )
    assert 0.55 < share_a < 0.85


def test_message_statuses_follow_ledger_and_events(pipeline) -> None:
    expected_events = _expected_events(pipeline.settings, pipeline.after_first.ledger)
    latest: dict[str, str] = {}
    for row in sorted(pipeline.after_first.ledger, key=lambda r: r["recorded_at"]):
        latest[row["message_key"]] = row["status"]
    expected = {}
    for key, status in latest.items():
        events = set(expected_events.get(key, []))
        if "complaint" in events:
            expected[key] = "complained"
        elif events & {"bounce", "soft_bounce"}:
            expected[key] = "bounced"
        elif "delivered" in events:
            expected[key] = "delivered"
        else:
            expected[key] = status
    actual = {row["message_key"]: row["status"] for row in pipeline.after_first.messages}
    assert actual == expected
    assert Counter(actual.values())["rejected"] > 0
    assert Counter(actual.values())["render_failed"] > 0


def test_suppressions_gain_hard_bounces_complaints_and_unsubscribes(pipeline) -> None:
    dim = query(pipeline.settings, "select * from marts.dim_suppressions")
    by_source = Counter(row["source"] for row in dim)
    assert by_source["manual"] > 0
    assert by_source["bounce"] > 0 and by_source["complaint"] > 0
    scopes = {(row["source"], row["scope"]) for row in dim}
    assert ("bounce", "workspace") in scopes and ("complaint", "workspace") in scopes
    hard = {
        row["recipient"].lower()
        for row in query(
            pipeline.settings,
            "select recipient from marts.fct_email_events "
            "where event_type = 'bounced' and bounce_class = 'hard'",
        )
    }
    assert hard == {row["address"] for row in dim if row["source"] == "bounce"}


def test_every_run_leaves_audit_records(pipeline) -> None:
    audit = query(pipeline.settings, "select * from mailers.audit_log order by recorded_at")
    first_run = [row for row in audit if row["run_id"] == pipeline.first.run_id]
    sends = {row["campaign"]: row for row in first_run if row["action"] == "send"}
    assert set(sends) == {"pro_tips", "launch_newsletter"}
    for campaign, row in sends.items():
        counts = json.loads(row["counts"])
        accepted = [
            r
            for r in pipeline.after_first.ledger
            if r["campaign"] == campaign and r["status"] == "accepted"
        ]
        assert counts["accepted"] == len(accepted)
        assert row["config_hash"] == pipeline.settings.config_hash
        assert row["actor"].startswith("dagster:")
    assert [row["action"] for row in first_run].count("ingest_events") == 1
    mart = query(pipeline.settings, "select * from marts.fct_send_audit")
    assert len(mart) == len(audit)


def test_a_second_materialization_sends_nothing_new(pipeline) -> None:
    settings = pipeline.settings
    assert {p: p.stat().st_mtime_ns for p in eml_files(settings)} == pipeline.after_first.emls
    ledger = query(settings, "select * from mailers.send_ledger")
    accepted = [r for r in ledger if r["status"] == "accepted"]
    assert len(accepted) == len(
        [r for r in pipeline.after_first.ledger if r["status"] == "accepted"]
    )
    second_sends = query(
        settings,
        f"select counts from mailers.audit_log where run_id = '{pipeline.second.run_id}' "
        "and action = 'send'",
    )
    assert all(json.loads(row["counts"]).get("accepted", 0) == 0 for row in second_sends)

    def by_key(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {row["deliverability_key"]: row for row in rows}

    assert by_key(query(settings, "select * from marts.fct_deliverability_daily")) == by_key(
        pipeline.after_first.deliverability
    )


def test_a_scheduled_tick_is_its_own_send_window(pipeline) -> None:
    settings = pipeline.settings
    tick = tick_after(settings.campaign("acme.pro_tips").config.schedule, pipeline.window)
    with clock.use_clock(clock.ShiftedClock(tick)):  # the schedule fires on its tick
        result = _run(
            pipeline.defs,
            pipeline.instance,
            job="send__acme__pro_tips",
            tags={"dagster/scheduled_execution_time": tick.isoformat()},
        )
    assert result.success, _failures(result)
    windows = Counter(
        row["send_window"]
        for row in query(
            settings,
            "select send_window from mailers.send_ledger "
            "where campaign = 'pro_tips' and status = 'accepted'",
        )
    )
    assert set(windows) == {pipeline.window, f"{tick:%Y-%m-%dT%H:%M:%SZ}"}
    assert windows[f"{tick:%Y-%m-%dT%H:%M:%SZ}"] > 0
    schedule = pipeline.defs.resolve_schedule_def("send__acme__pro_tips__schedule")
    assert schedule.cron_schedule == "0 9 * * 1"
    assert schedule.execution_timezone == "Europe/Berlin"


def test_the_sensor_requests_ingestion_only_for_new_landing_files(pipeline) -> None:
    sensor = pipeline.defs.resolve_sensor_def("landed_events")
    first = sensor(dg.build_sensor_context(instance=pipeline.instance))
    assert len(first.run_requests) == 1
    again = sensor(dg.build_sensor_context(instance=pipeline.instance, cursor=first.cursor))
    assert not again.run_requests


def test_a_segment_without_email_fails_naming_the_model(
    tmp_path: Path, seeded_warehouse: Path
) -> None:
    settings = load(write_config(tmp_path))
    settings.warehouse_path.parent.mkdir(parents=True)
    shutil.copyfile(seeded_warehouse, settings.warehouse_path)
    import duckdb

    with duckdb.connect(str(settings.warehouse_path)) as connection:
        connection.execute(
            "create or replace view segments.seg_acme_active_pro as "
            "select contact_id, first_name from crm.contacts"
        )
    defs = build_definitions(str(settings.path))
    with use_clock(FixedClock(IN_WINDOW)):
        result = defs.resolve_job_def("mailers_pipeline").execute_in_process(
            instance=dg.DagsterInstance.ephemeral(),
            asset_selection=[audience_key(settings.campaign("acme.pro_tips"))],
            raise_on_error=False,
            tags={SEND_WINDOW_TAG: "2026-11-23T08:00:00Z"},
        )
    assert not result.success
    message = _failures(result)
    assert "segment model 'seg_acme_active_pro' has no 'email' column" in message
    assert eml_files(settings) == []


def test_an_outage_fails_the_sends_step_and_its_retry_sends_each_message_once(
    tmp_path: Path, seeded_warehouse: Path
) -> None:
    def outage(config: dict[str, Any]) -> None:
        for account in config["workspaces"]["acme"]["provider_accounts"].values():
            account["settings"]["fault"] = "unavailable"

    settings = load(write_config(tmp_path, outage))
    settings.warehouse_path.parent.mkdir(parents=True)
    shutil.copyfile(seeded_warehouse, settings.warehouse_path)
    ref = settings.campaign("acme.pro_tips")
    selection = [audience_key(ref), dg.AssetKey(["acme", "pro_tips", "sends"])]
    tags = {SEND_WINDOW_TAG: "2026-11-23T08:00:00Z"}

    failed = build_definitions(str(settings.path)).resolve_job_def("mailers_pipeline")
    with use_clock(FixedClock(IN_WINDOW)):
        result = failed.execute_in_process(
            instance=dg.DagsterInstance.ephemeral(),
            asset_selection=selection,
            raise_on_error=False,
            tags=tags,
        )
    assert not result.success
    message = _failures(result)
    assert "messages of acme.pro_tips (window 2026-11-23T08:00:00Z) were not sent" in message
    assert "no provider account available" in message and "re-run window" in message
    audit = query(settings, "select counts from mailers.audit_log where action = 'send'")
    not_sent = json.loads(audit[0]["counts"])["not_sent"]
    assert not_sent > 20 and eml_files(settings) == []

    healed = load(write_config(tmp_path))  # the provider is back; same warehouse
    retry = build_definitions(str(healed.path)).resolve_job_def("mailers_pipeline")
    with use_clock(FixedClock(IN_WINDOW)):
        result = retry.execute_in_process(
            instance=dg.DagsterInstance.ephemeral(),
            asset_selection=selection,
            raise_on_error=False,
            tags=tags,
        )
    assert result.success, _failures(result)
    accepted = [
        row["message_key"]
        for row in query(
            healed, "select message_key from mailers.send_ledger where status = 'accepted'"
        )
    ]
    assert len(accepted) == len(set(accepted)) == len(eml_files(healed))
    rejected = query(
        healed, "select count(*) as n from mailers.send_ledger where status = 'rejected'"
    )[0]["n"]
    assert len(accepted) + rejected == not_sent


def test_suppression_why_explains_every_block_of_the_run(pipeline) -> None:
    """Every recipient the audience skipped as suppressed, and every address of the
    suppression mart, is explained by ``mailers suppression why`` for its scope."""
    from typer.testing import CliRunner

    from orchestration.cli import app

    settings = pipeline.settings
    blocked = {
        (r["recipient"].lower(), r["workspace"], r["stream"])
        for r in pipeline.after_first.ledger
        if r["status"] == "skipped" and r["reason"] == "suppressed"
    }
    assert len(blocked) >= 10
    runner = CliRunner()
    for address, workspace, stream in sorted(blocked):
        result = runner.invoke(
            app,
            ["suppression", "why", address, "--workspace", workspace, "--stream", stream,
             "--config", str(settings.path)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert f"{address} is suppressed in {workspace} on {stream} by" in result.output
        assert "blocked at " in result.output and " since " in result.output
    dim = query(settings, "select address, source from marts.dim_suppressions")
    for row in dim:
        result = runner.invoke(
            app, ["suppression", "why", row["address"], "--config", str(settings.path)]
        )
        assert result.exit_code == 0 and f"by {row['source']}" in result.output, result.output


COHORT_OUTCOMES = {
    "delivered": {"delivered"},
    "bounced": {"bounce", "soft_bounce"},
    "hard_bounced": {"bounce"},
    "complained": {"complaint"},
    "opened": {"open"},
    "clicked": {"click"},
    "unsubscribed": {"unsubscribe"},
}


def _expected_cohorts(pipeline: SimpleNamespace) -> dict[str, Counter[str]]:
    """Per campaign, each accepted message once, with the outcomes the sandbox rule plans."""
    ledger = pipeline.after_first.ledger
    campaign_of = {r["message_key"]: r["campaign"] for r in ledger}
    expected: dict[str, Counter[str]] = {}
    for key, events in _expected_events(pipeline.settings, ledger).items():
        tally = expected.setdefault(campaign_of[key], Counter())
        tally["sent"] += 1
        tally.update(column for column, names in COHORT_OUTCOMES.items() if names & set(events))
    return expected


def test_send_cohorts_count_each_message_once_with_its_outcomes(pipeline) -> None:
    rows = pipeline.after_first.cohorts
    actual: dict[str, Counter[str]] = {}
    for row in rows:
        tally = actual.setdefault(row["campaign"], Counter())
        for column in ("sent", *COHORT_OUTCOMES):
            tally[column] += row[column]
    expected = _expected_cohorts(pipeline)
    assert set(expected) == {"pro_tips", "launch_newsletter"}
    assert {campaign: +tally for campaign, tally in actual.items()} == expected
    cohort_messages: Counter[str] = Counter()
    for row in rows:
        cohort_messages[row["campaign"]] += row["messages"]
    assert cohort_messages == Counter(r["campaign"] for r in pipeline.after_first.messages)
    # the activity series counts the same acceptances, on the same days
    activity: Counter[str] = Counter()
    for row in pipeline.after_first.deliverability:
        activity[row["campaign"]] += row["sent"]
    accepted: Counter[str] = Counter()
    for row in rows:
        accepted[row["campaign"]] += row["accepted"]
    assert +activity == +accepted


def test_metricflow_answers_the_deliverability_metrics_from_the_cohorts(
    pipeline, tmp_path: Path
) -> None:
    """The semantic layer's metrics over the pipeline's marts, through `mf query`.

    MetricFlow names relations as the parse recorded them (on DuckDB the catalog is the
    file's stem) and reads ``target/`` of the project it runs in, so it runs in a copy of the
    project parsed against this warehouse, leaving the shared ``target/`` alone."""
    from orchestration.defs.dbt_profile import dbt_executable

    mf = Path(sys.executable).parent / "mf"
    if not mf.exists():
        pytest.skip("dbt-metricflow is not installed (the mf command)")
    project = tmp_path / "dbt_project"
    shutil.copytree(
        pipeline.settings.dbt_project_dir, project, ignore=shutil.ignore_patterns("target", "logs")
    )
    env = {**os.environ, "MAILERS_DUCKDB_PATH": str(pipeline.settings.warehouse_path)}
    for command in (
        [dbt_executable(), "parse", "--quiet"],
        [
            str(mf),
            "query",
            "--metrics",
            "sent,delivered,complained,delivery_rate",
            "--group-by",
            "cohort__campaign",
            "--csv",
            str(tmp_path / "metrics.csv"),
        ],
    ):
        completed = subprocess.run(
            command, cwd=project, env=env, capture_output=True, text=True, check=False, timeout=300
        )
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    with (tmp_path / "metrics.csv").open() as metrics:
        rows = {row["cohort__campaign"]: row for row in csv.DictReader(metrics)}
    # the marts as they are now (later tests of the module send more): the metrics are sums
    # of the cohorts, and the rate the ratio of the sums
    totals = query(
        pipeline.settings,
        "select campaign, sum(sent) as sent, sum(delivered) as delivered, "
        "sum(complained) as complained from marts.fct_campaign_deliverability_daily "
        "group by all",
    )
    assert {r["campaign"] for r in totals} == set(rows) == {"pro_tips", "launch_newsletter"}
    for total in totals:
        row = rows[total["campaign"]]
        assert (int(row["sent"]), int(row["delivered"]), int(row["complained"])) == (
            total["sent"],
            total["delivered"],
            total["complained"],
        )
        assert float(row["delivery_rate"]) == pytest.approx(
            int(total["delivered"]) / int(total["sent"])
        )
