"""The identity change log on a real DuckDB file: a snapshot of the shipped config's
identities, accounts and routes, compared with the last recorded one at each run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.settings import load
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.audit_verify import verify_chains
from mailers.clock import FixedClock
from mailers.config import Settings
from mailers.identity_changes import ChangeKind, IdentityChange, record_identity_changes
from mailers.tables import ensure_tables
from tests.conftest import REPO

SECRET_VALUE = "s3cret-postmark-token-value"


def shipped(root: Path, mutate: Callable[[dict[str, Any]], None] | None = None) -> Settings:
    """The shipped mailers.yaml (real providers, credential references) under ``root``."""
    config = yaml.safe_load((REPO / "mailers.yaml").read_text())
    config["data_dir"] = str(root / "data")
    config["dbt_project_dir"] = str(REPO / "dbt_project")
    config["templates_dir"] = str(REPO / "templates")
    if mutate:
        mutate(config)
    path = root / "mailers.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return load(path)


def run(settings: Settings, run_id: str) -> list[IdentityChange]:
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
        return record_identity_changes(warehouse, settings, actor="test", run_id=run_id)


def rows(settings: Settings, sql: str) -> list[dict[str, Any]]:
    with DuckDBWarehouse(settings.warehouse_path, read_only=True) as warehouse:
        return warehouse.query(sql).to_pylist()


def rotate(config: dict[str, Any]) -> None:
    acme = config["workspaces"]["acme"]
    acme["provider_accounts"]["acme_postmark"]["credentials"]["server_token"] = {
        "env": "ACME_POSTMARK_TOKEN_V2"
    }
    acme["identities"]["acme_news"]["from_address"] = "news@mail.acme.test"


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch, fixed_clock: FixedClock) -> None:
    monkeypatch.setenv("ACME_POSTMARK_SERVER_TOKEN", SECRET_VALUE)
    monkeypatch.setenv("ACME_POSTMARK_TOKEN_V2", SECRET_VALUE + "-v2")


def test_the_first_snapshot_is_the_baseline_and_an_unchanged_config_adds_nothing(
    tmp_path: Path,
) -> None:
    settings = shipped(tmp_path)

    first = run(settings, "run-1")
    again = run(settings, "run-2")

    assert first and {c.change for c in first} == {ChangeKind.BASELINE}
    subjects = {(c.workspace, str(c.subject_kind), c.subject_name) for c in first}
    assert ("acme", "identity", "acme_news") in subjects
    assert ("globex", "account", "globex_resend") in subjects
    assert ("acme", "stream", "lifecycle") in subjects
    fields = {(c.subject_name, c.field): c.after for c in first}
    assert fields[("acme_postmark", "credential.server_token")] == '"ACME_POSTMARK_SERVER_TOKEN"'
    assert fields[("acme_news", "sending_domain")] == '"news.acme.test"'
    assert again == []
    assert rows(settings, "select count(*) as n from mailers.identity_changes")[0]["n"] == len(
        first
    )


def test_a_change_made_only_in_the_config_file_is_recorded_with_before_and_after(
    tmp_path: Path,
) -> None:
    run(shipped(tmp_path), "run-1")

    changes = run(shipped(tmp_path, rotate), "run-2")

    assert sorted((c.subject_name, c.field, c.change, c.before, c.after) for c in changes) == [
        ("acme_news", "from_address", "changed", '"news@news.acme.test"', '"news@mail.acme.test"'),
        ("acme_news", "sending_domain", "changed", '"news.acme.test"', '"mail.acme.test"'),
        (
            "acme_postmark",
            "credential.server_token",
            "changed",
            '"ACME_POSTMARK_SERVER_TOKEN"',
            '"ACME_POSTMARK_TOKEN_V2"',
        ),
    ]
    settings = shipped(tmp_path, rotate)
    audit = rows(
        settings,
        "select scope, before, after, run_id from mailers.audit_log "
        "where action = 'identity_change' and run_id = 'run-2' order by scope",
    )
    assert [a["scope"] for a in audit] == ["account:acme.acme_postmark", "identity:acme.acme_news"]
    assert json.loads(audit[1]["after"]) == {
        "from_address": "news@mail.acme.test",
        "sending_domain": "mail.acme.test",
    }
    with DuckDBWarehouse(settings.warehouse_path, read_only=True) as warehouse:
        assert all(r.ok for r in verify_chains(warehouse))
    assert run(settings, "run-3") == []
    everything = json.dumps(
        rows(settings, "select * from mailers.identity_changes")
        + rows(settings, "select * from mailers.audit_log"),
        default=str,
    )
    assert SECRET_VALUE not in everything


def test_removed_and_added_accounts_and_routes_are_recorded(tmp_path: Path) -> None:
    run(shipped(tmp_path), "run-1")

    def reroute(config: dict[str, Any]) -> None:
        globex = config["workspaces"]["globex"]
        globex["streams"]["lifecycle"]["routing"] = {
            "strategy": "failover",
            "accounts": ["globex_sendgrid"],
        }
        for identity in globex["identities"].values():
            identity["provider_accounts"] = ["globex_sendgrid"]
        del globex["provider_accounts"]["globex_resend"]

    changes = run(shipped(tmp_path, reroute), "run-2")

    kinds = {(c.subject_name, c.field): c.change for c in changes}
    assert kinds[("globex_resend", "kind")] == ChangeKind.REMOVED
    assert kinds[("globex_resend", "credential.api_key")] == ChangeKind.REMOVED
    assert kinds[("lifecycle", "routing")] == ChangeKind.CHANGED
    assert kinds[("globex_news", "provider_accounts")] == ChangeKind.CHANGED
    assert all(c.workspace == "globex" for c in changes)
    removed = next(c for c in changes if c.field == "kind")
    assert (removed.before, removed.after) == ('"resend"', None)

    back = run(shipped(tmp_path), "run-3")

    assert {(c.subject_name, c.field): c.change for c in back}[
        ("globex_resend", "kind")
    ] == ChangeKind.ADDED
