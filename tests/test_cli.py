"""The `mailers` command line, run as a user runs it (a real process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from adapters.settings import load
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.audience import AudienceSpec, resolve
from mailers.config import Settings
from mailers.events import EVENTS_SCHEMA
from mailers.ledger import LedgerContext, LedgerEntry, LedgerStatus, LedgerWriter
from tests.conftest import REPO, eml_files, query, write_config


def mailers(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "mailers"
    return subprocess.run(
        [str(executable if executable.exists() else shutil.which("mailers")), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


SHIPPED_SECRETS = {
    "MAILERS_UNSUBSCRIBE_KEY": "s3cret-unsubscribe-value",
    "ACME_POSTMARK_SERVER_TOKEN": "s3cret-postmark-token",
    "ACME_POSTMARK_WEBHOOK_USER": "s3cret-user",
    "ACME_POSTMARK_WEBHOOK_PASSWORD": "s3cret-password",
    "ACME_MAILGUN_API_KEY": "s3cret-mailgun-key",
    "ACME_MAILGUN_WEBHOOK_SIGNING_KEY": "s3cret-mailgun-signing",
    "GLOBEX_SENDGRID_API_KEY": "s3cret-sendgrid-key",
    "GLOBEX_SENDGRID_WEBHOOK_PUBLIC_KEY": "s3cret-sendgrid-public",
    "GLOBEX_RESEND_API_KEY": "s3cret-resend-key",
    "GLOBEX_RESEND_WEBHOOK_SECRET": "s3cret-resend-secret",
}
"""Every variable the shipped mailers.yaml references, as a user would export them."""


def test_validate_accepts_the_shipped_config() -> None:
    result = mailers("validate", env=SHIPPED_SECRETS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout and "pro_tips" in result.stdout
    assert "template 'pro_tips' fits seg_acme_active_pro" in result.stdout
    assert "s3cret" not in result.stdout + result.stderr


def test_validate_lists_every_variable_and_every_missing_one_at_once() -> None:
    env = {**SHIPPED_SECRETS, "ACME_MAILGUN_API_KEY": "", "GLOBEX_SENDGRID_API_KEY": ""}
    result = mailers("validate", env=env)
    assert result.returncode == 1
    for name in SHIPPED_SECRETS:
        assert name in result.stdout
    assert "acme_mailgun.credentials.api_key" in result.stdout
    assert (
        "2 needed environment variables are not set: ACME_MAILGUN_API_KEY, "
        "GLOBEX_SENDGRID_API_KEY" in result.stderr
    )
    assert "mailers demo and mailers dev fill these with throwaway values" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr


def test_validate_finds_a_template_variable_the_segment_lacks(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    (templates / "pro_tips" / "subject.txt").write_text("{{ first_nmae }}, tips for {{ plan }}")

    def broken(config: dict) -> None:
        config["templates_dir"] = str(templates)

    config = write_config(tmp_path, broken)
    result = mailers("validate", "--config", str(config))
    assert result.returncode == 1
    assert "template 'pro_tips' fails seg_acme_active_pro" in result.stdout
    assert "from its dbt yml" in result.stdout
    assert (
        f"{config}: workspaces.acme.campaigns.pro_tips.template: template 'pro_tips' uses "
        "'first_nmae', which segment seg_acme_active_pro does not have" in result.stderr
    )
    assert "template 'globex_launch' fits seg_globex_newsletter" in result.stdout


def test_validate_prefers_the_columns_the_warehouse_has(
    tmp_path: Path, seeded_warehouse: Path
) -> None:
    import duckdb

    settings = load(write_config(tmp_path))
    settings.warehouse_path.parent.mkdir(parents=True)
    shutil.copyfile(seeded_warehouse, settings.warehouse_path)
    fits = mailers("validate", "--config", str(settings.path))
    assert fits.returncode == 0, fits.stdout + fits.stderr
    assert "fits seg_acme_active_pro (5 columns, from the warehouse)" in fits.stdout

    with duckdb.connect(str(settings.warehouse_path)) as connection:
        connection.execute(
            "create or replace view segments.seg_acme_active_pro as "
            "select email, first_name, country, contact_id from crm.contacts"
        )
    result = mailers("validate", "--config", str(settings.path))
    assert result.returncode == 1
    assert "uses 'plan', which segment seg_acme_active_pro does not have" in result.stderr


def test_validate_names_file_key_and_problem(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    document = yaml.safe_load(config.read_text())
    document["workspaces"]["acme"]["streams"]["lifecycle"]["routing"]["weights"]["nope"] = 1
    config.write_text(yaml.safe_dump(document))
    result = mailers("validate", "--config", str(config))
    assert result.returncode == 1
    assert (
        f"{config}: workspaces.acme.streams.lifecycle.routing: unknown provider account 'nope'"
        in result.stderr
    )

    document = yaml.safe_load(write_config(tmp_path).read_text())
    document["workspaces"]["acme"]["campaigns"]["pro_tips"]["segment"] = "seg_missing"
    config.write_text(yaml.safe_dump(document))
    result = mailers("validate", "--config", str(config))
    assert result.returncode == 1
    assert f"{config}: workspaces.acme.campaigns.pro_tips.segment: dbt segment model" in (
        result.stderr
    )
    assert "'seg_missing' does not exist" in result.stderr


WEDNESDAY = {"MAILERS_CLOCK": "2026-12-02T10:00:00Z"}
"""A clock for CLI runs: the current window of acme.pro_tips is 2026-11-30T08:00:00Z."""


def _project(tmp_path: Path, seeded_warehouse: Path) -> Settings:
    settings = load(write_config(tmp_path))
    settings.warehouse_path.parent.mkdir(parents=True)
    shutil.copyfile(seeded_warehouse, settings.warehouse_path)
    return settings


def test_plan_is_a_dry_run_with_counts_and_routes(tmp_path: Path, seeded_warehouse: Path) -> None:
    settings = _project(tmp_path, seeded_warehouse)
    result = mailers(
        "plan",
        "acme.pro_tips",
        "--config",
        str(settings.path),
        "--window",
        "2026-11-30T09:00:00+01:00",
        env=WEDNESDAY,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "nothing sent" in out
    assert "window 2026-11-30T08:00:00Z" in " ".join(out.split())
    assert "backfill" not in out
    for label in (
        "segment rows",
        "skipped suppressed",
        "skipped invalid address",
        "to send",
        "via acme_sandbox_a",
        "via acme_sandbox_b",
    ):
        assert label in out
    assert query(settings, "select count(*) as n from mailers.send_ledger") == [{"n": 0}]
    assert eml_files(settings) == []


@pytest.mark.parametrize(
    ("campaign", "window", "said"),
    [
        ("acme.pro_tips", "yesterday", "nearest ticks are 2026-11-30T08:00:00Z and"),
        ("acme.pro_tips", "2026-11-30T08:30:00Z", "nearest ticks are 2026-11-30T08:00:00Z and"),
        ("acme.pro_tips", "2026-12-07T08:00:00Z", "has not begun yet"),
        ("globex.launch_newsletter", "0 9 * * 1", "only send window is 'once'"),
    ],
)
def test_plan_refuses_a_window_the_campaign_does_not_have(
    tmp_path: Path, campaign: str, window: str, said: str
) -> None:
    config = write_config(tmp_path)
    result = mailers("plan", campaign, "--config", str(config), "--window", window, env=WEDNESDAY)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert f"cannot plan {campaign}" in message
    assert repr(window) in message or window in message
    assert said in message
    assert not (tmp_path / "data").exists()  # refused before the warehouse was opened


def test_plan_shows_a_past_window_is_a_backfill(tmp_path: Path, seeded_warehouse: Path) -> None:
    settings = _project(tmp_path, seeded_warehouse)
    result = mailers(
        "plan",
        "acme.pro_tips",
        "--config",
        str(settings.path),
        "--window",
        "2026-11-23T08:00:00",
        env=WEDNESDAY,
    )
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "window 2026-11-23T08:00:00Z" in out
    assert (
        "backfill: 2026-11-23T08:00:00Z is not the current window (2026-11-30T08:00:00Z); "
        "sending it needs the run tags mailers/send_window=2026-11-23T08:00:00Z "
        "mailers/backfill=true"
    ) in out


def test_plan_shows_in_doubt_messages_on_their_own_line(
    tmp_path: Path, seeded_warehouse: Path
) -> None:
    settings = _project(tmp_path, seeded_warehouse)
    window = "2026-11-30T08:00:00Z"
    ref = settings.campaign("acme.pro_tips")
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ledger = LedgerWriter(warehouse, LedgerContext.of(ref, window, "run-killed"))
        table = resolve(warehouse, AudienceSpec.of(ref, window), ledger.settled_keys_sql())
        keys = warehouse.query(
            f"select mailers_message_key as k from {table} "
            "where mailers_disposition = 'send' order by k limit 7"
        )["k"].to_pylist()
        ledger.record([LedgerEntry(k, LedgerStatus.DISPATCHING) for k in keys])
        ledger.record([LedgerEntry(k, LedgerStatus.UNKNOWN) for k in keys[:3]])
    result = mailers("plan", "acme.pro_tips", "--config", str(settings.path), env=WEDNESDAY)
    assert result.returncode == 0, result.stderr
    lines = {
        label.strip(): value.strip()
        for label, value in (
            line.strip("│┃ ").rsplit("│", 1) for line in result.stdout.splitlines() if "│" in line
        )
    }
    assert lines["in doubt (dispatching/unknown)"] == "7"
    assert "already settled" not in lines


def test_reconcile_settles_what_events_prove_and_reports_the_rest(
    tmp_path: Path, seeded_warehouse: Path
) -> None:
    settings = _project(tmp_path, seeded_warehouse)
    window = "2026-11-30T08:00:00Z"
    ref = settings.campaign("acme.pro_tips")
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ledger = LedgerWriter(warehouse, LedgerContext.of(ref, window, "run-killed"))
        entries = [
            LedgerEntry(key, status, provider_account="acme_sandbox_a")
            for status in (LedgerStatus.DISPATCHING, LedgerStatus.UNKNOWN)
            for key in ("proven", "silent")
        ]
        ledger.record(entries)
        row = {name: None for name in EVENTS_SCHEMA.names}
        row.update(
            event_id="e1",
            event_type="delivered",
            occurred_at=datetime(2026, 11, 30, 8, 1),
            provider="sandbox",
            provider_account="acme_sandbox_a",
            provider_message_id="sandbox-id-1",
            message_key="proven",
            raw_payload="{}",
            ingested_at=datetime(2026, 11, 30, 8, 2),
        )
        warehouse.append("mailers", "events", pa.Table.from_pylist([row], EVENTS_SCHEMA))

    result = mailers("reconcile", "acme.pro_tips", "--config", str(settings.path), env=WEDNESDAY)

    assert result.returncode == 1, result.stderr
    assert "1 message(s) stay in doubt" in " ".join(result.stdout.split())
    latest = {
        r["message_key"]: (r["status"], r["provider_message_id"])
        for r in query(
            settings,
            "select message_key, status, provider_message_id from mailers.send_ledger "
            "where run_id like 'reconcile-%'",
        )
    }
    assert latest == {"proven": ("accepted", "sandbox-id-1")}
    [audit] = query(
        settings, "select counts, actor from mailers.audit_log where action = 'reconcile'"
    )
    assert '"reconciled_from_events": 1' in audit["counts"]
    assert '"still_unknown": 1' in audit["counts"]
    assert audit["actor"].startswith("cli:reconcile:")


def test_plan_defaults_to_the_window_of_mailers_clock(
    tmp_path: Path, seeded_warehouse: Path
) -> None:
    settings = _project(tmp_path, seeded_warehouse)
    result = mailers(
        "plan",
        "acme.pro_tips",
        "--config",
        str(settings.path),
        env={"MAILERS_CLOCK": "2031-01-08T12:00:00Z"},  # a Wednesday; Mondays 09:00 Berlin
    )
    assert result.returncode == 0, result.stderr
    assert "2031-01-06T08:00:00Z" in result.stdout


def test_plan_explains_what_is_missing(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    unknown = mailers("plan", "acme.nope", "--config", str(config))
    assert unknown.returncode == 2
    assert "acme.pro_tips" in unknown.stderr
    unbuilt = mailers("plan", "acme.pro_tips", "--config", str(config))
    assert unbuilt.returncode == 1
    assert "segment model 'seg_acme_active_pro' is not built" in unbuilt.stderr


def _warm_up_globex_news(config: dict[str, Any]) -> None:
    ramp = {"start": 25, "growth": 1.4, "ceiling": 20_000}
    config["workspaces"]["globex"]["identities"]["globex_news"]["warmup"] = {"ramp": ramp}


def test_demo_runs_end_to_end_and_prints_the_marts(tmp_path: Path) -> None:
    config = write_config(tmp_path, _warm_up_globex_news)
    result = mailers(
        "demo",
        "--config",
        str(config),
        "--contacts",
        "300",
        cwd=tmp_path,
        env={"DAGSTER_HOME": str(tmp_path / "dagster"), "MAILERS_UNSUBSCRIBE_KEY": ""},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Deliverability" in result.stdout and "acme_sandbox_b" in result.stdout
    assert "one-off key" in result.stdout
    assert "Deferred by warm-up curves and caps" in result.stdout
    assert "identities.globex_news.warmup" in result.stdout
    settings = load(config)
    assert f"{len(eml_files(settings))} messages written as .eml files" in result.stdout
    completeness = next(
        line for line in result.stdout.splitlines() if line.startswith("completeness: ")
    )
    assert "accepted messages have a final event; 0 overdue" in completeness, completeness


def _governed(config: dict[str, Any]) -> None:
    acme = config["workspaces"]["acme"]
    acme["timezone"] = "Europe/Berlin"
    acme["streams"]["lifecycle"]["policy"] = {"daily_cap": 1000}
    acme["campaigns"]["pro_tips"]["policy"] = {"daily_cap": 500}
    acme["identities"]["acme_news"]["warmup"] = {
        "ramp": {"start": 200, "growth": 1.4, "ceiling": 20_000},
        "start_date": "2026-11-30",
    }


def test_policy_show_prints_each_value_with_where_it_came_from(tmp_path: Path) -> None:
    config = write_config(tmp_path, _governed)
    result = mailers("policy", "show", "acme.pro_tips", "--config", str(config), env=WEDNESDAY)
    assert result.returncode == 0, result.stderr
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert "Policy of acme.lifecycle.pro_tips (today 2026-12-02 in Europe/Berlin" in lines[0]
    for line in (
        "timezone Europe/Berlin workspaces.acme.timezone (inherited from workspace; "
        "today is 2026-12-02 there)",
        "daily_cap 500 workspaces.acme.campaigns.pro_tips.policy.daily_cap",
        "stream lifecycle allows 1000 workspaces.acme.streams.lifecycle.policy.daily_cap",
        "messages_per_second no limit default",
        "warmup.today 392 workspaces.acme.identities.acme_news.warmup (day 3 of the curve, "
        "2026-12-02 in Europe/Berlin)",
        "warmup.days_to_full 12 workspaces.acme.identities.acme_news.warmup",
        "breaker.consecutive_failures 5 default",
    ):
        assert line in lines, line

    as_json = mailers("policy", "show", "acme.lifecycle", "-c", str(config), "--json")
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert (document["scope"], document["campaign"]) == ("acme.lifecycle", None)
    cap = next(e for e in document["entries"] if e["name"] == "daily_cap")
    assert (cap["value"], cap["inherited_from"], cap["wider"]) == (1000, None, [])


def test_policy_show_names_an_unknown_scope_and_what_exists(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = mailers("policy", "show", "acme.outbound", "--config", str(config))
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "workspace 'acme' has no stream or campaign 'outbound'" in message
    assert "streams: lifecycle, transactional; campaigns: pro_tips" in message
