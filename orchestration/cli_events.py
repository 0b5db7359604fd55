"""``mailers events``: fetch missing provider feedback into the landing zone.

``backfill`` asks the providers' events APIs for the windows of messages still without a
final event (:mod:`mailers.backfill`) and lands what they answer; the next ingestion
(the events sensor, or any run of the pipeline) loads it, dropping events already stored.
It reads the warehouse only (opened read-only), so it runs beside a live pipeline.
``replay`` re-normalizes stored events after a mapping fix (:mod:`.cli_events_replay`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from adapters.providers.registry import backfill_targets
from adapters.warehouses import describe_warehouse, open_warehouse, warehouse_exists
from mailers.backfill import backfill_into_landing, open_windows
from orchestration.cli_common import ConfigOption, console, errors, settings_of
from orchestration.cli_events_replay import replay

events_app = typer.Typer(
    no_args_is_help=True, help="Provider events: backfill missing feedback, replay stored ones."
)
events_app.command()(replay)


@events_app.command()
def backfill(
    config: ConfigOption = None,
    account: Annotated[
        list[str] | None,
        typer.Option("--account", "-a", help="Only this provider account (repeatable)."),
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(help="Messages handed over since (UTC; default: backfill_max_age_hours)."),
    ] = None,
) -> None:
    """Fetch the events of messages without a final event from the providers' events APIs."""
    settings = settings_of(config)
    known = {name for ws in settings.config.workspaces.values() for name in ws.provider_accounts}
    unknown = sorted(set(account or ()) - known)
    if unknown:
        errors.print(f"[red]unknown provider account {', '.join(unknown)}[/red]", highlight=False)
        raise typer.Exit(2)
    if not warehouse_exists(settings):
        errors.print(f"[red]no warehouse at {describe_warehouse(settings)}[/red]", highlight=False)
        raise typer.Exit(2)
    moment = since.replace(tzinfo=None) if since else None  # the ledger's times are naive UTC
    with open_warehouse(settings, read_only=True) as warehouse:
        windows = open_windows(
            warehouse, settings.config.completeness, accounts=account, since=moment
        )
    targets = backfill_targets(settings, account)
    report = backfill_into_landing(settings.landing_dir, targets, windows)
    asked = {t.account for t in targets}
    for window in windows:
        how = "asked" if window.provider_account in asked else "no events API to ask"
        console.print(
            f"{window.provider_account} {window.day}: {window.messages} messages without a "
            f"final event ({how})"
        )
    for name, count in sorted(report.fetched.items()):
        console.print(f"{name}: {count} events landed")
    console.print(
        f"backfilled {report.total} events into {settings.landing_dir} "
        "(the next ingestion loads the ones not stored yet)"
    )
    for name, error in sorted(report.errors.items()):
        errors.print(f"[red]{name}: {error}[/red]", highlight=False)
    if report.errors:
        raise typer.Exit(1)
