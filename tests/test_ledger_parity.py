"""Python and dbt read the send ledger alike: the same latest row per message, and every
provider event tied to the same message.

One warehouse is built with ledger rows recorded in the same instant (every pair of
statuses, and rows alike in status), and with events that carry a message key, only a
provider message id (of the same account, of another account or provider, shared by two
messages) or neither. The Python queries and one ``dbt build`` of the reporting models read
it; their answers must be identical row for row.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from itertools import combinations
from typing import Any

import pyarrow as pa
import pytest

from adapters.settings import load
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.events import EVENTS_SCHEMA, EVENTS_TABLE
from mailers.ledger import (
    LEDGER_SCHEMA,
    LEDGER_TABLE,
    STATUS_PRECEDENCE,
    LedgerStatus,
    attributed_events_sql,
    latest_rows_sql,
)
from mailers.tables import ensure_tables
from mailers.warehouse import MAILERS_SCHEMA
from tests.conftest import run_dbt, write_config

AT = datetime(2026, 11, 23, 8, 0, 0)
LATEST = (
    "ledger_id",
    "status",
    "reason",
    "workspace",
    "stream",
    "campaign",
    "send_window",
    "recipient",
)
ATTRIBUTED = ("message_key", "message_key_source", "workspace", "stream", "campaign", "recipient")


def ledger_row(
    message_key: str, status: str, *, at: datetime = AT, **values: Any
) -> dict[str, Any]:
    """A ledger row; its ledger_id is a hash, so rows alike but for it sort in a fixed order."""
    row: dict[str, Any] = dict.fromkeys(LEDGER_SCHEMA.names)
    row.update(
        ledger_id=hashlib.md5(f"{message_key}|{status}|{at}|{values}".encode()).hexdigest(),
        message_key=message_key,
        status=status,
        reason=f"{status} at {at:%H:%M:%S}",
        workspace="acme",
        stream="lifecycle",
        campaign="pro_tips",
        send_window="once",
        recipient=f"{message_key}@example.com",
        provider="postmark",
        provider_account="pm_a",
        run_id="run-1",
        recorded_at=at,
    )
    row.update(values)
    return row


def ledger_rows() -> list[dict[str, Any]]:
    rows = [
        ledger_row(f"tie-{a}-{b}", status, run_id=f"run-{status}")
        for a, b in combinations(sorted(LedgerStatus), 2)
        for status in (a, b)
    ]
    rows += [
        # Same instant, same status: only the ledger id tells them apart.
        *(ledger_row("alike", "accepted", provider_message_id=f"alike-{n}") for n in range(3)),
        # A failover answered in one instant: dispatch, not_sent, dispatch, accepted.
        ledger_row("failover", "dispatching", provider_account="pm_a"),
        ledger_row("failover", "not_sent", provider_account="pm_a"),
        ledger_row("failover", "dispatching", provider_account="pm_b"),
        ledger_row("failover", "accepted", provider_account="pm_b", provider_message_id="fo-1"),
        # Time comes before status.
        ledger_row("redispatched", "accepted", provider_message_id="rd-1"),
        ledger_row("redispatched", "dispatching", at=AT + timedelta(seconds=1)),
        # One id on two rows of one message (accepted, then reconciled alike).
        ledger_row("one", "accepted", provider_message_id="id-one", stream="marketing"),
        ledger_row(
            "one",
            "accepted",
            at=AT + timedelta(minutes=5),
            provider_message_id="id-one",
            reason="reconciled: pm_a's records show it accepted",
        ),
        ledger_row("shared-1", "accepted", provider_message_id="id-shared"),
        ledger_row("shared-2", "accepted", provider_message_id="id-shared"),
        ledger_row(
            "other-account", "accepted", provider_account="pm_b", provider_message_id="id-b"
        ),
        ledger_row("other-provider", "accepted", provider="sendgrid", provider_message_id="id-sg"),
    ]
    return rows


def event_row(event_id: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(EVENTS_SCHEMA.names)
    row.update(
        event_id=event_id,
        event_type="delivered",
        occurred_at=AT + timedelta(hours=1),
        provider="postmark",
        provider_account="pm_a",
        raw_payload="{}",
        ingested_at=AT + timedelta(hours=2),
    )
    row.update(values)
    return row


EVENTS = [
    event_row("by-key", message_key="one"),
    event_row("key-over-id", message_key="one", provider_message_id="id-shared"),
    event_row("key-unknown-to-ledger", message_key="nowhere", provider_message_id="id-one"),
    event_row("own-values-win", message_key="one", workspace="globex", recipient="x@example.com"),
    event_row("by-id", provider_message_id="id-one"),
    event_row("by-id-other-account", provider_account="pm_b", provider_message_id="id-b"),
    event_row("id-shared", provider_message_id="id-shared"),
    event_row("id-of-another-account", provider_message_id="id-b"),
    event_row("id-of-another-provider", provider_message_id="id-sg"),
    event_row("id-unknown", provider_message_id="id-nowhere"),
    event_row("no-key-no-id"),
]

UNATTRIBUTED = dict.fromkeys(ATTRIBUTED)


def tied(message_key: str, source: str, *, in_ledger: bool = True, **own: str) -> dict[str, Any]:
    """An event tied to ``message_key``: the event's ``own`` values, else its message's (the
    message's latest row: ``one`` was on another stream before)."""
    message = {
        "workspace": "acme",
        "stream": "lifecycle",
        "campaign": "pro_tips",
        "recipient": f"{message_key}@example.com",
    }
    return {
        **UNATTRIBUTED,
        **(message if in_ledger else {}),
        **own,
        "message_key": message_key,
        "message_key_source": source,
    }


EXPECTED_ATTRIBUTION = {
    "by-key": tied("one", "event"),
    "key-over-id": tied("one", "event"),
    "key-unknown-to-ledger": tied("nowhere", "event", in_ledger=False),
    "own-values-win": tied("one", "event", workspace="globex", recipient="x@example.com"),
    "by-id": tied("one", "provider_message_id"),
    "by-id-other-account": tied("other-account", "provider_message_id"),
    "id-shared": UNATTRIBUTED,
    "id-of-another-account": UNATTRIBUTED,
    "id-of-another-provider": UNATTRIBUTED,
    "id-unknown": UNATTRIBUTED,
    "no-key-no-id": UNATTRIBUTED,
}


@pytest.fixture(scope="module")
def readings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Both sides' latest rows and attributions of one crafted warehouse."""
    root = tmp_path_factory.mktemp("parity")
    settings = load(write_config(root))
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
        warehouse.append(
            MAILERS_SCHEMA, LEDGER_TABLE, pa.Table.from_pylist(ledger_rows(), LEDGER_SCHEMA)
        )
        warehouse.append(MAILERS_SCHEMA, EVENTS_TABLE, pa.Table.from_pylist(EVENTS, EVENTS_SCHEMA))
        events = warehouse.relation(MAILERS_SCHEMA, EVENTS_TABLE)
        python_latest = warehouse.query(latest_rows_sql(warehouse)).to_pylist()
        python_events = warehouse.query(attributed_events_sql(warehouse, events)).to_pylist()

    run_dbt(settings, "build", "--select", "+fct_messages")

    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        dbt_latest = warehouse.query(
            "select *, ledger_status as status, ledger_reason as reason "
            "from intermediate.int_message_ledger_latest"
        ).to_pylist()
        dbt_events = warehouse.query("select * from marts.fct_email_events").to_pylist()
    return {
        "python_latest": _by(python_latest, "message_key", LATEST),
        "dbt_latest": _by(dbt_latest, "message_key", LATEST),
        "python_events": _by(python_events, "event_id", ATTRIBUTED),
        "dbt_events": _by(dbt_events, "event_id", ATTRIBUTED),
    }


def _by(rows: list[dict[str, Any]], key: str, columns: tuple[str, ...]) -> dict[str, Any]:
    return {row[key]: {column: row[column] for column in columns} for row in rows}


def test_python_and_dbt_pick_the_same_latest_row_of_every_message(
    readings: dict[str, dict[str, Any]],
) -> None:
    assert readings["python_latest"] == readings["dbt_latest"]


def test_rows_of_one_instant_are_ordered_by_status_then_ledger_id(
    readings: dict[str, dict[str, Any]],
) -> None:
    latest = readings["python_latest"]
    for a, b in combinations(sorted(LedgerStatus), 2):
        later = max(a, b, key=STATUS_PRECEDENCE.index)
        assert latest[f"tie-{a}-{b}"]["status"] == later, (a, b)
    alike = [row for row in ledger_rows() if row["message_key"] == "alike"]
    assert latest["alike"]["ledger_id"] == max(row["ledger_id"] for row in alike)
    assert latest["failover"]["status"] == "accepted"
    assert latest["redispatched"]["status"] == "dispatching"
    assert latest["one"]["reason"].startswith("reconciled:")


def test_python_and_dbt_tie_every_event_to_the_same_message(
    readings: dict[str, dict[str, Any]],
) -> None:
    assert readings["python_events"] == readings["dbt_events"]
    assert readings["python_events"] == EXPECTED_ATTRIBUTION


def test_the_ledger_status_order_is_complete() -> None:
    assert sorted(STATUS_PRECEDENCE) == sorted(LedgerStatus)
