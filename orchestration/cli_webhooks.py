"""``mailers webhooks``: canonical events out to the workspaces' webhook subscribers.

``deliver`` runs one delivery (new events past each subscriber's mark, then due retries);
``replay`` delivers a window of a subscriber's events again, as new deliveries marked
replay; ``status`` shows each subscriber's mark, pending retries, dead letters, whether it
is disabled and its last attempt; ``enable`` re-enables a subscriber disabled for failing.
Errors name the workspace and subscriber (and a secret's variable), never a secret.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from adapters.warehouses import OpenWarehouse, describe_warehouse, open_warehouse, warehouse_exists
from adapters.webhooks_out import HttpxTransport
from mailers.alerts import Alerter
from mailers.clock import now, utcnow
from mailers.config import Settings
from mailers.errors import MailersError
from mailers.tables import ensure_tables
from mailers.webhooks_out import delivery, state
from mailers.webhooks_out.delivery import DeliveryReport
from orchestration.cli_common import (
    ActorOption,
    ConfigOption,
    actor_of,
    console,
    errors,
    settings_of,
)

webhooks_app = typer.Typer(
    no_args_is_help=True, help="Canonical webhooks out: deliver, replay, status, enable."
)

SubscriberArgument = Annotated[
    str, typer.Argument(help="The subscriber: NAME, or WORKSPACE/NAME when names repeat.")
]


def _run_id(kind: str) -> str:
    return f"cli-{kind}-{uuid.uuid4().hex[:12]}"


def _fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(f"[red]{message}[/red]", highlight=False)
    return typer.Exit(code)


@contextmanager
def _warehouse(settings: Settings) -> Iterator[OpenWarehouse]:
    with open_warehouse(settings) as warehouse:
        ensure_tables(warehouse)
        yield warehouse


def _alerter(settings: Settings) -> Any:
    def alert_for(workspace: str) -> Alerter:
        webhook = settings.config.workspaces[workspace].pause_rules.alert_webhook
        return Alerter(webhook, line=lambda level, line: errors.print(line, highlight=False))

    return alert_for


def _print(report: DeliveryReport) -> None:
    for run in report.subscribers:
        label = f"{run.workspace}/{run.subscriber}"
        if run.skipped:
            console.print(f"{label}: skipped, {run.skipped}", highlight=False)
        elif run.error:
            errors.print(f"[red]{label}: {run.error}[/red]", highlight=False)
        else:
            console.print(
                f"{label}: {run.events} events in {run.created} new messages; "
                f"{run.delivered} delivered, {run.retrying} to retry, "
                f"{run.dead_lettered} dead-lettered" + ("; DISABLED" if run.disabled else ""),
                highlight=False,
            )


@webhooks_app.command("deliver")
def deliver_command(
    config: ConfigOption = None,
    subscriber: Annotated[
        str | None, typer.Option(help="Only this subscriber (NAME or WORKSPACE/NAME).")
    ] = None,
) -> None:
    """Deliver new events to every enabled subscriber and re-send the retries now due."""
    settings = settings_of(config)
    transport = HttpxTransport()
    try:
        with _warehouse(settings) as warehouse:
            report = delivery.deliver(
                warehouse,
                settings,
                transport,
                _run_id("deliver"),
                only=subscriber,
                alert_for=_alerter(settings),
            )
    except MailersError as err:
        raise _fail(str(err)) from err
    finally:
        transport.close()
    _print(report)
    if report.errors:
        raise typer.Exit(1)


@webhooks_app.command("replay")
def replay_command(
    subscriber: SubscriberArgument,
    since: Annotated[datetime, typer.Option(help="Events that occurred from (UTC).")],
    until: Annotated[
        datetime | None, typer.Option(help="…until, excluded (UTC; default: now).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Deliver a window of a subscriber's events again, as new deliveries marked replay."""
    settings = settings_of(config)
    end = until or now()
    transport = HttpxTransport()
    try:
        with _warehouse(settings) as warehouse:
            report = delivery.replay(
                warehouse,
                settings,
                transport,
                _run_id("replay"),
                subscriber,
                _utc(since),
                _utc(end),
            )
    except MailersError as err:
        raise _fail(str(err)) from err
    finally:
        transport.close()
    _print(report)


@webhooks_app.command("status")
def status_command(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Each subscriber: mark, pending retries, dead letters, disabled, last attempt."""
    settings = settings_of(config)
    if not warehouse_exists(settings):
        raise _fail(f"no warehouse at {describe_warehouse(settings)}")
    moment = utcnow()
    found = []
    try:
        with open_warehouse(settings, read_only=True) as warehouse:
            for sub in delivery.subscribers(settings):
                mark = state.mark(warehouse, sub.workspace, sub.name)
                control = state.control(warehouse, sub.workspace, sub.name)
                found.append(
                    {
                        "workspace": sub.workspace,
                        "subscriber": sub.name,
                        "url": sub.config.url,
                        "enabled": sub.config.enabled and not control.disabled,
                        "disabled_at": control.at if control.disabled else None,
                        "disabled_reason": control.reason if control.disabled else None,
                        "mark": None if mark is None else f"{mark.ingested_at} {mark.event_id}",
                        **state.summary(warehouse, sub.workspace, sub.name, moment),
                    }
                )
    except MailersError as err:
        raise _fail(str(err)) from err
    if as_json:
        for row in found:
            typer.echo(json.dumps(row, default=str, sort_keys=True))
        return
    table = Table("subscriber", "state", "mark", "retries", "unsent", "dead", "last attempt")
    for row in found:
        last = row["last_attempt"]
        table.add_row(
            f"{row['workspace']}/{row['subscriber']}",
            "enabled" if row["enabled"] else f"disabled {row['disabled_at'] or '(config)'}",
            row["mark"] or "-",
            str(row["pending_retries"]),
            str(row["not_yet_sent"]),
            str(row["dead_letters"]),
            "-"
            if last is None
            else f"{last['attempted_at']:%Y-%m-%d %H:%M:%S} {last['status']} "
            f"{last['response_code'] or last['error']}",
        )
    console.print(table)


@webhooks_app.command("enable")
def enable_command(
    subscriber: SubscriberArgument, config: ConfigOption = None, actor: ActorOption = None
) -> None:
    """Enable a subscriber disabled for failing (audited); it continues from its mark."""
    settings = settings_of(config)
    try:
        (sub,) = delivery.subscribers(settings, subscriber)
        with _warehouse(settings) as warehouse:
            done = delivery.enable(
                warehouse, settings, subscriber, actor_of(actor), _run_id("enable")
            )
    except MailersError as err:
        raise _fail(str(err)) from err
    if not sub.config.enabled:
        console.print(f"{sub.label}: disabled in the config (set enabled: true)", highlight=False)
    elif done:
        console.print(f"{sub.label}: enabled (deliveries resume from its mark)", highlight=False)
    else:
        console.print(f"{sub.label}: not disabled, nothing to do", highlight=False)


def _utc(moment: datetime) -> datetime:
    """A command-line time (naive: UTC) as an aware UTC instant."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
