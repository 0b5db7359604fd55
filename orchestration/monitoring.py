"""The run launcher ``.dagster/dagster.yaml`` names: Dagster's default one, plus the health
check that lets run monitoring fail a run whose process died.

Dagster's ``DefaultRunLauncher`` cannot say whether a run's worker is alive, so with it run
monitoring never notices a run whose process was killed (SIGKILL, OOM, a closed laptop): the
run stays STARTED and keeps its ``mailers_warehouse`` pool slot, and every later run waits
behind it. A Mailers run executes in one process (the in-process executor) on the machine
that holds the DuckDB file, which is also where ``dagster dev`` runs the daemon; so the run's
worker is the process that logged its start, and when that process is gone the run is dead.
Run monitoring then marks it failed (``max_resume_run_attempts: 0``: there is nothing to
resume into), and ``free_slots_after_run_end_seconds`` frees the slots it held.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

START_SLACK_SECONDS = 2.0
"""How much later than the run's start its worker may seem to have started (clock rounding
of ``/proc``); a process that started later is another one that reuses a dead worker's pid."""


class MailersRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` whose run workers run monitoring can check on this machine."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        """RUNNING while the process that logged the run's start lives, else FAILED."""
        starts = self._instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_START)
        worker = starts[-1] if starts else None
        pid = worker.dagster_event.pid if worker and worker.dagster_event else None
        if worker is None or pid is None:
            # Nothing to check yet; the start timeout covers runs that never start.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run start not logged yet")
        if process_alive(pid, started_by=worker.timestamp):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker {pid} is alive")
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker process {pid} is gone (killed or crashed)"
        )


def process_alive(pid: int, *, started_by: float) -> bool:
    """Whether ``pid`` is a live process that was already running at ``started_by`` (epoch).

    A zombie (killed, not yet reaped by its parent) is dead. Where ``/proc`` exists, a
    process started after ``started_by`` is a newcomer that reused the pid.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, and not ours to judge further
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration):
        return True  # no /proc (macOS): the signal check is all there is
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (command)": state is field 3
    if fields[0] == "Z":
        return False
    started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time
    return started <= started_by + START_SLACK_SECONDS
