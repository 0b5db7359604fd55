"""The ``pause_or_resume`` job (the Dagster launchpad's pause): a person may lift an
automatic pause, a sensor or schedule may not."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from mailers.config import Settings
from mailers.pauses import PauseBoard, PauseScope
from orchestration.defs.build import build_definitions
from tests.conftest import query


def _launch(settings: Settings, action: str, tags: dict[str, str]) -> dg.ExecuteInProcessResult:
    job = build_definitions(str(settings.path)).resolve_job_def("pause_or_resume")
    config = {"action": action, "scope": "stream:globex.lifecycle", "reason": "list cleaned"}
    return job.execute_in_process(
        run_config={"ops": {"pause_or_resume_scope": {"config": config}}},
        instance=dg.DagsterInstance.ephemeral(),
        tags=tags,
        raise_on_error=False,
    )


def test_only_a_person_resumes_an_automatic_pause_from_dagster(
    core_project: Callable[..., Settings],
) -> None:
    settings = core_project()
    board = PauseBoard(settings.data_dir)
    scope = PauseScope.parse("stream:globex.lifecycle", settings.config)
    board.pause(
        scope, actor="rule:pause_rules", reason="hard bounce 5%", config_hash="h", automatic=True
    )

    by_sensor = _launch(settings, "resume", {"dagster/sensor_name": "some_sensor"})
    assert not by_sensor.success
    failure = next(e for e in by_sensor.all_events if e.is_step_failure)
    assert "only by a person" in str(failure.step_failure_data.error)
    assert scope.key in board.active()

    by_person = _launch(settings, "resume", {"mailers/actor": "dagster:user:alice"})
    assert by_person.success
    assert board.active() == {}
    # The resume names the person in the durable record (loaded at once: nothing runs).
    rows = query(
        settings, "select action, actor, automatic from mailers.pauses order by recorded_at"
    )
    assert [(r["action"], r["actor"]) for r in rows] == [
        ("pause", "rule:pause_rules"),
        ("resume", "dagster:user:alice"),
    ]

    again = _launch(settings, "pause", {})
    assert again.success and scope.key in board.active()
