"""The ``webhooks_deliver`` job and its schedule: canonical events out to subscribers.

One op runs :func:`mailers.webhooks_out.delivery.deliver` (new events past each
subscriber's mark, then the retries now due) in the warehouse pool. The schedule, every
minute, runs by default when the config has any subscriber, and is stopped otherwise.
(No ``from __future__ import annotations``: Dagster reads the op's annotations.)
"""

import dagster as dg

from adapters.webhooks_out import HttpxTransport
from mailers.config import Settings
from mailers.webhooks_out.delivery import deliver
from orchestration.defs.resources import WAREHOUSE_POOL, MailersResource

WEBHOOKS_JOB = "webhooks_deliver"


@dg.op(pool=WAREHOUSE_POOL, description="Deliver new events and due retries to subscribers.")
def deliver_webhooks(context: dg.OpExecutionContext, mailers: MailersResource) -> None:
    settings = mailers.settings()
    transport = HttpxTransport()
    try:
        with mailers.warehouse(settings) as warehouse:
            report = deliver(warehouse, settings, transport, context.run.run_id)
    finally:
        transport.close()
    for run in report.subscribers:
        context.log.info(
            f"{run.workspace}/{run.subscriber}: "
            + (
                f"skipped, {run.skipped}"
                if run.skipped
                else f"{run.created} new messages, {run.delivered} delivered, "
                f"{run.retrying} to retry, {run.dead_lettered} dead-lettered"
                + (", DISABLED" if run.disabled else "")
            )
        )
    if report.errors:
        raise dg.Failure("; ".join(report.errors))


@dg.job(name=WEBHOOKS_JOB, description="Canonical events out to the webhook subscribers.")
def webhooks_deliver() -> None:
    deliver_webhooks()


def webhooks_definitions(settings: Settings) -> dg.Definitions:
    """The job, and a schedule every minute (running when any subscriber is configured)."""
    configured = any(ws.webhook_subscribers for ws in settings.config.workspaces.values())
    schedule = dg.ScheduleDefinition(
        name="webhooks_deliver_every_minute",
        job=webhooks_deliver,
        cron_schedule="* * * * *",
        default_status=(
            dg.DefaultScheduleStatus.RUNNING if configured else dg.DefaultScheduleStatus.STOPPED
        ),
    )
    return dg.Definitions(jobs=[webhooks_deliver], schedules=[schedule])
