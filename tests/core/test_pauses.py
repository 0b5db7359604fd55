"""Pause state and control records: durable, visible to another reader at once, loaded once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.settings import load
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.audit import AUDIT_TABLE
from mailers.config import MailersConfig
from mailers.control import ControlJournal, load_control
from mailers.pauses import PAUSES_TABLE, PauseBoard, PauseError, PauseLevel, PauseScope
from mailers.tables import ensure_tables
from mailers.warehouse import MAILERS_SCHEMA

from .support import EXAMPLE_CONFIG


@pytest.fixture
def config() -> MailersConfig:
    return load(EXAMPLE_CONFIG, {"MAILERS_UNSUBSCRIBE_KEY": "k"}).config


def test_scope_parsing_names_what_is_wrong(config: MailersConfig) -> None:
    assert PauseScope.parse("acme", config) == PauseScope("acme", PauseLevel.WORKSPACE)
    assert PauseScope.parse("stream:acme.lifecycle", config).key == "stream:acme.lifecycle"
    assert PauseScope.parse("account:acme.acme_sandbox_b", config).name == "acme_sandbox_b"
    with pytest.raises(PauseError, match="no workspace 'nope'"):
        PauseScope.parse("nope", config)
    with pytest.raises(PauseError, match="unknown level 'region'"):
        PauseScope.parse("region:acme.eu", config)
    with pytest.raises(PauseError, match=r"has no campaign 'gone' \(configured: pro_tips\)"):
        PauseScope.parse("campaign:acme.gone", config)


def test_a_pause_is_seen_by_another_reader_and_only_a_person_resumes_an_automatic_one(
    tmp_path: Path, config: MailersConfig
) -> None:
    writer, reader = PauseBoard(tmp_path), PauseBoard(tmp_path)
    assert reader.holding("acme", stream="lifecycle") is None
    scope = PauseScope.parse("stream:acme.lifecycle", config)
    pause, new = writer.pause(
        scope, actor="rule", reason="bounce rate", config_hash="h", automatic=True
    )
    assert new
    assert writer.pause(scope, actor="bob", reason="again", config_hash="h") == (pause, False)
    held = reader.holding("acme", stream="lifecycle", campaign="pro_tips")
    assert held is not None and held.automatic and held.actor == "rule"
    assert reader.holding("acme", stream="transactional") is None
    assert reader.holding("globex", stream="lifecycle") is None
    with pytest.raises(PauseError, match="only by a person"):
        writer.resume(scope, actor="sensor", reason="ok", config_hash="h", by_person=False)
    with pytest.raises(PauseError, match="needs a reason"):
        writer.resume(scope, actor="alice", reason=" ", config_hash="h", by_person=True)
    writer.resume(scope, actor="alice", reason="list cleaned", config_hash="h", by_person=True)
    assert reader.holding("acme", stream="lifecycle") is None
    with pytest.raises(PauseError, match="is not paused"):
        writer.resume(scope, actor="alice", reason="x", config_hash="h", by_person=True)


def test_control_records_load_once_with_audit_and_state_is_rebuilt_from_the_warehouse(
    tmp_path: Path, config: MailersConfig
) -> None:
    board = PauseBoard(tmp_path / "data")
    account = PauseScope.parse("account:acme.acme_sandbox_a", config)
    workspace = PauseScope.parse("globex", config)
    board.pause(account, actor="alice", reason="provider incident", config_hash="h")
    board.pause(workspace, actor="bob", reason="brand review", config_hash="h")
    board.resume(account, actor="alice", reason="incident over", config_hash="h", by_person=True)
    journal = ControlJournal(tmp_path / "data")
    assert len(journal.pending()) == 3
    with DuckDBWarehouse(tmp_path / "w.duckdb") as warehouse:
        ensure_tables(warehouse)
        assert load_control(warehouse, journal) == 3
        assert journal.pending() == [] and load_control(warehouse, journal) == 0
        rows = warehouse.query(
            f"select action, scope, actor from {warehouse.relation(MAILERS_SCHEMA, PAUSES_TABLE)}"
            " order by recorded_at"
        ).to_pylist()
        assert [(r["action"], r["scope"]) for r in rows] == [
            ("pause", "account:acme.acme_sandbox_a"),
            ("pause", "workspace:globex"),
            ("resume", "account:acme.acme_sandbox_a"),
        ]
        audit = warehouse.query(
            f"select action, reason, before, after "
            f"from {warehouse.relation(MAILERS_SCHEMA, AUDIT_TABLE)}"
        ).to_pylist()
        assert sorted(a["action"] for a in audit) == ["pause", "pause", "resume"]
        assert all(a["reason"] for a in audit)
        assert {json.loads(a["after"])["paused"] for a in audit} == {True, False}
        # A new data directory beside the same warehouse learns what is paused.
        fresh = PauseBoard(tmp_path / "elsewhere")
        fresh.restore(warehouse)
        assert list(fresh.active()) == ["workspace:globex"]
