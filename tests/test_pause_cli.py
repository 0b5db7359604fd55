"""``mailers pause`` from a second process stops a running Dagster send within one batch;
``mailers resume`` and the ``paused_resumed`` sensor finish the window with no duplicate.

The send is the real sends asset (in-process Dagster run) of ``acme.pro_tips`` on a copy
of the seeded warehouse, paced to 8 messages a second so it runs for about 14 s; the pause
is a real ``mailers`` process started once the first messages left. The sandbox accounts
write one ``.eml`` per accepted message: the count of what left, read right after the
pause command returned and again after the run, is the measured bound.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from adapters.settings import load
from mailers.clock import FixedClock, use_clock
from mailers.config import Settings
from orchestration.defs.build import build_definitions
from orchestration.defs.campaigns import audience_key, sends_key
from orchestration.defs.runs import SEND_WINDOW_TAG
from tests.conftest import eml_files, query, write_config
from tests.test_cli import mailers
from tests.test_pause_send import sent_keys

WINDOW = "2026-11-23T08:00:00Z"
IN_WINDOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PACE = 8
"""Messages per second of the lifecycle stream: a chunk (one provider call) is 8 messages."""


@pytest.fixture(autouse=True)
def _in_window() -> Iterator[None]:
    with use_clock(FixedClock(IN_WINDOW)):
        yield


@pytest.fixture
def settings(tmp_path: Path, seeded_warehouse: Path) -> Settings:
    def paced(config: dict[str, Any]) -> None:
        lifecycle = config["workspaces"]["acme"]["streams"]["lifecycle"]
        lifecycle["policy"] = {"messages_per_second": PACE}

    loaded = load(write_config(tmp_path, paced))
    loaded.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(seeded_warehouse, loaded.warehouse_path)
    return loaded


def _send(settings: Settings, tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
    ref = settings.campaign("acme.pro_tips")
    job = build_definitions(str(settings.path)).resolve_job_def("mailers_pipeline")
    return job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        asset_selection=[audience_key(ref), sends_key(ref)],
        raise_on_error=False,
        tags=tags or {SEND_WINDOW_TAG: WINDOW},
    )


def _failure(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure)


def test_pause_from_another_process_stops_the_send_within_one_batch_and_resume_finishes_it(
    settings: Settings,
) -> None:
    config = str(settings.path)
    seen: dict[str, Any] = {}

    def pause_once_sending() -> None:
        deadline = time.monotonic() + 120
        while len(eml_files(settings)) < PACE and time.monotonic() < deadline:
            time.sleep(0.05)
        seen["before"] = len(eml_files(settings))
        seen["pause"] = mailers(
            "pause", "stream:acme.lifecycle", "--reason", "complaint spike", "-c", config
        )
        seen["at_return"] = len(eml_files(settings))

    pauser = threading.Thread(target=pause_once_sending)
    pauser.start()
    first = _send(settings)
    pauser.join(timeout=180)

    pause = seen["pause"]
    assert pause.returncode == 0, pause.stdout + pause.stderr
    assert "paused" in pause.stdout and "complaint spike" in pause.stdout
    assert "a running send holds the warehouse" in pause.stdout
    statuses = {
        r["status"]: r["n"]
        for r in query(
            settings,
            "select status, count(*) as n from (select *, row_number() over (partition by "
            "message_key order by recorded_at desc) as rn from mailers.send_ledger) "
            "where rn = 1 group by status",
        )
    }
    assert statuses.get("paused", 0) > 0, "the send finished before the pause returned"
    after = len(eml_files(settings))
    # The bound: after `pause` returned, at most the one call in flight (PACE messages).
    leaked = after - seen["at_return"]
    print(
        f"\naccepted before pause: {seen['before']}, when it returned: {seen['at_return']}, "
        f"after the run: {after}; left after the pause returned: {leaked} (bound {PACE})"
    )
    assert 0 <= leaked <= PACE
    assert "dispatching" not in statuses and "unknown" not in statuses

    assert not first.success, "a run that leaves messages paused is not green"
    failure = _failure(first)
    assert f"{statuses['paused']} messages of acme.pro_tips" in failure
    assert "mailers resume stream:acme.lifecycle --reason" in failure

    listed = mailers("pauses", "-c", config)
    assert listed.returncode == 0 and "stream:acme.lifecycle" in listed.stdout
    assert "complaint spike" in listed.stdout
    # The send loaded the pause record into the warehouse as it ended.
    rows = query(settings, "select action, scope, reason from mailers.pauses")
    assert rows == [
        {"action": "pause", "scope": "stream:acme.lifecycle", "reason": "complaint spike"}
    ]

    resumed = mailers(
        "resume", "stream:acme.lifecycle", "--reason", "complaints explained", "-c", config
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "recorded in mailers.pauses" in resumed.stdout
    actions = query(settings, "select action from mailers.pauses order by recorded_at")
    assert [a["action"] for a in actions] == ["pause", "resume"]
    audit = query(
        settings, "select action from mailers.audit_log where action in ('pause', 'resume')"
    )
    assert sorted(a["action"] for a in audit) == ["pause", "resume"]

    defs = build_definitions(config)
    sensor = defs.resolve_sensor_def("paused_resumed")
    with dg.DagsterInstance.ephemeral() as instance:
        evaluation = sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(evaluation, dg.SensorResult)
    requests = evaluation.run_requests or []
    assert len(requests) == 1
    assert requests[0].job_name == "send__acme__pro_tips"
    assert requests[0].tags[SEND_WINDOW_TAG] == WINDOW

    second = _send(settings, dict(requests[0].tags))
    assert second.success, _failure(second)
    keys = sent_keys(settings)
    assert max(keys.values()) == 1, "a message was sent twice"
    final = query(
        settings,
        "select count(*) as n from (select *, row_number() over (partition by message_key "
        "order by recorded_at desc) as rn from mailers.send_ledger) "
        "where rn = 1 and status = 'paused'",
    )
    assert final == [{"n": 0}]
    with dg.DagsterInstance.ephemeral() as instance:
        again = sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(again, dg.SensorResult) and not again.run_requests
