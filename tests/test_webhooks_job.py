"""The ``webhooks_deliver`` Dagster job, executed in process, delivers to a loopback
subscriber; its schedule runs by default only when a subscriber is configured."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.clock import FixedClock
from orchestration.defs.build import build_definitions
from tests.webhook_receiver import (
    SECRET_NEW,
    add_events,
    always,
    event_rows,
    receiving,
    settings_with,
    subscriber,
)


def test_the_job_delivers_and_the_schedule_runs_when_subscribers_exist(
    tmp_path: Path, fixed_clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_KEY", SECRET_NEW)
    with receiving(always(200)) as receiver:
        settings = settings_with(tmp_path, {"crm": subscriber(receiver.url, batch_size=2)})
        with DuckDBWarehouse(settings.warehouse_path) as warehouse:
            add_events(warehouse, event_rows(3))
        definitions = build_definitions(str(settings.path))
        result = definitions.resolve_job_def("webhooks_deliver").execute_in_process(
            instance=dg.DagsterInstance.ephemeral()
        )
        assert result.success
        assert receiver.accepted_event_ids() == ["ev-000000", "ev-000001", "ev-000002"]
    with DuckDBWarehouse(settings.warehouse_path, read_only=True) as warehouse:
        (row,) = warehouse.query(
            "select count(distinct run_id) as runs, count(*) as attempts "
            "from mailers.webhook_attempts"
        ).to_pylist()
    assert row == {"runs": 1, "attempts": 2}
    schedule = definitions.resolve_schedule_def("webhooks_deliver_every_minute")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING

    monkeypatch.delenv("HOOK_KEY")
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        add_events(warehouse, event_rows(1, start=3))
    failed = definitions.resolve_job_def("webhooks_deliver").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.is_step_failure]
    assert "acme/crm" in str(failure.event_specific_data) and "HOOK_KEY" in str(
        failure.event_specific_data
    )
