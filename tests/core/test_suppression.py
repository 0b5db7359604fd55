"""Suppression with provenance: every source names who or what added it, removals are rows
that the audience honours, imports are all or nothing, pending adds block a running send."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.providers.registry import event_parser
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers import clock
from mailers.audience import AudienceSpec, resolve
from mailers.audit import AUDIT_TABLE
from mailers.control import ControlJournal, load_control
from mailers.ingest import ingest
from mailers.ledger import LedgerContext, LedgerWriter
from mailers.suppression import SuppressionError, SuppressionSource, SuppressionTarget
from mailers.suppression_blocks import PendingBlocks
from mailers.suppression_entries import (
    Entry,
    check_removal,
    entries,
    pending_entries,
    request_add,
    request_remove,
)
from mailers.suppression_import import import_csv, import_relation
from mailers.tables import ensure_tables
from mailers.warehouse import MAILERS_SCHEMA

from .test_ingest import ACCOUNT, event, land

ACME = SuppressionTarget.parse("workspace:acme")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[DuckDBWarehouse]:
    with DuckDBWarehouse(tmp_path / "warehouse.duckdb") as wh:
        ensure_tables(wh)
        yield wh


@pytest.fixture
def journal(tmp_path: Path) -> ControlJournal:
    return ControlJournal(tmp_path / "data")


def feedback(warehouse: DuckDBWarehouse, landing: Path, name: str, *events: dict[str, Any]) -> None:
    land(landing, name, *events)
    ingest(warehouse, landing, event_parser)


def at(payload: dict[str, Any], moment: datetime) -> dict[str, Any]:
    """The payload, occurring at ``moment`` (naive UTC)."""
    return {**payload, "timestamp": moment.isoformat() + "+00:00"}


def blocked(warehouse: DuckDBWarehouse, workspace: str, stream: str, *addresses: str) -> set[str]:
    """Which ``addresses`` the audience query skips as suppressed for ``workspace``/``stream``."""
    warehouse.execute("create schema if not exists segments")
    warehouse.execute("create or replace table segments.seg_check (email varchar)")
    warehouse.connection.executemany(
        "insert into segments.seg_check values (?)", [[a] for a in addresses]
    )
    spec = AudienceSpec(workspace, "check", stream, "once", "seg_check")
    settled = LedgerWriter(
        warehouse, LedgerContext(workspace, stream, "check", "once", "r")
    ).settled_keys_sql()
    table = resolve(warehouse, spec, settled)
    rows = warehouse.query(
        f"select email from {table} where mailers_skip_reason = 'suppressed'"
    ).to_pylist()
    return {row["email"] for row in rows}


def audit(warehouse: DuckDBWarehouse, action: str) -> list[dict[str, Any]]:
    return warehouse.query(
        f"select * from {warehouse.relation(MAILERS_SCHEMA, AUDIT_TABLE)} where action = ? "
        "order by recorded_at",
        [action],
    ).to_pylist()


def only(found: list[Entry]) -> Entry:
    assert len(found) == 1, found
    return found[0]


def test_feedback_entries_name_their_event_account_and_time_with_workspace_and_stream_scopes(
    warehouse: DuckDBWarehouse, tmp_path: Path, fixed_clock: clock.FixedClock
) -> None:
    occurred = clock.utcnow() - timedelta(hours=3)
    feedback(
        warehouse,
        tmp_path / "landing",
        "1.jsonl",
        at(event("sbx-b", "bounce", "gone@example.com", detail="550 5.1.1"), occurred),
        at(event("sbx-c", "complaint", "angry@example.com"), occurred),
        at(event("sbx-u", "unsubscribe", "bye@example.com"), occurred),
    )

    for address, source, scope, event_id in (
        ("gone@example.com", SuppressionSource.BOUNCE, "workspace:acme", "sbx-b"),
        ("angry@example.com", SuppressionSource.COMPLAINT, "workspace:acme", "sbx-c"),
        ("bye@example.com", SuppressionSource.UNSUBSCRIBE, "stream:acme.lifecycle", "sbx-u"),
    ):
        entry = only(entries(warehouse, address))
        assert (entry.source, entry.target.key, entry.event_id) == (source, scope, event_id)
        assert (entry.provider_account, entry.actor) == (ACCOUNT, "ingest")
        assert entry.origin == f"event:{event_id}"
        assert entry.since == occurred
        assert entry.provenance() == f"event {event_id} via {ACCOUNT}"
        assert entry.active

    everyone = ("gone@example.com", "angry@example.com", "bye@example.com", "ok@example.com")
    # A hard bounce or complaint blocks every stream of its workspace, and no other workspace.
    assert blocked(warehouse, "acme", "outbound", *everyone) == {
        "gone@example.com",
        "angry@example.com",
    }
    assert blocked(warehouse, "acme", "transactional", *everyone) == {
        "gone@example.com",
        "angry@example.com",
    }
    assert blocked(warehouse, "globex", "lifecycle", *everyone) == set()
    # A lifecycle unsubscribe blocks lifecycle only: never a receipt on transactional.
    assert "bye@example.com" in blocked(warehouse, "acme", "lifecycle", *everyone)


def test_manual_add_is_a_control_record_loaded_exactly_once_with_an_audit_record(
    warehouse: DuckDBWarehouse, journal: ControlJournal, fixed_clock: clock.FixedClock
) -> None:
    target = SuppressionTarget.parse("global")
    record = request_add(
        journal,
        " Ann@Example.COM ",
        target,
        reason="asked by phone",
        actor="alice",
        config_hash="h",
    )
    assert record.body["address"] == "ann@example.com"
    assert only(pending_entries(journal, "ann@example.com")).pending

    assert load_control(warehouse, journal) == 1
    # A crash after the load but before the archive leaves the file: it loads nothing twice.
    loaded = next((journal.loaded_dir).rglob("*.json"))
    (journal.pending_dir / loaded.name).write_bytes(loaded.read_bytes())
    assert load_control(warehouse, journal) == 1

    entry = only(entries(warehouse, "ann@example.com"))
    assert (entry.source, entry.target, entry.actor, entry.reason) == (
        SuppressionSource.MANUAL,
        target,
        "alice",
        "asked by phone",
    )
    assert entry.since == record.recorded_at
    assert entry.origin == f"control:{record.control_id}"
    assert blocked(warehouse, "globex", "transactional", "ann@example.com") == {"ann@example.com"}
    (row,) = audit(warehouse, "suppression_add")
    assert (row["actor"], row["workspace"]) == ("alice", None)
    assert (row["scope"], row["reason"]) == ("global", "asked by phone")

    with pytest.raises(SuppressionError, match="needs a reason"):
        request_add(journal, "ann@example.com", target, reason=" ", actor="a", config_hash="h")
    with pytest.raises(SuppressionError, match="'not-an-address' is not a valid email"):
        request_add(journal, "not-an-address", target, reason="r", actor="a", config_hash="h")


def test_removal_is_a_row_with_actor_and_reason_that_the_audience_honours(
    warehouse: DuckDBWarehouse, journal: ControlJournal, fixed_clock: clock.FixedClock
) -> None:
    request_add(journal, "ann@example.com", ACME, reason="support", actor="alice", config_hash="h")
    load_control(warehouse, journal)
    assert blocked(warehouse, "acme", "lifecycle", "ann@example.com") == {"ann@example.com"}

    with pytest.raises(
        SuppressionError, match=r"no active suppression at scope global .*workspace:acme"
    ):
        check_removal(
            entries(warehouse, "ann@example.com"),
            "ann@example.com",
            SuppressionTarget.parse("global"),
            override_complaint=False,
        )
    with pytest.raises(SuppressionError, match="needs a reason"):
        request_remove(journal, "ann@example.com", ACME, reason="", actor="bob", config_hash="h")
    fixed_clock.advance(60)
    lifted = check_removal(
        entries(warehouse, "ann@example.com"), "ann@example.com", ACME, override_complaint=False
    )
    assert [e.source for e in lifted] == [SuppressionSource.MANUAL]
    removal = request_remove(
        journal, "ann@example.com", ACME, reason="re-subscribed", actor="bob", config_hash="h"
    )
    load_control(warehouse, journal)

    assert blocked(warehouse, "acme", "lifecycle", "ann@example.com") == set()
    entry = only(entries(warehouse, "ann@example.com"))
    assert not entry.active and entry.lift is not None
    assert (entry.lift.actor, entry.lift.reason, entry.lift.removal_id) == (
        "bob",
        "re-subscribed",
        removal.control_id,
    )
    (row,) = audit(warehouse, "suppression_remove")
    assert row["actor"] == "bob" and row["workspace"] == "acme"
    assert row["reason"] == "re-subscribed"
    rows = warehouse.query("select action from mailers.suppressions order by created_at")
    assert rows["action"].to_pylist() == ["add", "remove"]  # appended, nothing updated


def test_a_complaint_is_lifted_only_with_an_explicit_override(
    warehouse: DuckDBWarehouse,
    journal: ControlJournal,
    tmp_path: Path,
    fixed_clock: clock.FixedClock,
) -> None:
    complained = clock.utcnow() - timedelta(days=1)
    feedback(
        warehouse,
        tmp_path / "landing",
        "1.jsonl",
        at(event("sbx-c", "complaint", "angry@example.com"), complained),
    )
    complaint = only(entries(warehouse, "angry@example.com"))
    with pytest.raises(SuppressionError) as refused:
        check_removal([complaint], "angry@example.com", ACME, override_complaint=False)
    message = str(refused.value)
    assert f"entry {complaint.suppression_id}" in message and "event sbx-c" in message
    assert "--override-complaint" in message

    # A removal recorded unchecked (the warehouse was locked) still does not lift it.
    request_remove(journal, "angry@example.com", ACME, reason="oops", actor="bob", config_hash="h")
    load_control(warehouse, journal)
    assert blocked(warehouse, "acme", "lifecycle", "angry@example.com") == {"angry@example.com"}

    fixed_clock.advance(60)
    request_remove(
        journal,
        "angry@example.com",
        ACME,
        reason="complained by mistake, confirmed in writing",
        actor="carol",
        config_hash="h",
        override_complaint=True,
    )
    load_control(warehouse, journal)
    assert blocked(warehouse, "acme", "lifecycle", "angry@example.com") == set()
    lift = only(entries(warehouse, "angry@example.com")).lift
    assert lift is not None and lift.actor == "carol"
    assert '"override_complaint": true' in audit(warehouse, "suppression_remove")[-1]["detail"]


def test_a_new_bounce_after_a_removal_suppresses_again(
    warehouse: DuckDBWarehouse,
    journal: ControlJournal,
    tmp_path: Path,
    fixed_clock: clock.FixedClock,
) -> None:
    landing = tmp_path / "landing"
    first = clock.utcnow() - timedelta(days=2)
    feedback(warehouse, landing, "1.jsonl", at(event("sbx-1", "bounce", "gone@example.com"), first))
    request_remove(
        journal, "gone@example.com", ACME, reason="mailbox fixed", actor="bob", config_hash="h"
    )
    load_control(warehouse, journal)
    assert blocked(warehouse, "acme", "lifecycle", "gone@example.com") == set()

    removed_at = warehouse.query(
        "select created_at from mailers.suppressions where action = 'remove'"
    )["created_at"][0].as_py()
    again = removed_at + timedelta(minutes=5)
    feedback(warehouse, landing, "2.jsonl", at(event("sbx-2", "bounce", "gone@example.com"), again))

    assert blocked(warehouse, "acme", "transactional", "gone@example.com") == {"gone@example.com"}
    old, new = entries(warehouse, "gone@example.com")
    assert (old.event_id, old.active, new.event_id, new.active) == ("sbx-1", False, "sbx-2", True)


def test_csv_import_names_its_file_and_line_and_is_all_or_nothing(
    warehouse: DuckDBWarehouse, tmp_path: Path, fixed_clock: clock.FixedClock
) -> None:
    good = tmp_path / "list.csv"
    good.write_text(
        "Email,reason\nA@Example.com,\n b@example.com ,own reason\n\na@example.com,dup\n"
    )
    target = SuppressionTarget.parse("stream:acme.outbound")

    report = import_csv(
        warehouse, good, target, reason="old ESP export", actor="dana", config_hash="h"
    )

    assert (report.rows, report.added, report.duplicates, report.blank) == (3, 2, 1, 1)
    a = only(entries(warehouse, "a@example.com"))
    assert (a.source, a.target, a.actor, a.reason) == (
        SuppressionSource.IMPORT,
        target,
        "dana",
        "old ESP export",
    )
    assert a.origin == f"file:{good.resolve()}:2"
    assert only(entries(warehouse, "b@example.com")).reason == "own reason"
    (row,) = audit(warehouse, "suppression_import")
    assert row["actor"] == "dana" and '"added": 2' in row["counts"]
    assert str(good.resolve()) in row["detail"]
    again = import_csv(warehouse, good, target, reason="again", actor="dana", config_hash="h")
    assert (again.added, again.already_suppressed) == (0, 2)

    bad = tmp_path / "bad.csv"
    bad.write_text("email\nc@example.com\nnot an address\nd@example.com\n\n@nowhere\n")
    with pytest.raises(SuppressionError) as refused:
        import_csv(warehouse, bad, target, reason="r", actor="dana", config_hash="h")
    message = str(refused.value)
    assert "2 bad rows" in message and "nothing was imported" in message
    assert "line 3: invalid address 'not an address'" in message
    assert "line 6: invalid address '@nowhere'" in message
    assert entries(warehouse, "c@example.com") == []

    ragged = tmp_path / "ragged.csv"
    ragged.write_text("email,reason\nc@example.com,x\nd@example.com,x,extra\n")
    with pytest.raises(SuppressionError, match="line 3: 3 fields where the header has 2"):
        import_csv(warehouse, ragged, target, reason="r", actor="dana", config_hash="h")
    headless = tmp_path / "headless.csv"
    headless.write_text("name\nc@example.com\n")
    with pytest.raises(SuppressionError, match=r"headless.csv:1: the header has no address column"):
        import_csv(warehouse, headless, target, reason="r", actor="dana", config_hash="h")
    assert entries(warehouse, "c@example.com") == []


def test_relation_import_names_the_relation_and_refuses_invalid_rows(
    warehouse: DuckDBWarehouse, fixed_clock: clock.FixedClock
) -> None:
    warehouse.execute("create schema crm_exports")
    warehouse.execute("create table crm_exports.do_not_mail (email varchar, note varchar)")
    warehouse.execute(
        "insert into crm_exports.do_not_mail values ('x@example.com', 'a'), ('y@example.com', 'b')"
    )
    global_ = SuppressionTarget.parse("global")

    report = import_relation(
        warehouse, "crm_exports.do_not_mail", global_, reason="CRM", actor="erin", config_hash="h"
    )

    assert report.added == 2
    x = only(entries(warehouse, "x@example.com"))
    assert (x.origin, x.actor, x.target) == ("relation:crm_exports.do_not_mail", "erin", global_)
    assert x.provenance() == "relation:crm_exports.do_not_mail by erin"
    warehouse.execute("insert into crm_exports.do_not_mail values ('broken@', 'c'), (null, 'd')")
    with pytest.raises(SuppressionError) as refused:
        import_relation(
            warehouse,
            "crm_exports.do_not_mail",
            global_,
            reason="CRM",
            actor="erin",
            config_hash="h",
        )
    assert "invalid address 'broken@'" in str(refused.value) and "no address" in str(refused.value)
    assert len(warehouse.query("select * from mailers.suppressions")) == 2
    with pytest.raises(SuppressionError, match=r"no relation 'crm_exports\.missing'"):
        import_relation(
            warehouse, "crm_exports.missing", global_, reason="CRM", actor="erin", config_hash="h"
        )


def test_pending_adds_block_a_batch_and_pending_removals_do_not_unblock(
    journal: ControlJournal, fixed_clock: clock.FixedClock
) -> None:
    blocks = PendingBlocks(journal)
    batch = ["Ann@Example.com", "bob@example.com", "cy@example.com"]
    assert blocks.blocked("acme", "lifecycle", batch) == set()

    lifecycle = SuppressionTarget.parse("stream:acme.lifecycle")
    request_add(journal, "ann@example.com", lifecycle, reason="r", actor="a", config_hash="h")
    request_add(journal, "bob@example.com", ACME, reason="r", actor="a", config_hash="h")
    request_remove(journal, "bob@example.com", ACME, reason="r", actor="a", config_hash="h")

    assert blocks.blocked("acme", "lifecycle", batch) == {"Ann@Example.com", "bob@example.com"}
    assert blocks.blocked("acme", "transactional", batch) == {"bob@example.com"}
    assert blocks.blocked("globex", "lifecycle", batch) == set()
    request_add(
        journal,
        "cy@example.com",
        SuppressionTarget.parse("global"),
        reason="r",
        actor="a",
        config_hash="h",
    )
    assert blocks.blocked("globex", "lifecycle", batch) == {"cy@example.com"}
    reasons = blocks.reasons("acme", "transactional", batch)
    assert reasons.keys() == {"bob@example.com", "cy@example.com"}
    assert reasons["cy@example.com"].startswith(
        "suppressed at global by a (pending control record "
    )


def test_scopes_are_checked_against_the_config() -> None:
    from adapters.settings import load

    from .support import EXAMPLE_CONFIG

    config = load(EXAMPLE_CONFIG, {"MAILERS_UNSUBSCRIBE_KEY": "k"}).config
    assert SuppressionTarget.parse("stream:acme.lifecycle", config).key == "stream:acme.lifecycle"
    with pytest.raises(SuppressionError, match="no workspace 'nope'"):
        SuppressionTarget.parse("workspace:nope", config)
    with pytest.raises(SuppressionError, match="has no stream 'news'"):
        SuppressionTarget.parse("stream:acme.news", config)
    with pytest.raises(SuppressionError, match="unknown level 'brand'"):
        SuppressionTarget.parse("brand:acme", config)
    with pytest.raises(SuppressionError, match=r"write it as stream:W\.S"):
        SuppressionTarget.parse("stream:acme", config)


def test_a_provider_reported_one_click_unsubscribe_names_its_event_and_spares_transactional(
    warehouse: DuckDBWarehouse, tmp_path: Path
) -> None:
    # Mailgun hosts the List-Unsubscribe one-click endpoint and reports it as "unsubscribed"
    # (the recorded webhook body; see tests/fixtures/mailgun/README.md).
    body = json.loads((FIXTURES / "mailgun" / "unsubscribed.json").read_text())
    landing = tmp_path / "landing"
    directory = landing / "mailgun" / "acme_mailgun"
    directory.mkdir(parents=True)
    (directory / "1.jsonl").write_text(json.dumps(body) + "\n")

    ingest(warehouse, landing, event_parser)

    entry = only(entries(warehouse, "alice@example.com"))
    (stored,) = warehouse.query("select event_id from mailers.events").to_pylist()
    assert (entry.source, entry.target.key) == (
        SuppressionSource.UNSUBSCRIBE,
        "stream:acme.lifecycle",
    )
    assert (entry.event_id, entry.provider_account) == (stored["event_id"], "acme_mailgun")
    assert entry.provenance() == f"event {stored['event_id']} via acme_mailgun"
    assert blocked(warehouse, "acme", "lifecycle", "alice@example.com") == {"alice@example.com"}
    assert blocked(warehouse, "acme", "transactional", "alice@example.com") == set()


def test_dbt_accepts_every_audit_action() -> None:
    from mailers.audit import AuditAction

    from .support import DBT_PROJECT

    for path in ("staging/mailers/stg_mailers__audit_log.yml", "marts/fct_send_audit.yml"):
        (model,) = yaml.safe_load((DBT_PROJECT / "models" / path).read_text())["models"]
        (action,) = [c for c in model["columns"] if c["name"] == "action"]
        (accepted,) = [t["accepted_values"] for t in action["data_tests"] if "accepted_values" in t]
        assert set(accepted["arguments"]["values"]) == {str(a) for a in AuditAction}, path
