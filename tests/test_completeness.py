"""Completeness of provider feedback: the dbt models on a real DuckDB build, the
``overdue_feedback`` asset check on what they built, and the demo's figure.

Time: the ledger and events are stamped relative to a pinned ``now`` that is passed to dbt
as ``completeness_now`` (``mailers.completeness.dbt_vars``), so the tests pass on any date.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest

from adapters.settings import load
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers import clock
from mailers.completeness import CompletenessConfig, dbt_vars, read_completeness
from mailers.config import Settings
from mailers.events import EVENTS_SCHEMA
from mailers.ledger import LEDGER_SCHEMA, LEDGER_TABLE
from mailers.tables import ensure_tables
from mailers.warehouse import MAILERS_SCHEMA
from orchestration.defs.completeness import (
    COMPLETENESS_KEY,
    overdue_feedback,
    overdue_feedback_result,
)
from orchestration.defs.resources import MailersResource
from tests.conftest import query, run_dbt, write_config

DEADLINE_HOURS = 72


def _ledger_row(
    key: str, status: str, at: datetime, account: str = "acme_sandbox"
) -> dict[str, Any]:
    return {
        "ledger_id": f"{key}-{status}-{at.isoformat()}",
        "message_key": key,
        "status": status,
        "workspace": "acme",
        "stream": "lifecycle",
        "campaign": "welcome",
        "send_window": "w1",
        "recipient": f"{key}@example.test",
        "provider": "sandbox",
        "provider_account": account,
        "provider_message_id": f"pm-{key}" if status == "accepted" else None,
        "run_id": "run-1",
        "recorded_at": at,
    }


def _event_row(
    key: str, event_type: str, at: datetime, account: str = "acme_sandbox"
) -> dict[str, Any]:
    return {
        "event_id": f"{key}-{event_type}",
        "event_type": event_type,
        "occurred_at": at,
        "provider": "sandbox",
        "provider_account": account,
        "provider_message_id": f"pm-{key}",
        "message_key": key,
        "raw_payload": "{}",
        "ingested_at": at,
    }


def _append(settings: Settings, table: str, schema: pa.Schema, rows: list[dict[str, Any]]) -> None:
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        warehouse.append(MAILERS_SCHEMA, table, pa.Table.from_pydict(columns, schema=schema))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, datetime]:
    """A warehouse with one message of each kind, and the models built at a pinned now.

    Day 1 (4 days before now, so past the 72 h deadline): ``delivered`` (final),
    ``bounced`` (final), ``lost`` (accepted, no final event: overdue), ``opened_only`` (an
    open is not final: overdue), ``in_doubt_settled`` (unknown, then a delivered event:
    settled), ``in_doubt`` (unknown, no event: overdue). Today: ``fresh`` (pending),
    ``deferred_only`` (a deferral is not final: pending). ``skipped`` and ``not_sent``
    were never handed over and are not counted.
    """
    root = tmp_path_factory.mktemp("completeness")
    settings = load(write_config(root))
    now = clock.utcnow().replace(microsecond=0)
    day1 = now - timedelta(days=4)
    today = now - timedelta(minutes=30)
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
    ledger, events = [], []
    for key in ("delivered", "bounced", "lost", "opened_only", "in_doubt_settled", "in_doubt"):
        ledger.append(_ledger_row(key, "dispatching", day1))
        status = "unknown" if key.startswith("in_doubt") else "accepted"
        ledger.append(_ledger_row(key, status, day1 + timedelta(seconds=1)))
    for key in ("fresh", "deferred_only"):
        ledger.append(_ledger_row(key, "dispatching", today))
        ledger.append(_ledger_row(key, "accepted", today + timedelta(seconds=1)))
    ledger.append(_ledger_row("skipped", "skipped", day1))
    ledger.append(_ledger_row("not_sent", "dispatching", day1))
    ledger.append(_ledger_row("not_sent", "not_sent", day1 + timedelta(seconds=1)))
    events += [
        _event_row("delivered", "delivered", day1 + timedelta(minutes=1)),
        _event_row("bounced", "bounced", day1 + timedelta(minutes=1)),
        _event_row("opened_only", "opened", day1 + timedelta(hours=1)),
        _event_row("in_doubt_settled", "delivered", day1 + timedelta(minutes=2)),
        _event_row("deferred_only", "deferred", today + timedelta(minutes=1)),
    ]
    _append(settings, LEDGER_TABLE, LEDGER_SCHEMA, ledger)
    _append(settings, "events", EVENTS_SCHEMA, events)
    build_vars = dbt_vars(CompletenessConfig(deadline_hours=DEADLINE_HOURS), now)
    run_dbt(
        settings,
        "build",
        "--select",
        "+fct_message_completeness fct_messages",
        "--vars",
        json.dumps(build_vars),
    )
    return settings, now


def test_each_message_is_final_pending_or_overdue(built: tuple[Settings, datetime]) -> None:
    settings, _ = built
    rows = query(
        settings,
        "select message_key, completeness, is_settled_by_event "
        "from intermediate.int_message_completeness order by message_key",
    )
    assert {r["message_key"]: (r["completeness"], r["is_settled_by_event"]) for r in rows} == {
        "bounced": ("final", False),
        "deferred_only": ("pending", False),
        "delivered": ("final", False),
        "fresh": ("pending", False),
        "in_doubt": ("overdue", False),
        "in_doubt_settled": ("final", True),
        "lost": ("overdue", False),
        "opened_only": ("overdue", False),
    }


def test_mart_counts_per_account_and_day(built: tuple[Settings, datetime]) -> None:
    settings, now = built
    rows = query(
        settings,
        "select day, provider_account, messages, accepted, unknown, with_final_event, "
        "settled_unknown, pending, overdue, first_overdue_sent_at, completeness_rate "
        "from marts.fct_message_completeness order by day",
    )
    day1 = now - timedelta(days=4)
    assert rows == [
        {
            "day": day1.date(),
            "provider_account": "acme_sandbox",
            "messages": 6,
            "accepted": 4,
            "unknown": 2,
            "with_final_event": 3,
            "settled_unknown": 1,
            "pending": 0,
            "overdue": 3,
            # an unknown message's hand-over is its dispatch; an accepted one's its acceptance
            "first_overdue_sent_at": day1,
            "completeness_rate": 0.5,
        },
        {
            "day": (now - timedelta(minutes=30)).date(),
            "provider_account": "acme_sandbox",
            "messages": 2,
            "accepted": 2,
            "unknown": 0,
            "with_final_event": 0,
            "settled_unknown": 0,
            "pending": 2,
            "overdue": 0,
            "first_overdue_sent_at": None,
            "completeness_rate": 0.0,
        },
    ]


def test_the_deadline_comes_from_the_var(tmp_path: Path, built: tuple[Settings, datetime]) -> None:
    """With a 200 h deadline nothing of four days ago is overdue yet: it is pending."""
    settings, now = built
    copy = load(write_config(tmp_path))
    copy.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    copy.warehouse_path.write_bytes(settings.warehouse_path.read_bytes())
    build_vars = dbt_vars(CompletenessConfig(deadline_hours=200), now)
    run_dbt(
        copy,
        "run",
        "--select",
        "int_message_completeness fct_message_completeness",
        "--vars",
        json.dumps(build_vars),
    )
    rows = query(
        copy,
        "select sum(overdue) as overdue, sum(pending) as pending "
        "from marts.fct_message_completeness",
    )
    assert rows == [{"overdue": 0, "pending": 5}]


def test_overdue_feedback_check_fails_on_overdue_and_passes_without(
    built: tuple[Settings, datetime],
) -> None:
    settings, now = built
    with DuckDBWarehouse(settings.warehouse_path, read_only=True) as warehouse:
        completeness = read_completeness(warehouse)
    failing = overdue_feedback_result(completeness)
    assert not failing.passed
    assert failing.metadata["overdue"].value == 3
    day1 = (now - timedelta(days=4)).date()
    assert failing.metadata[f"overdue_acme_sandbox_{day1:%Y-%m-%d}"].value == 3
    assert completeness.describe().startswith(
        "37.5% of 8 accepted messages have a final event; 3 overdue"
    )
    passing = overdue_feedback_result(
        type(completeness)(
            messages=completeness.messages,
            with_final_event=completeness.with_final_event,
            settled_unknown=completeness.settled_unknown,
            pending=completeness.pending,
            overdue=(),
        )
    )
    assert passing.passed


def _run_overdue_check(settings: Settings) -> dg.AssetCheckEvaluation:
    """Execute the ``overdue_feedback`` asset check in Dagster against ``settings``' mart."""
    result = dg.materialize(
        [dg.AssetSpec(COMPLETENESS_KEY), overdue_feedback],
        resources={"mailers": MailersResource(config_path=str(settings.path))},
        selection=dg.AssetSelection.checks(overdue_feedback),
    )
    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def test_overdue_feedback_check_warns_in_dagster_and_passes_without(
    tmp_path: Path, built: tuple[Settings, datetime]
) -> None:
    settings, now = built
    failing = _run_overdue_check(settings)
    assert not failing.passed and failing.severity == dg.AssetCheckSeverity.WARN
    assert failing.metadata["overdue"].value == 3
    copy = load(write_config(tmp_path))
    copy.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    copy.warehouse_path.write_bytes(settings.warehouse_path.read_bytes())
    build_vars = dbt_vars(CompletenessConfig(deadline_hours=200), now)
    run_dbt(
        copy,
        "run",
        "--select",
        "fct_message_completeness int_message_completeness",
        "--vars",
        json.dumps(build_vars),
    )
    passing = _run_overdue_check(copy)
    assert passing.passed and passing.metadata["overdue"].value == 0
