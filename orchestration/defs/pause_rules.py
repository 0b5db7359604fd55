"""The ``pause_rules`` sensor: automatic pauses on hard-bounce and complaint rates."""

from __future__ import annotations

import json

import dagster as dg

from mailers.config import Settings
from mailers.pause_rules import pause_line
from orchestration.rules import check_rules


def rules_definitions(settings: Settings) -> dg.Definitions:
    """The sensor that evaluates the pause rules after events land."""
    return dg.Definitions(sensors=[pause_rules_sensor(settings)])


def pause_rules_sensor(settings: Settings) -> dg.SensorDefinition:
    """Evaluate every workspace's rules (loaded and landed feedback) and pause what trips.

    It launches no run: a trip is a control record any process may write. The cursor
    keeps the warnings already alerted. Running by default: a safety net should not need
    turning on.
    """

    @dg.sensor(
        name="pause_rules",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Pause a stream, identity or account automatically when its hard-bounce "
        "or complaint rate crosses its pause level.",
    )
    def pause_rules(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        alerted = set(json.loads(context.cursor)) if context.cursor else set()
        outcome = check_rules(settings, alerted)
        if isinstance(outcome, str):
            return dg.SensorResult(skip_reason=outcome)
        for pause in outcome.pauses:
            context.log.error(pause_line(pause))
        paused = "; ".join(pause_line(p) for p in outcome.pauses)
        return dg.SensorResult(
            skip_reason=paused or f"no new pause ({len(outcome.findings)} finding(s))",
            cursor=json.dumps(sorted(alerted)),
        )

    return pause_rules
