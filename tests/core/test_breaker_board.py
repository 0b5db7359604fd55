"""The breakers of a send run against a real DuckDB warehouse: every transition an audit
row with its evidence, and the state carried from one run to the next through the log."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.breaker_board import AuditContext, BreakerBoard, latest_transitions
from mailers.clock import FixedClock, use_clock
from mailers.messages import OutboundMessage, SendOutcome, SendResult
from mailers.policy_config import BreakerConfig
from mailers.providers import AccountUnavailable
from mailers.tables import ensure_tables

START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
CONFIG = BreakerConfig(consecutive_failures=2, error_rate=0.5, window_calls=10, open_seconds=120)
ACCOUNTS = {"acme_pm": CONFIG, "acme_mg": CONFIG}
ANSWERED = [SendResult("k1", True, provider_message_id="p1"), SendResult("k2", False, reason="x")]
TIMED_OUT = [SendResult("k1", False, reason="timeout after sending", outcome=SendOutcome.UNKNOWN)]


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[DuckDBWarehouse]:
    with DuckDBWarehouse(tmp_path / "warehouse.duckdb") as wh:
        ensure_tables(wh)
        yield wh


@pytest.fixture
def fixed() -> Iterator[FixedClock]:
    pinned = FixedClock(START)
    with use_clock(pinned):
        yield pinned


def run(name: str) -> AuditContext:
    return AuditContext(
        run_id=name, actor="test", config_hash="c0ffee", stream="lifecycle", campaign="tips"
    )


def board(warehouse: DuckDBWarehouse, run_id: str, workspace: str = "acme") -> BreakerBoard:
    return BreakerBoard.load(warehouse, workspace, ACCOUNTS, run(run_id))


def transitions(warehouse: DuckDBWarehouse) -> list[dict[str, Any]]:
    rows = warehouse.query(
        "select run_id, workspace, stream, campaign, detail from mailers.audit_log "
        "where action = 'breaker' order by recorded_at"
    ).to_pylist()
    return [{**row, "detail": json.loads(row["detail"])} for row in rows]


def moves(warehouse: DuckDBWarehouse) -> list[tuple[str, str, str, str]]:
    return [
        (t["run_id"], t["detail"]["account"], t["detail"]["from_state"], t["detail"]["to_state"])
        for t in transitions(warehouse)
    ]


def test_opening_writes_one_audit_row_with_the_evidence(
    warehouse: DuckDBWarehouse, fixed: FixedClock
) -> None:
    b = board(warehouse, "run-1")
    b.gate("acme_pm")
    b.observe("acme_pm", ANSWERED)
    b.gate("acme_pm")
    b.observe("acme_pm", TIMED_OUT)
    assert transitions(warehouse) == []
    b.gate("acme_pm")
    b.observe("acme_pm", TIMED_OUT)

    (row,) = transitions(warehouse)
    assert (row["run_id"], row["workspace"], row["stream"], row["campaign"]) == (
        "run-1",
        "acme",
        "lifecycle",
        "tips",
    )
    assert row["detail"] == {
        "account": "acme_pm",
        "from_state": "closed",
        "to_state": "open",
        "trigger": "2 failures in a row (opens at 2)",
        "at": "2026-11-23T08:00:00+00:00",
        "opened_at": "2026-11-23T08:00:00+00:00",
        "opened_because": "2 failures in a row (opens at 2)",
        "probe_at": "2026-11-23T08:02:00+00:00",
        "consecutive_failures": 2,
        "window_calls": 3,
        "window_failures": 2,
        "error_rate": pytest.approx(2 / 3),
        "last_failure": "timeout after sending",
        "thresholds": {
            "consecutive_failures": 2,
            "error_rate": 0.5,
            "window_calls": 10,
            "open_seconds": 120.0,
        },
    }
    assert not b.available("acme_pm") and b.available("acme_mg")
    with pytest.raises(AccountUnavailable) as refused:
        b.gate("acme_pm")
    assert refused.value.reason == b.why("acme_pm")
    assert "in a row (opens at 2); last failure: timeout after sending" in b.why("acme_pm")


def test_the_next_run_keeps_it_open_then_probes_and_closes(
    warehouse: DuckDBWarehouse, fixed: FixedClock
) -> None:
    first = board(warehouse, "run-1")
    for _ in range(2):
        first.gate("acme_pm")
        first.observe("acme_pm", TIMED_OUT)

    fixed.advance(60)
    second = board(warehouse, "run-2")
    assert not second.available("acme_pm")
    assert "next probe at 2026-11-23 08:02:00 UTC" in second.why("acme_pm")
    assert "last failure: timeout after sending" in second.why("acme_pm")
    assert second.available("acme_mg")

    fixed.advance(60)
    third = board(warehouse, "run-3")
    assert third.available("acme_pm")
    third.gate("acme_pm")  # the probe
    with pytest.raises(
        AccountUnavailable, match=re.escape("half-open (a probe call is in flight)")
    ):
        third.gate("acme_pm")
    third.observe("acme_pm", ANSWERED)
    third.gate("acme_pm")

    assert moves(warehouse) == [
        ("run-1", "acme_pm", "closed", "open"),
        ("run-3", "acme_pm", "open", "half_open"),
        ("run-3", "acme_pm", "half_open", "closed"),
    ]
    half, closed = transitions(warehouse)[1:]
    assert half["detail"]["trigger"] == "open for 120s"
    assert half["detail"]["at"] == "2026-11-23T08:02:00+00:00"
    assert half["detail"]["opened_at"] == "2026-11-23T08:00:00+00:00"
    assert closed["detail"]["trigger"] == "probe answered"
    assert closed["detail"]["opened_at"] is None
    assert board(warehouse, "run-4").available("acme_pm")


def test_a_failed_probe_opens_it_again_and_the_next_run_waits_afresh(
    warehouse: DuckDBWarehouse, fixed: FixedClock
) -> None:
    first = board(warehouse, "run-1")
    for _ in range(2):
        first.gate("acme_pm")
        first.observe("acme_pm", TIMED_OUT)
    fixed.advance(120)
    second = board(warehouse, "run-2")
    second.gate("acme_pm")
    second.observe("acme_pm", TIMED_OUT)

    fixed.advance(119)
    assert not board(warehouse, "run-3").available("acme_pm")
    fixed.advance(1)
    assert board(warehouse, "run-4").available("acme_pm")
    assert moves(warehouse) == [
        ("run-1", "acme_pm", "closed", "open"),
        ("run-2", "acme_pm", "open", "half_open"),
        ("run-2", "acme_pm", "half_open", "open"),
        ("run-4", "acme_pm", "open", "half_open"),
    ]
    reopened = transitions(warehouse)[2]["detail"]
    assert reopened["trigger"] == "probe failed: timeout after sending"
    assert reopened["consecutive_failures"] == 3  # carried over from run-1's opening


def test_a_run_that_ended_while_probing_leaves_the_next_run_a_probe(
    warehouse: DuckDBWarehouse, fixed: FixedClock
) -> None:
    first = board(warehouse, "run-1")
    for _ in range(2):
        first.gate("acme_pm")
        first.observe("acme_pm", TIMED_OUT)
    fixed.advance(120)
    board(warehouse, "run-2").gate("acme_pm")  # half-opens; the run ends before an answer

    nxt = board(warehouse, "run-3")
    assert nxt.available("acme_pm")
    nxt.gate("acme_pm")
    assert not nxt.available("acme_pm")


def test_state_is_read_per_workspace_and_per_account(
    warehouse: DuckDBWarehouse, fixed: FixedClock
) -> None:
    acme = board(warehouse, "run-1")
    for _ in range(2):
        acme.gate("acme_mg")
        acme.observe("acme_mg", TIMED_OUT)

    assert board(warehouse, "run-2", workspace="globex").available("acme_mg")
    latest = latest_transitions(warehouse, "acme", ["acme_pm", "acme_mg"])
    assert list(latest) == ["acme_mg"] and latest["acme_mg"]["to_state"] == "open"
    assert latest_transitions(warehouse, "acme", []) == {}


def test_an_account_the_run_does_not_use_is_named(warehouse: DuckDBWarehouse) -> None:
    with pytest.raises(KeyError, match=r"'acme_ses' in workspace 'acme'.*acme_mg, acme_pm"):
        board(warehouse, "run-1").available("acme_ses")


class Recording:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.calls: list[str] = []

    def handing_over(
        self, messages: Sequence[OutboundMessage], idempotency_keys: Mapping[str, str]
    ) -> None:
        if self.refuse:
            raise RuntimeError("this run no longer holds its window")
        self.calls.append("handing_over")

    def answered(self, results: Sequence[SendResult]) -> None:
        self.calls.append("answered")


def test_the_journal_gates_each_wave_and_counts_only_waves_handed_over(
    warehouse: DuckDBWarehouse, fixed: FixedClock
) -> None:
    b = board(warehouse, "run-1")
    inner = Recording()
    journal = b.journal("acme_pm", inner)
    for _ in range(2):
        journal.handing_over([], {})
        journal.answered(TIMED_OUT)
    with pytest.raises(AccountUnavailable):
        journal.handing_over([], {})
    journal.answered(TIMED_OUT)  # the closing answer for messages that never left

    assert inner.calls == ["handing_over", "answered"] * 2 + ["answered"]
    assert b.breakers["acme_pm"].evidence().window_calls == 2
    assert len(transitions(warehouse)) == 1


def test_a_probe_the_inner_journal_refused_frees_the_probe(
    warehouse: DuckDBWarehouse, fixed: FixedClock
) -> None:
    b = board(warehouse, "run-1")
    for _ in range(2):
        b.gate("acme_pm")
        b.observe("acme_pm", TIMED_OUT)
    fixed.advance(120)
    with pytest.raises(RuntimeError, match="no longer holds"):
        b.journal("acme_pm", Recording(refuse=True)).handing_over([], {})
    assert b.available("acme_pm")
