"""The ``pause_or_resume`` job: pause or resume a scope from the Dagster UI's launchpad.

It writes the same durable control record as ``mailers pause`` / ``mailers resume``
(:mod:`mailers.pauses`) and is outside the warehouse pool, so it runs, and a running send
sees it before its next provider call, while that send holds the warehouse. A resume from
this job counts as a person's only when a person launched it (not a schedule or sensor).
"""

from typing import Literal

import dagster as dg
from pydantic import Field

from adapters.control_load import load_control_now
from mailers.pauses import PauseBoard, PauseScope
from orchestration.defs.resources import MailersResource
from orchestration.defs.runs import run_actor

CONTROL_JOB = "pause_or_resume"


class PauseRequest(dg.Config):
    """What to pause or resume, and why."""

    action: Literal["pause", "resume"]
    scope: str = Field(
        description="WORKSPACE or LEVEL:WORKSPACE.NAME (stream, campaign, identity, account)"
    )
    reason: str


@dg.op(description="Pause or resume a scope (durable at once; seen by a running send).")
def pause_or_resume_scope(
    context: dg.OpExecutionContext, config: PauseRequest, mailers: MailersResource
) -> None:
    settings = mailers.settings()
    scope = PauseScope.parse(config.scope, settings.config)
    board = PauseBoard(settings.data_dir)
    actor = run_actor(context)
    if config.action == "pause":
        pause, new = board.pause(
            scope, actor=actor, reason=config.reason, config_hash=settings.config_hash
        )
        context.log.info(("paused: " if new else "already paused: ") + pause.describe())
    else:
        automated = any(t in context.run.tags for t in _AUTOMATED_TAGS)
        lifted = board.resume(
            scope,
            actor=actor,
            reason=config.reason,
            config_hash=settings.config_hash,
            by_person=not automated,
        )
        context.log.info(f"resumed {scope} (was: {lifted.describe()})")
    if load_control_now(settings) is None:
        context.log.info(
            "a running send holds the warehouse: it applies this before its next batch and "
            "loads the record into mailers.pauses when it ends"
        )


_AUTOMATED_TAGS = ("dagster/schedule_name", "dagster/sensor_name", "dagster/backfill")


@dg.job(name=CONTROL_JOB, description="Pause or resume a workspace, stream, campaign, ...")
def pause_or_resume() -> None:
    pause_or_resume_scope()


control_definitions = dg.Definitions(jobs=[pause_or_resume])
