"""Event ingestion: landed sandbox files in, canonical events and suppressions out (on
each warehouse engine)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from adapters.providers.registry import event_parser
from adapters.warehouses import OpenWarehouse, connect
from mailers.config import WarehouseConfig
from mailers.errors import WarehouseError
from mailers.ingest import IngestReport, ingest, landed_files
from mailers.keys import message_key
from mailers.ledger import LedgerContext, LedgerEntry, LedgerStatus, LedgerWriter
from mailers.tables import LANDED_FILES_TABLE, ensure_tables
from mailers.warehouse import Warehouse

ACCOUNT = "acme_sandbox_a"


@pytest.fixture
def warehouse(tmp_path: Path, engine_config: WarehouseConfig) -> Iterator[OpenWarehouse]:
    with connect(engine_config, tmp_path) as wh:
        ensure_tables(wh)
        yield wh


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    return tmp_path / "landing"


def key_for(recipient: str) -> str:
    return message_key("acme", "pro_tips", recipient, "once")


def event(
    event_id: str,
    name: str,
    recipient: str | None = "ann@example.com",
    *,
    metadata: dict[str, str] | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    """A payload in the sandbox's landing format (see sandbox.events.event_payloads)."""
    if metadata is None:
        metadata = {
            "mailers_message_key": key_for(recipient or ""),
            "mailers_workspace": "acme",
            "mailers_stream": "lifecycle",
            "mailers_campaign": "pro_tips",
        }
    payload: dict[str, Any] = {
        "id": event_id,
        "event": name,
        "timestamp": "2026-11-23T08:00:01.000001+00:00",
        "message_id": f"{event_id}-msg@sandbox.mailers.test",
        "sending_domain": "news.acme.test",
        "metadata": metadata,
        "detail": detail,
        "url": "https://example.test/landing" if name == "click" else None,
    }
    if recipient is not None:
        payload["recipient"] = recipient
    return payload


def land(landing: Path, name: str, *lines: dict[str, Any] | str) -> Path:
    directory = landing / "sandbox" / ACCOUNT
    directory.mkdir(parents=True, exist_ok=True)
    body = "".join(
        (line if isinstance(line, str) else json.dumps(line, sort_keys=True)) + "\n"
        for line in lines
    )
    path = directory / name
    path.write_text(body)
    return path


def run(warehouse: Warehouse, landing: Path) -> IngestReport:
    return ingest(warehouse, landing, event_parser)


def events(warehouse: Warehouse) -> list[dict[str, Any]]:
    return warehouse.query("select * from mailers.events order by event_id").to_pylist()


def suppressions(warehouse: Warehouse) -> list[dict[str, Any]]:
    return warehouse.query(
        "select address, scope, workspace, stream, source, event_id "
        "from mailers.suppressions order by address, source"
    ).to_pylist()


def test_events_land_with_their_fields(warehouse: Warehouse, landing: Path) -> None:
    land(
        landing,
        "20261123T080000-a.jsonl",
        event("sbx-1", "delivered"),
        event("sbx-2", "open"),
        event("sbx-3", "click"),
    )

    report = run(warehouse, landing)

    assert report.counts == {
        "files": 1,
        "events_parsed": 3,
        "events_new": 3,
        "events_duplicate": 0,
        "suppressions_added": 0,
    }
    assert report.by_type == {"delivered": 1, "opened": 1, "clicked": 1}
    stored = events(warehouse)
    assert [row["event_type"] for row in stored] == ["delivered", "opened", "clicked"]
    first = stored[0]
    assert first["message_key"] == key_for("ann@example.com")
    assert (first["workspace"], first["stream"], first["campaign"]) == (
        "acme",
        "lifecycle",
        "pro_tips",
    )
    assert first["provider"] == "sandbox"
    assert first["provider_account"] == ACCOUNT
    assert first["source_file"] == f"sandbox/{ACCOUNT}/20261123T080000-a.jsonl"
    assert first["occurred_at"].isoformat() == "2026-11-23T08:00:01.000001"
    assert json.loads(first["raw_payload"]) == event("sbx-1", "delivered")
    assert stored[2]["url"] == "https://example.test/landing"


def test_repeated_event_id_across_files_is_stored_once(warehouse: Warehouse, landing: Path) -> None:
    land(landing, "1.jsonl", event("sbx-1", "delivered"))
    land(landing, "2.jsonl", event("sbx-1", "delivered"), event("sbx-2", "open"))

    report = run(warehouse, landing)

    assert [row["event_id"] for row in events(warehouse)] == ["sbx-1", "sbx-2"]
    assert report.counts["files"] == 2
    assert report.counts["events_parsed"] == 3
    assert report.counts["events_new"] == 2
    assert report.counts["events_duplicate"] == 1


def test_repeated_event_id_within_a_file_is_stored_once(
    warehouse: Warehouse, landing: Path
) -> None:
    land(landing, "1.jsonl", event("sbx-1", "open"), event("sbx-1", "open"))

    report = run(warehouse, landing)

    assert len(events(warehouse)) == 1
    assert (report.counts["events_new"], report.counts["events_duplicate"]) == (1, 1)


def test_repeated_event_in_a_later_run_is_a_duplicate(warehouse: Warehouse, landing: Path) -> None:
    land(landing, "1.jsonl", event("sbx-1", "bounce", "gone@example.com"))
    run(warehouse, landing)
    land(landing, "2.jsonl", event("sbx-1", "bounce", "gone@example.com"))

    report = run(warehouse, landing)

    assert report.counts["events_duplicate"] == 1
    assert report.counts["suppressions_added"] == 0
    assert len(events(warehouse)) == 1
    assert len(suppressions(warehouse)) == 1


def test_hard_bounce_suppresses_for_the_workspace(warehouse: Warehouse, landing: Path) -> None:
    land(
        landing,
        "1.jsonl",
        event("sbx-b", "bounce", "Gone@Example.com", detail="550 5.1.1 no such user"),
    )

    report = run(warehouse, landing)

    assert report.counts["suppressions_added"] == 1
    assert suppressions(warehouse) == [
        {
            "address": "gone@example.com",
            "scope": "workspace",
            "workspace": "acme",
            "stream": None,
            "source": "bounce",
            "event_id": "sbx-b",
        }
    ]
    reason = warehouse.query("select reason from mailers.suppressions")["reason"][0].as_py()
    assert reason == "550 5.1.1 no such user"


def test_complaint_suppresses_for_the_workspace(warehouse: Warehouse, landing: Path) -> None:
    land(landing, "1.jsonl", event("sbx-d", "delivered", "angry@example.com"))
    land(landing, "2.jsonl", event("sbx-c", "complaint", "angry@example.com"))

    run(warehouse, landing)

    assert suppressions(warehouse) == [
        {
            "address": "angry@example.com",
            "scope": "workspace",
            "workspace": "acme",
            "stream": None,
            "source": "complaint",
            "event_id": "sbx-c",
        }
    ]


def test_unsubscribe_suppresses_for_the_stream(warehouse: Warehouse, landing: Path) -> None:
    land(landing, "1.jsonl", event("sbx-u", "unsubscribe", "bye@example.com"))

    run(warehouse, landing)

    assert suppressions(warehouse) == [
        {
            "address": "bye@example.com",
            "scope": "stream",
            "workspace": "acme",
            "stream": "lifecycle",
            "source": "unsubscribe",
            "event_id": "sbx-u",
        }
    ]


def test_suppression_context_comes_from_the_ledger_when_the_event_lacks_it(
    warehouse: Warehouse, landing: Path
) -> None:
    recipient = "Quiet@Example.com"
    ledger = LedgerWriter(
        warehouse,
        LedgerContext(
            workspace="globex",
            stream="lifecycle",
            campaign="launch_newsletter",
            send_window="once",
            run_id="run-1",
        ),
    )
    ledger.record([LedgerEntry(key_for(recipient), LedgerStatus.ACCEPTED, recipient=recipient)])
    only_key = {"mailers_message_key": key_for(recipient)}
    land(
        landing,
        "1.jsonl",
        event("sbx-u", "unsubscribe", None, metadata=only_key),
        event("sbx-c", "complaint", None, metadata=only_key),
    )

    report = run(warehouse, landing)

    assert report.counts["suppressions_added"] == 2
    assert suppressions(warehouse) == [
        {
            "address": "quiet@example.com",
            "scope": "workspace",
            "workspace": "globex",
            "stream": None,
            "source": "complaint",
            "event_id": "sbx-c",
        },
        {
            "address": "quiet@example.com",
            "scope": "stream",
            "workspace": "globex",
            "stream": "lifecycle",
            "source": "unsubscribe",
            "event_id": "sbx-u",
        },
    ]


def accepted_with_id(
    warehouse: Warehouse, recipient: str, provider_message_id: str, account: str = ACCOUNT
) -> None:
    """A ledger row of an accepted message of globex that carries the provider's id."""
    ledger = LedgerWriter(
        warehouse,
        LedgerContext("globex", "lifecycle", "launch_newsletter", "once", "run-1"),
    )
    ledger.record(
        [
            LedgerEntry(
                key_for(recipient),
                LedgerStatus.ACCEPTED,
                recipient=recipient,
                provider="sandbox",
                provider_account=account,
                provider_message_id=provider_message_id,
            )
        ]
    )


def test_an_event_without_our_key_finds_its_message_by_provider_message_id(
    warehouse: Warehouse, landing: Path
) -> None:
    recipient = "polled@example.com"
    accepted_with_id(warehouse, recipient, "sbx-p-msg@sandbox.mailers.test")
    # A polled complaint: no metadata and no recipient, only the provider's message id.
    land(landing, "1.jsonl", event("sbx-p", "complaint", None, metadata={}))

    run(warehouse, landing)

    assert suppressions(warehouse) == [
        {
            "address": recipient,
            "scope": "workspace",
            "workspace": "globex",
            "stream": None,
            "source": "complaint",
            "event_id": "sbx-p",
        }
    ]


def test_a_provider_message_id_of_two_messages_or_another_account_suppresses_nobody(
    warehouse: Warehouse, landing: Path
) -> None:
    shared = "sbx-p-msg@sandbox.mailers.test"
    accepted_with_id(warehouse, "one@example.com", shared)
    accepted_with_id(warehouse, "two@example.com", shared)
    accepted_with_id(warehouse, "elsewhere@example.com", "sbx-q-msg@sandbox.mailers.test", "b")
    land(
        landing,
        "1.jsonl",
        event("sbx-p", "complaint", None, metadata={}),
        event("sbx-q", "complaint", None, metadata={}),
    )

    report = run(warehouse, landing)

    assert report.counts["events_new"] == 2
    assert suppressions(warehouse) == []


@pytest.mark.parametrize("name", ["soft_bounce", "deferral", "delivered", "open", "click"])
def test_other_events_add_no_suppression(warehouse: Warehouse, landing: Path, name: str) -> None:
    land(landing, "1.jsonl", event("sbx-x", name, "fine@example.com"))

    report = run(warehouse, landing)

    assert report.counts["events_new"] == 1
    assert report.counts["suppressions_added"] == 0
    assert suppressions(warehouse) == []


def test_soft_bounce_is_stored_as_a_soft_bounce(warehouse: Warehouse, landing: Path) -> None:
    land(landing, "1.jsonl", event("sbx-s", "soft_bounce", "full@example.com"))

    run(warehouse, landing)

    [row] = events(warehouse)
    assert (row["event_type"], row["bounce_class"]) == ("bounced", "soft")


def test_suppressing_event_without_any_address_adds_nothing(
    warehouse: Warehouse, landing: Path
) -> None:
    land(landing, "1.jsonl", event("sbx-b", "bounce", None, metadata={}))

    report = run(warehouse, landing)

    assert report.counts["events_new"] == 1
    assert report.counts["suppressions_added"] == 0


def test_line_that_is_not_json_becomes_an_unknown_event(
    warehouse: Warehouse, landing: Path
) -> None:
    land(
        landing,
        "1.jsonl",
        event("sbx-1", "delivered"),
        "this is {not json",
        event("sbx-2", "teleported"),
    )

    report = run(warehouse, landing)

    assert report.counts["events_parsed"] == 3
    assert report.counts["events_new"] == 3
    assert report.by_type == {"delivered": 1, "unknown": 2}
    unknown = [row for row in events(warehouse) if row["event_type"] == "unknown"]
    assert "this is {not json" in {row["raw_payload"] for row in unknown}
    garbled = next(row for row in unknown if row["raw_payload"] == "this is {not json")
    assert f"sandbox/{ACCOUNT}/1.jsonl:2" in garbled["reason"]
    assert garbled["provider_account"] == ACCOUNT


def test_identical_unparseable_lines_are_all_kept(warehouse: Warehouse, landing: Path) -> None:
    land(landing, "1.jsonl", "garbage", "garbage")

    report = run(warehouse, landing)

    assert report.counts["events_new"] == 2


def test_blank_lines_are_skipped(warehouse: Warehouse, landing: Path) -> None:
    land(landing, "1.jsonl", event("sbx-1", "delivered"), "", "   ")

    assert run(warehouse, landing).counts["events_parsed"] == 1


@pytest.mark.parametrize("line", ["[1, 2]", "null", '"text"', "42"])
def test_json_line_that_is_not_an_object_becomes_unknown(
    warehouse: Warehouse, landing: Path, line: str
) -> None:
    land(landing, "1.jsonl", event("sbx-1", "delivered"), line)

    report = run(warehouse, landing)

    assert report.by_type == {"delivered": 1, "unknown": 1}


def test_rerun_loads_nothing_new(warehouse: Warehouse, landing: Path) -> None:
    land(landing, "1.jsonl", event("sbx-1", "delivered"), event("sbx-2", "bounce"))
    run(warehouse, landing)

    again = run(warehouse, landing)

    assert again.counts == dict.fromkeys(again.counts, 0)
    assert len(events(warehouse)) == 2
    loaded = warehouse.query(f"select * from mailers.{LANDED_FILES_TABLE}").to_pylist()
    assert [
        (row["source_file"], row["provider_account"], row["event_count"]) for row in loaded
    ] == [(f"sandbox/{ACCOUNT}/1.jsonl", ACCOUNT, 2)]


def test_new_files_are_picked_up_by_a_later_run(warehouse: Warehouse, landing: Path) -> None:
    land(landing, "1.jsonl", event("sbx-1", "delivered"))
    run(warehouse, landing)
    land(landing, "2.jsonl", event("sbx-2", "open"))

    report = run(warehouse, landing)

    assert report.counts["files"] == 1
    assert report.counts["events_new"] == 1


def test_partial_files_are_ignored_until_complete(warehouse: Warehouse, landing: Path) -> None:
    # The sandbox writes ".<name>.partial" and renames it when complete.
    partial = land(landing, ".2.jsonl.partial", event("sbx-p", "delivered"))
    land(landing, "1.jsonl", event("sbx-1", "delivered"))
    land(landing, "notes.txt", event("sbx-t", "delivered"))

    assert [f.relative for f in landed_files(landing)] == [f"sandbox/{ACCOUNT}/1.jsonl"]
    assert run(warehouse, landing).counts["events_new"] == 1

    partial.rename(partial.with_name("2.jsonl"))
    report = run(warehouse, landing)

    assert report.counts["files"] == 1
    assert [row["event_id"] for row in events(warehouse)] == ["sbx-1", "sbx-p"]


def test_missing_landing_dir_loads_nothing(warehouse: Warehouse, tmp_path: Path) -> None:
    report = run(warehouse, tmp_path / "does-not-exist")

    assert report.counts["files"] == 0


def test_files_are_found_per_kind_and_account(landing: Path) -> None:
    land(landing, "b.jsonl", event("1", "open"))
    other = landing / "sandbox" / "globex_sandbox"
    other.mkdir(parents=True)
    (other / "a.jsonl").write_text("")

    found = [(f.kind, f.account, f.relative) for f in landed_files(landing)]

    assert found == [
        ("sandbox", ACCOUNT, f"sandbox/{ACCOUNT}/b.jsonl"),
        ("sandbox", "globex_sandbox", "sandbox/globex_sandbox/a.jsonl"),
    ]


def test_a_failed_file_leaves_nothing_half_done(
    warehouse: Warehouse, landing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    land(landing, "1.jsonl", event("sbx-b", "bounce", "gone@example.com"))
    real_append = warehouse.append

    def failing_append(schema: str, table: str, data: pa.Table) -> None:
        if table == LANDED_FILES_TABLE:
            raise WarehouseError("disk full")
        real_append(schema, table, data)

    monkeypatch.setattr(warehouse, "append", failing_append)
    with pytest.raises(WarehouseError, match="disk full"):
        run(warehouse, landing)

    assert events(warehouse) == []
    assert suppressions(warehouse) == []

    monkeypatch.setattr(warehouse, "append", real_append)
    report = run(warehouse, landing)

    assert report.counts["events_new"] == 1
    assert report.counts["suppressions_added"] == 1


def test_line_with_a_non_string_event_id_does_not_abort_ingestion(
    warehouse: Warehouse, landing: Path
) -> None:
    odd = {**event("ignored", "open"), "id": 5}
    land(landing, "1.jsonl", event("sbx-1", "delivered"), odd)

    report = run(warehouse, landing)

    assert report.counts["events_parsed"] == 2
