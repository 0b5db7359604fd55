"""Landed one-click unsubscribes: parsed into ``unsubscribed`` events tied to their message,
suppressing its recipient for the stream at ingestion and, before that, mid-send."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from adapters.providers.registry import SPECS, event_parser
from adapters.warehouses import OpenWarehouse, connect
from mailers.clock import FixedClock, utcnow
from mailers.config import WarehouseConfig
from mailers.events import EVENTS_TABLE
from mailers.feedback import LandedFeedback
from mailers.ingest import ingest, landed_files, parse_file
from mailers.landing import land
from mailers.late_suppressions import LandedSuppressions
from mailers.ledger import LEDGER_SCHEMA
from mailers.suppression import SUPPRESSIONS_TABLE
from mailers.tables import ensure_tables
from mailers.unsubscribe import UnsubscribeClaim
from mailers.unsubscribe_landing import UNSUBSCRIBE_KIND, event_id, landing_line, parse
from mailers.warehouse import MAILERS_SCHEMA, Warehouse


@pytest.fixture
def warehouse(tmp_path: Path, engine_config: WarehouseConfig) -> Iterator[OpenWarehouse]:
    with connect(engine_config, tmp_path) as wh:
        ensure_tables(wh)
        yield wh


def sent(warehouse: Warehouse, recipient: str, stream: str = "lifecycle") -> str:
    """One message accepted for ``recipient`` on acme's ``stream``; returns its key."""
    key = uuid.uuid4().hex
    row = {
        "ledger_id": uuid.uuid4().hex,
        "message_key": key,
        "status": "accepted",
        "workspace": "acme",
        "stream": stream,
        "campaign": "pro_tips",
        "send_window": "w",
        "recipient": recipient,
        "identity": "acme_news",
        "provider": "sandbox",
        "provider_account": "acme_sandbox_a",
        "provider_message_id": f"{key}@sandbox",
        "run_id": "r",
        "recorded_at": utcnow() - timedelta(hours=1),
    }
    warehouse.append(MAILERS_SCHEMA, "send_ledger", pa.Table.from_pylist([row], LEDGER_SCHEMA))
    return key


def test_the_landing_kind_is_no_provider_and_has_its_own_parser() -> None:
    assert UNSUBSCRIBE_KIND not in SPECS
    assert event_parser(UNSUBSCRIBE_KIND).parse is not None


def test_a_landed_line_parses_to_one_unsubscribed_event(fixed_clock: FixedClock) -> None:
    claim = UnsubscribeClaim("k1", "acme", "lifecycle")
    line = landing_line(claim, "one-click")

    (found,) = parse(line, "acme")
    assert (found.event_type, found.message_key, found.workspace, found.stream) == (
        "unsubscribed",
        "k1",
        "acme",
        "lifecycle",
    )
    assert found.provider == UNSUBSCRIBE_KIND and found.recipient is None
    assert found.occurred_at == fixed_clock.now().replace(tzinfo=None)
    assert json.loads(found.raw_payload)["via"] == "one-click"
    fixed_clock.advance(60)
    again = parse(landing_line(claim, "page"), "acme")[0]
    assert again.event_id == found.event_id == event_id(claim), "a second click is one event"
    assert event_id(UnsubscribeClaim("k1", "acme", "marketing")) != found.event_id


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[]",
        b'{"type":"delivered"}',
        b'{"type":"unsubscribed","workspace":"acme","stream":"lifecycle","at":"2026-01-01T00:00:00+00:00"}',
        b'{"type":"unsubscribed","message_key":"k","workspace":"globex","stream":"s","at":"2026-01-01T00:00:00+00:00"}',
        b'{"type":"unsubscribed","message_key":"k","workspace":"acme","stream":"s","at":"2026-01-01T00:00:00"}',
    ],
)
def test_a_line_that_is_no_unsubscribe_record_is_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        parse(line, "acme")


def test_ingest_suppresses_the_messages_recipient_for_its_stream_once(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    key = sent(warehouse, "Ann@Example.com")
    claim = UnsubscribeClaim(key, "acme", "lifecycle")
    land(landing, UNSUBSCRIBE_KIND, "acme", [landing_line(claim, "one-click")])
    land(landing, UNSUBSCRIBE_KIND, "acme", [landing_line(claim, "page"), b"garbage"])

    report = ingest(warehouse, landing, event_parser)

    assert report.counts["events_new"] == 2, "the unsubscribe once, the garbage kept as unknown"
    assert report.by_type == {"unsubscribed": 2, "unknown": 1}
    rows = warehouse.query(
        f"select address, scope, workspace, stream, source, event_id from "
        f"{MAILERS_SCHEMA}.{SUPPRESSIONS_TABLE}"
    ).to_pylist()
    assert rows == [
        {
            "address": "ann@example.com",
            "scope": "stream",
            "workspace": "acme",
            "stream": "lifecycle",
            "source": "unsubscribe",
            "event_id": event_id(claim),
        }
    ]
    unknown = warehouse.query(
        f"select raw_payload from {MAILERS_SCHEMA}.{EVENTS_TABLE} where event_type = 'unknown'"
    ).to_pylist()
    assert unknown == [{"raw_payload": "garbage"}]


def test_a_send_sees_a_landed_unsubscribe_before_ingestion(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    key = sent(warehouse, "bob@example.com")
    checks = LandedSuppressions(warehouse, LandedFeedback(warehouse, landing, event_parser))
    assert checks.reasons("acme", "lifecycle", ["bob@example.com"]) == {}

    land(
        landing,
        UNSUBSCRIBE_KIND,
        "acme",
        [landing_line(UnsubscribeClaim(key, "acme", "lifecycle"), "one-click")],
    )

    found = checks.reasons("acme", "lifecycle", ["Bob@example.com", "carol@example.com"])
    assert list(found) == ["Bob@example.com"]
    assert "unsubscribe landed during this send" in found["Bob@example.com"]
    assert checks.reasons("acme", "transactional", ["bob@example.com"]) == {}, "stream only"
    (landed,) = landed_files(landing)
    assert parse_file(landed, event_parser(landed.kind))["event_type"].to_pylist() == [
        "unsubscribed"
    ]
