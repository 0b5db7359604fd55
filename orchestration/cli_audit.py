"""``mailers audit``: verify the audit log's hash chains, export their heads, and list the
changes to sending identities the send runs detected.

All three only read the warehouse (opened read-only).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from adapters.warehouses import OpenWarehouse, describe_warehouse, open_warehouse, warehouse_exists
from mailers import clock
from mailers.audit import AUDIT_TABLE
from mailers.audit_verify import (
    ChainReport,
    HeadsFileError,
    check_against,
    export_heads,
    verify_chains,
)
from mailers.config import Settings
from mailers.errors import MailersError
from mailers.identity_changes import IDENTITY_CHANGES_TABLE
from mailers.warehouse import MAILERS_SCHEMA
from orchestration.cli_common import ConfigOption, console, errors, settings_of

audit_app = typer.Typer(
    no_args_is_help=True, help="The audit log: verify its hash chains, export heads, changes."
)
WorkspaceOption = Annotated[
    str | None,
    typer.Option("--workspace", "-w", help="Only this workspace ('*': records without one)."),
]


def _open(settings: Settings) -> OpenWarehouse:
    """The warehouse, read-only; exit 2 naming the file when there is none (or no chain)."""
    where = describe_warehouse(settings)
    if not warehouse_exists(settings):
        errors.print(f"[red]no warehouse at {where}[/red] (run `mailers demo` or a send first)")
        raise typer.Exit(2)
    try:
        warehouse = open_warehouse(settings, read_only=True)
    except MailersError as err:
        errors.print(f"[red]{err}[/red]", highlight=False)
        raise typer.Exit(2) from err
    columns = warehouse.columns(MAILERS_SCHEMA, AUDIT_TABLE)
    if columns is None or "row_hash" not in columns:
        warehouse.close()
        what = "no audit log" if columns is None else "an audit log from before the hash chain"
        errors.print(
            f"[red]{where} has {what}[/red]: any command that writes the warehouse "
            "(a send, `mailers reconcile`, `mailers demo`) creates or chains it",
            highlight=False,
        )
        raise typer.Exit(2)
    return warehouse


def _verified(settings: Settings, workspace: str | None) -> list[ChainReport]:
    with _open(settings) as warehouse:
        return verify_chains(warehouse, workspace)


def _print_reports(reports: list[ChainReport]) -> None:
    """One line per chain: state, workspace, rows, head seq and hash (the full hash, to copy)."""
    for r in reports:
        state = "OK" if r.ok else "BROKEN"
        console.print(
            f"{state}  workspace {r.chain}  rows {r.rows}  head seq {r.head_seq}  {r.head_hash}",
            style=None if r.ok else "red",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


@audit_app.command("verify")
def verify(
    workspace: WorkspaceOption = None,
    against: Annotated[
        Path | None,
        typer.Option(
            "--against",
            help="A heads file from `mailers audit head --json`: check it is a "
            "prefix of the chains (nothing at or before it rewritten or deleted).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Recompute every chain; name the first broken row of each (exit 1 if any)."""
    settings = settings_of(config)
    exported: dict[str, Any] | None = None
    if against is not None:
        try:
            exported = json.loads(against.read_text())
        except (OSError, ValueError) as err:
            errors.print(f"[red]cannot read heads file {against}: {err}[/red]", highlight=False)
            raise typer.Exit(2) from err
    with _open(settings) as warehouse:
        reports = verify_chains(warehouse, workspace)
        try:
            verdicts = {} if exported is None else check_against(warehouse, exported, workspace)
        except HeadsFileError as err:
            errors.print(f"[red]{against}: {err}[/red]", highlight=False)
            raise typer.Exit(2) from err
    if not reports and workspace is not None:
        errors.print(f"[yellow]no audit records for workspace {workspace!r}[/yellow]")
    _print_reports(reports)
    failed = False
    for r in reports:
        if r.broken is not None:
            failed = True
            b = r.broken
            errors.print(
                f"[red]BROKEN[/red] workspace {b.chain}: first broken row seq "
                f"{b.seq if b.seq is not None else '-'}, audit_id {b.audit_id}: "
                f"{b.problem}: {b.explanation}",
                highlight=False,
            )
    for chain, problem in verdicts.items():
        if problem is None:
            console.print(f"[green]OK[/green] workspace {chain}: the exported head is in the chain")
        else:
            failed = True
            errors.print(
                f"[red]REWRITTEN[/red] workspace {chain} (against {against}): {problem}",
                highlight=False,
            )
    if failed:
        raise typer.Exit(1)


@audit_app.command("head")
def head(
    workspace: WorkspaceOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the heads file `verify --against` reads.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Each chain's head (seq and hash), to keep elsewhere; refuses a broken chain."""
    settings = settings_of(config)
    reports = _verified(settings, workspace)
    broken = [r for r in reports if r.broken is not None]
    if broken:
        names = ", ".join(r.chain for r in broken)
        errors.print(
            f"[red]not exporting: chain(s) {names} do not verify[/red] "
            "(see `mailers audit verify`)",
            highlight=False,
        )
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(export_heads(reports, clock.now()), indent=2, sort_keys=True))
        return
    for r in reports:
        console.print(f"{r.chain}\tseq {r.head_seq}\t{r.head_hash}", highlight=False)


@audit_app.command("changes")
def changes(
    workspace: WorkspaceOption = None,
    since: Annotated[
        datetime | None,
        typer.Option("--since", help="Only changes detected on or after this date or time (UTC)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    config: ConfigOption = None,
) -> None:
    """Changes to sending identities, accounts and routes detected at the start of sends."""
    settings = settings_of(config)
    filters: list[str] = []
    params: list[Any] = []
    if workspace is not None:
        filters.append("workspace = ?")
        params.append(workspace)
    if since is not None:
        filters.append("detected_at >= ?")
        # Warehouse timestamps are naive UTC (mailers.clock).
        params.append(since.astimezone(UTC).replace(tzinfo=None) if since.tzinfo else since)
    where = f"where {' and '.join(filters)}" if filters else ""
    with _open(settings) as warehouse:
        if warehouse.columns(MAILERS_SCHEMA, IDENTITY_CHANGES_TABLE) is None:
            rows: list[dict[str, Any]] = []
        else:
            rows = warehouse.query(
                f"select detected_at, workspace, subject_kind, subject_name, field, change, "
                f"before, after, run_id, actor, config_hash "
                f"from {warehouse.relation(MAILERS_SCHEMA, IDENTITY_CHANGES_TABLE)} {where} "
                "order by generation, workspace, subject_kind, subject_name, field",
                params,
            ).to_pylist()
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, default=str, sort_keys=True))
        return
    # One line per change, not a table: route values are long JSON and a table wraps them.
    for row in rows:
        console.print(
            f"{row['detected_at']:%Y-%m-%d %H:%M:%S}  {row['workspace']}  "
            f"{row['subject_kind']} {row['subject_name']}  {row['field']}  {row['change']}: "
            f"{row['before'] or '-'} -> {row['after'] or '-'}  (run {row['run_id']}, "
            f"{row['actor']})",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if not rows:
        console.print("no identity changes recorded")
