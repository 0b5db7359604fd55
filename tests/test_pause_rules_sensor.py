"""The ``pause_rules`` sensor: a real send's landed complaints trip an automatic pause.

The seeded globex newsletter has recipients at the sandbox's complaint domain (well over
the 0.1% pause level) and its bounce domain (under 4%: a warning); the sandbox lands their
events as the send goes, so the sensor counts them before anything loads them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg
import pytest
from rich.console import Console

from adapters.providers.registry import event_parser
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.clock import FixedClock
from mailers.config import Settings
from mailers.ingest import ingest
from mailers.pauses import PauseBoard
from orchestration.defs.build import build_definitions
from orchestration.rules import print_pause_rules
from tests.conftest import send_window_once


@pytest.fixture
def project(core_project: Callable[..., Settings]) -> Settings:
    def mutate(config: dict[str, Any]) -> None:
        # The shared seeded warehouse has 1,000 contacts: ~300 newsletter recipients.
        config["workspaces"]["globex"]["pause_rules"] = {"min_volume": 100}

    return core_project(mutate)


def evaluate(settings: Settings, cursor: str | None = None) -> dg.SensorResult:
    sensor = build_definitions(str(settings.path)).resolve_sensor_def("pause_rules")
    result = sensor(dg.build_sensor_context(cursor=cursor))
    assert isinstance(result, dg.SensorResult)
    return result


def test_the_sensor_pauses_the_scope_whose_complaints_landed(
    project: Settings, fixed_clock: FixedClock
) -> None:
    empty = evaluate(project)
    assert empty.skip_reason is not None and "no new pause" in empty.skip_reason.skip_message
    report = send_window_once(
        project, "globex.launch_newsletter", window="once", sleep=fixed_clock.advance
    )
    assert report.counts["accepted"] >= 100

    first = evaluate(project)
    assert first.skip_reason is not None
    message = first.skip_reason.skip_message or ""
    assert message.startswith("paused: stream globex.lifecycle automatically (complaint ")
    assert message.endswith("resume: mailers resume stream:globex.lifecycle --reason ...")
    board = PauseBoard(project.data_dir)
    (pause,) = board.active().values()
    assert pause.automatic and pause.scope.key == "stream:globex.lifecycle"
    findings = pause.evidence["findings"]
    assert findings[0]["landed_events_read"] > 0 and findings[0]["volume"] >= 100
    assert board.holding("globex", stream="lifecycle") == pause
    assert board.holding("acme", stream="lifecycle") is None

    screen = Console(record=True, width=300)
    print_pause_rules(screen, project)  # what mailers demo prints after its run
    assert screen.export_text().strip() == message

    again = evaluate(project, first.cursor)
    assert again.skip_reason is not None
    assert "no new pause" in (again.skip_reason.skip_message or "")
    assert len(board.active()) == 1

    with DuckDBWarehouse(project.warehouse_path) as warehouse:
        ingest(warehouse, project.landing_dir, event_parser)  # loaded now, not landed
    board.resume(pause.scope, actor="alice", reason="list cleaned", config_hash="h", by_person=True)
    after = evaluate(project, again.cursor)
    assert after.skip_reason is not None
    assert "no new pause" in (after.skip_reason.skip_message or "")
    assert board.active() == {}, "a resume forgives what the scope sent before it"
