"""``mailers events replay``: re-normalize stored events after a provider mapping fix.

Parses the stored raw payloads of the events that occurred in the window again with
today's provider mappings (:mod:`mailers.events_replay`): unchanged events keep their ids
and append nothing, changed and re-identified ones are appended (and their suppressions
added). It writes the warehouse, so it needs the warehouse's lock (no run in progress).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, NoReturn

import typer

from adapters.providers.registry import event_parser
from adapters.warehouses import describe_warehouse, open_warehouse, warehouse_exists
from mailers.errors import WarehouseBusy
from mailers.events_replay import ReplayWindow, replay_events
from mailers.tables import ensure_tables
from orchestration.cli_common import (
    ActorOption,
    ConfigOption,
    actor_of,
    console,
    errors,
    settings_of,
)

REPORTED = ("scanned", "unchanged", "changed", "superseded", "failed", "suppressions_added")


def replay(
    since: Annotated[
        datetime,
        typer.Option(help="Replay events that occurred at or after this time (UTC)."),
    ],
    until: Annotated[
        datetime | None,
        typer.Option(help="... and before this time (UTC; default: no end)."),
    ] = None,
    account: Annotated[
        str | None, typer.Option("--account", "-a", help="Only this provider account.")
    ] = None,
    config: ConfigOption = None,
    actor: ActorOption = None,
) -> None:
    """Re-normalize stored events' raw payloads with today's provider mappings."""
    settings = settings_of(config)
    known = {name for ws in settings.config.workspaces.values() for name in ws.provider_accounts}
    if account is not None and account not in known:
        names = ", ".join(sorted(known))
        _fail(f"--account: unknown provider account {account!r} (known: {names})")
    try:
        window = ReplayWindow(
            since=_utc(since), until=_utc(until) if until else None, account=account
        )
    except ValueError as err:
        _fail(f"--until: {err}")
    if not warehouse_exists(settings):
        _fail(f"no warehouse at {describe_warehouse(settings)}")
    try:
        warehouse = open_warehouse(settings)
    except WarehouseBusy as err:
        _fail(f"{err} (a run holds the warehouse: replay when it is done)")
    with warehouse:
        ensure_tables(warehouse)
        report = replay_events(
            warehouse,
            event_parser,
            window,
            actor=actor_of(actor),
            config_hash=settings.config_hash,
        )
    console.print(f"replay {report.replay_id}")
    for name in REPORTED:
        console.print(f"{name}: {report.counts[name]}")
    for failure in report.failures:
        errors.print(f"[yellow]kept as stored: {failure}[/yellow]", highlight=False)


def _utc(moment: datetime) -> datetime:
    """Naive UTC, as the warehouse holds times; an aware time is converted."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _fail(message: str) -> NoReturn:
    errors.print(f"[red]{message}[/red]", highlight=False)
    raise typer.Exit(2)
