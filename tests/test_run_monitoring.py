"""A killed run never blocks the next: with the shipped instance config, run monitoring fails
a run whose process was SIGKILLed while it held the ``mailers_warehouse`` slot, frees the
slot, and the next run completes.

The killed run is a real process executing a job in-process against a real (SQLite)
instance under a temporary ``DAGSTER_HOME``; monitoring is the daemon's own iteration
(``MonitoringDaemon.run_iteration``), run by the test instead of on a timer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.launcher import WorkerStatus
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster._daemon.daemon import MonitoringDaemon

from orchestration.defs.resources import WAREHOUSE_POOL
from orchestration.monitoring import MailersRunLauncher, process_alive
from tests.conftest import REPO

SHIPPED = REPO / ".dagster" / "dagster.yaml"
FREE_SLOTS_AFTER_SECONDS = 1
"""The test's free-slots delay (the shipped one is asserted bounded separately)."""


@dg.asset(pool=WAREHOUSE_POOL)
def holds_the_warehouse() -> None:
    """Takes the pool slot, says so through the marker file, then works until killed."""
    Path(os.environ["MARKER"]).write_text("holding")
    time.sleep(600)


@dg.asset(pool=WAREHOUSE_POOL)
def next_writer() -> None:
    """A normal run's step in the same pool."""


defs = dg.Definitions(
    assets=[holds_the_warehouse, next_writer],
    jobs=[
        dg.define_asset_job("killed", selection=[holds_the_warehouse]),
        dg.define_asset_job("normal", selection=[next_writer]),
    ],
    executor=dg.in_process_executor,
)


def run_job(name: str) -> None:
    """Run a job of :data:`defs` in this process on the ``DAGSTER_HOME`` instance."""
    with dg.DagsterInstance.get() as instance:
        defs.resolve_job_def(name).execute_in_process(instance=instance)


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = yaml.safe_load(SHIPPED.read_text())
    config["run_monitoring"]["free_slots_after_run_end_seconds"] = FREE_SLOTS_AFTER_SECONDS
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    yield home


def _claims(instance: dg.DagsterInstance) -> list[str]:
    info = instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
    return [slot.run_id for slot in info.claimed_slots]


def _until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        time.sleep(1)


def test_the_shipped_config_monitors_runs_and_frees_slots_in_bounded_time() -> None:
    config = yaml.safe_load(SHIPPED.read_text())
    monitoring = config["run_monitoring"]
    assert config["run_launcher"] == {
        "module": "orchestration.monitoring",
        "class": "MailersRunLauncher",
    }
    assert monitoring["enabled"] is True and monitoring["max_resume_run_attempts"] == 0
    assert 0 < monitoring["poll_interval_seconds"] <= 60
    assert 0 < monitoring["free_slots_after_run_end_seconds"] <= 60
    assert 0 < monitoring["start_timeout_seconds"] <= 300
    assert 0 < monitoring["cancel_timeout_seconds"] <= 300
    assert config["concurrency"]["pools"]["default_limit"] == 1


def test_a_run_killed_holding_the_pool_slot_is_failed_and_the_next_run_completes(
    dagster_home: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    worker = subprocess.Popen(
        [sys.executable, "-c", "from tests.test_run_monitoring import run_job; run_job('killed')"],
        cwd=REPO,
        env={**os.environ, "MARKER": str(marker)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _until(marker.exists, 180, "the run to take the pool slot")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=60)

    with dg.DagsterInstance.get() as instance:
        (killed,) = instance.get_runs()
        assert killed.status == dg.DagsterRunStatus.STARTED
        assert _claims(instance) == [killed.run_id]  # what blocked every later run

        daemon = MonitoringDaemon(interval_seconds=instance.run_monitoring_poll_interval_seconds)
        with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as workspace:

            def monitored_until_free() -> bool:
                errors = [e for e in daemon.run_iteration(workspace) if e is not None]
                assert errors == []
                return not _claims(instance)

            _until(monitored_until_free, 60, "monitoring to free the dead run's slot")

        failed = instance.get_run_by_id(killed.run_id)
        assert failed is not None and failed.status == dg.DagsterRunStatus.FAILURE
        messages = [e.message for e in instance.all_logs(killed.run_id) if e.message]
        assert any(f"run worker process {worker.pid} is gone" in m for m in messages)

        normal = defs.resolve_job_def("normal").execute_in_process(instance=instance)
        assert normal.success
        assert _claims(instance) == []


def test_a_live_worker_is_healthy_and_a_dead_or_zombie_one_is_not(dagster_home: Path) -> None:
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_launcher, MailersRunLauncher)
        result = defs.resolve_job_def("normal").execute_in_process(instance=instance)
        run = instance.get_run_by_id(result.run_id)
        assert run is not None
        # This process logged the run's start and is alive.
        health = instance.run_launcher.check_run_worker_health(run)
        assert health.status == WorkerStatus.RUNNING

    reaped = subprocess.Popen([sys.executable, "-c", "pass"])
    reaped.wait(timeout=60)
    zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        zombie.send_signal(signal.SIGKILL)
        _until(lambda: not process_alive(zombie.pid, started_by=time.time()), 30, "the zombie")
    finally:
        zombie.wait(timeout=60)
    assert not process_alive(reaped.pid, started_by=time.time())
    assert not process_alive(os.getpid(), started_by=time.time() - 24 * 3600)  # a newcomer
