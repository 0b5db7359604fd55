"""``mailers pause``, ``mailers resume`` and ``mailers pauses``: work while a send runs.

A pause or resume is durable when the command returns (a control record fsync'd in the
data directory, :mod:`mailers.control`), and a running send sees it before its next
provider call. The record is loaded into ``mailers.pauses`` and the audit log at once when
no send holds the warehouse, else by that send when it ends.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from adapters.control_load import load_control_now
from mailers.config import Settings
from mailers.pauses import Pause, PauseBoard, PauseError, PauseScope
from orchestration.cli_common import (
    ActorOption,
    ConfigOption,
    actor_of,
    console,
    errors,
    settings_of,
)

ScopeArgument = Annotated[
    str,
    typer.Argument(
        help="WORKSPACE, or LEVEL:WORKSPACE.NAME with LEVEL stream, campaign, identity or "
        "account (e.g. stream:acme.lifecycle, account:acme.acme_sandbox_a)."
    ),
]
ReasonOption = Annotated[str, typer.Option(help="Why (required; goes into the audit log).")]


def register(app: typer.Typer) -> None:
    """Add the pause commands to the ``mailers`` app."""
    app.command()(pause)
    app.command()(resume)
    app.command()(pauses)


def pause(
    scope: ScopeArgument,
    reason: ReasonOption,
    config: ConfigOption = None,
    actor: ActorOption = None,
) -> None:
    """Pause sending for a scope: a running send stops it before its next provider call.

    What is in flight when the pause is written (at most one batch per provider account)
    finishes and is recorded; every other message of the scope is recorded ``paused`` and
    sent by a run after ``mailers resume``. A pause never reroutes mail to another account.
    """
    settings = settings_of(config)
    board = PauseBoard(settings.data_dir)
    target = _scope(scope, settings)
    try:
        held, new = board.pause(
            target, actor=actor_of(actor), reason=reason, config_hash=settings.config_hash
        )
    except PauseError as err:
        errors.print(f"[red]cannot pause[/red]: {err}", highlight=False)
        raise typer.Exit(2) from err
    if not new:
        console.print(f"already paused: {held.describe()}", highlight=False)
        return
    console.print(f"[bold]paused[/bold] {held.describe()}", highlight=False)
    console.print(
        "a running send stops this scope before its next provider call; what it already "
        "handed over (at most one batch per account) is recorded as it ends",
        highlight=False,
    )
    _report_loading(settings)


def resume(
    scope: ScopeArgument,
    reason: ReasonOption,
    config: ConfigOption = None,
    actor: ActorOption = None,
) -> None:
    """Lift the pause of a scope (an automatic pause too: you are the person resuming it).

    Messages it held stay ``paused`` in the ledger until a run of their window sends them:
    the ``paused_resumed`` sensor launches it, or run the campaign's send job.
    """
    settings = settings_of(config)
    board = PauseBoard(settings.data_dir)
    target = _scope(scope, settings)
    try:
        lifted = board.resume(
            target,
            actor=actor_of(actor),
            reason=reason,
            config_hash=settings.config_hash,
            by_person=True,
        )
    except PauseError as err:
        errors.print(f"[red]cannot resume[/red]: {err}", highlight=False)
        raise typer.Exit(2) from err
    console.print(f"[bold]resumed[/bold] {target} (was: {lifted.describe()})", highlight=False)
    _report_loading(settings)


def pauses(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the active pauses (read from the data directory: works while a send runs)."""
    settings = settings_of(config)
    active = sorted(PauseBoard(settings.data_dir).active().values(), key=_order)
    if as_json:
        typer.echo(json.dumps({p.scope.key: p.to_state() for p in active}, indent=2))
        return
    if not active:
        console.print("nothing is paused")
        return
    table = Table(title="Active pauses")
    for column in ("scope", "since (UTC)", "by", "kind", "reason", "resume with"):
        table.add_column(column)
    for p in active:
        table.add_row(
            p.scope.key,
            f"{p.paused_at:%Y-%m-%d %H:%M:%S}",
            p.actor,
            "automatic" if p.automatic else "manual",
            p.reason,
            f"mailers resume {p.scope.key} --reason ...",
        )
    console.print(table)


def _order(pause: Pause) -> tuple[str, str]:
    return pause.scope.key, pause.control_id


def _scope(text: str, settings: Settings) -> PauseScope:
    try:
        return PauseScope.parse(text, settings.config)
    except PauseError as err:
        errors.print(f"[red]unknown scope[/red]: {err}", highlight=False)
        raise typer.Exit(2) from err


def _report_loading(settings: Settings) -> None:
    loaded = load_control_now(settings)
    if loaded is None:
        console.print(
            "a running send holds the warehouse: the record is durable in "
            f"{settings.data_dir / 'control'} and lands in mailers.pauses and the audit log "
            "when that send ends",
            highlight=False,
        )
    else:
        console.print(f"recorded in mailers.pauses and the audit log ({loaded} record(s))")
