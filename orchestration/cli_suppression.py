"""``mailers suppression``: why an address is blocked, and add, import or remove entries.

``add`` and ``remove`` are control records (:mod:`mailers.control`) first, so they work while
a send holds the DuckDB warehouse: loaded at once when the warehouse can be opened, else by
whoever opens it next (the running send when it ends). ``import`` needs the warehouse.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from adapters.control_load import load_control_now
from adapters.warehouses import OpenWarehouse, describe_warehouse, open_warehouse, warehouse_exists
from mailers.config import Settings
from mailers.control import ControlJournal, ControlRecord, load_control
from mailers.errors import WarehouseBusy
from mailers.suppression import SuppressionError, SuppressionTarget
from mailers.suppression_entries import (
    Entry,
    check_removal,
    entries,
    pending_entries,
    pending_removals,
    request_add,
    request_remove,
    suppression_address,
)
from mailers.suppression_import import ImportReport, import_csv, import_relation
from mailers.tables import ensure_tables
from orchestration.cli_common import (
    ActorOption,
    ConfigOption,
    actor_of,
    console,
    errors,
    settings_of,
)

app = typer.Typer(
    no_args_is_help=True,
    help="Why an address is blocked; add, import or remove suppression entries.",
)
ScopeOption = Annotated[
    str,
    typer.Option("--scope", help="global, workspace:W or stream:W.S (e.g. stream:acme.lifecycle)."),
]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (recorded and audited).")]

LOCKED = (
    "the warehouse is locked by another process (a running send?): control record {id} is "
    "in {dir}; {effect} It is loaded into mailers.suppressions when the send ends (or by the "
    "next command that opens the warehouse)."
)


def _say(text: str, style: str | None = None) -> None:
    # No markup: addresses, reasons and [entry ids] are data, printed verbatim.
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    errors.print(message, style="red", markup=False, highlight=False)
    return typer.Exit(code)


_settings = settings_of


def _target(settings: Settings, scope: str) -> SuppressionTarget:
    try:
        return SuppressionTarget.parse(scope, settings.config)
    except SuppressionError as err:
        raise _fail(str(err), 2) from err


@contextmanager
def _warehouse(settings: Settings, *, read_only: bool = False) -> Iterator[OpenWarehouse | None]:
    """The warehouse, or ``None`` when another process holds its lock (or, for reading, when
    there is none yet)."""
    if read_only and not warehouse_exists(settings):
        yield None
        return
    try:
        warehouse = open_warehouse(settings, read_only=read_only)
    except WarehouseBusy:
        yield None
        return
    with warehouse:
        if not read_only:
            ensure_tables(warehouse)
        yield warehouse


def _load(settings: Settings, journal: ControlJournal, record: ControlRecord, effect: str) -> None:
    loaded = load_control_now(settings)
    if loaded is None:
        _say(
            LOCKED.format(id=record.control_id, dir=journal.pending_dir, effect=effect),
            style="yellow",
        )
        return
    _say(f"loaded {loaded} control record(s) into {describe_warehouse(settings)}")


def _count(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def _since(entry: Entry) -> str:
    return f"{entry.since:%Y-%m-%d %H:%M:%S} UTC"


def _describe(entry: Entry) -> str:
    reason = f": {entry.reason}" if entry.reason else ""
    return (
        f"{entry.target} by {entry.source} ({entry.provenance()}) since {_since(entry)}"
        f"{reason} [entry {entry.suppression_id}]"
    )


@app.command()
def why(
    address: Annotated[str, typer.Argument(help="The address to explain.")],
    workspace: Annotated[
        str | None, typer.Option(help="Only entries that block this workspace.")
    ] = None,
    stream: Annotated[
        str | None, typer.Option(help="Only entries that block this stream (needs --workspace).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Which entries block ADDRESS, and which were lifted.

    Each entry with its scope, source, event (and provider account), file or relation, who
    added it and since when; each lifted one with who removed it and why. Exits 0 either way.
    """
    settings = _settings(config)
    if stream and not workspace:
        raise _fail("--stream needs --workspace", 2)
    try:
        stored = suppression_address(address)
    except SuppressionError as err:
        raise _fail(str(err), 2) from err
    journal = ControlJournal(settings.data_dir)
    with _warehouse(settings, read_only=True) as warehouse:
        if warehouse is None and warehouse_exists(settings):
            _say(
                "the warehouse is locked by another process (a running send?): "
                "showing only control records not loaded yet",
                style="yellow",
            )
        history = entries(warehouse, stored) if warehouse is not None else []
    history += pending_entries(journal, stored)

    def relevant(entry: Entry) -> bool:
        if workspace is None:
            return True
        if stream is None:
            return entry.target.workspace in (None, workspace)
        return entry.target.covers(workspace, stream)

    history = [e for e in history if relevant(e)]
    where = "".join(
        f" {label} {value}" for label, value in (("in", workspace), ("on", stream)) if value
    )
    active = [e for e in history if e.active]
    if active:
        _say(f"{stored} is suppressed{where} by {_count(len(active))}:")
        for entry in active:
            _say(f"  blocked at {_describe(entry)}")
    else:
        _say(f"{stored} is not suppressed{where}")
    for entry in history:
        if entry.lift is not None:
            lift = entry.lift
            _say(
                f"  lifted: {_describe(entry)}; removed by {lift.actor} at "
                f"{lift.lifted_at:%Y-%m-%d %H:%M:%S} UTC: {lift.reason} [removal {lift.removal_id}]"
            )
    for record in pending_removals(journal, stored):
        _say(
            f"  pending removal at {record.body['scope']} by {record.actor}: {record.reason} "
            f"[control record {record.control_id}; applies once loaded]"
        )


@app.command()
def add(
    address: Annotated[str, typer.Argument(help="The address to suppress.")],
    scope: ScopeOption,
    reason: ReasonOption,
    actor: ActorOption = None,
    config: ConfigOption = None,
) -> None:
    """Suppress ADDRESS for a scope (works while a send is running)."""
    settings = _settings(config)
    target = _target(settings, scope)
    journal = ControlJournal(settings.data_dir)
    try:
        record = request_add(
            journal,
            address,
            target,
            reason=reason,
            actor=actor_of(actor),
            config_hash=settings.config_hash,
        )
    except SuppressionError as err:
        raise _fail(str(err), 2) from err
    _say(f"suppressed {record.body['address']} at {target} [control record {record.control_id}]")
    _load(settings, journal, record, "a running send applies it before its next batch.")


@app.command()
def remove(
    address: Annotated[str, typer.Argument(help="The address whose entries to lift.")],
    scope: ScopeOption,
    reason: ReasonOption,
    override_complaint: Annotated[
        bool,
        typer.Option(
            "--override-complaint", help="Also lift a complaint entry (the recipient complained)."
        ),
    ] = False,
    actor: ActorOption = None,
    config: ConfigOption = None,
) -> None:
    """Lift ADDRESS's entries of exactly one scope, with a reason (audited).

    A complaint entry needs --override-complaint. Works while a send is running: the send
    keeps blocking the address until the removal is loaded.
    """
    settings = _settings(config)
    target = _target(settings, scope)
    journal = ControlJournal(settings.data_dir)
    try:
        stored = suppression_address(address)
        lifted: list[Entry] = []
        with journal.locked(), _warehouse(settings) as warehouse:
            if warehouse is not None:
                known = entries(warehouse, stored) + pending_entries(journal, stored)
                lifted = check_removal(known, stored, target, override_complaint=override_complaint)
            record = request_remove(
                journal,
                stored,
                target,
                reason=reason,
                actor=actor_of(actor),
                config_hash=settings.config_hash,
                override_complaint=override_complaint,
            )
            if warehouse is not None:
                load_control(warehouse, journal)
    except SuppressionError as err:
        raise _fail(str(err)) from err
    if warehouse is None:
        _say(f"recorded the removal of {stored} at {target} [control record {record.control_id}]")
        _say(
            LOCKED.format(
                id=record.control_id,
                dir=journal.pending_dir,
                effect=(
                    "a running send keeps blocking the address until then. It could not be "
                    "checked now; it never lifts a complaint entry without --override-complaint."
                ),
            ),
            style="yellow",
        )
        return
    _say(
        f"removed {stored} at {target}: lifted {_count(len(lifted))} "
        f"({', '.join(f'{e.source} {e.suppression_id}' for e in lifted)}) "
        f"[control record {record.control_id}, audited]"
    )


@app.command("import")
def import_(
    file: Annotated[
        Path | None, typer.Argument(help="A CSV file with an address (or email) column.")
    ] = None,
    relation: Annotated[
        str | None, typer.Option("--relation", help="A warehouse table or dbt model: schema.table.")
    ] = None,
    scope: ScopeOption = "",
    reason: ReasonOption = "",
    actor: ActorOption = None,
    config: ConfigOption = None,
) -> None:
    """Suppress every address of a CSV file or a warehouse relation, all or nothing.

    Needs the warehouse: not while a send holds it.
    """
    settings = _settings(config)
    if (file is None) == (relation is None):
        raise _fail("give either FILE.csv or --relation schema.table", 2)
    if not scope:
        raise _fail("--scope is required (global, workspace:W or stream:W.S)", 2)
    target = _target(settings, scope)
    who = actor_of(actor)
    try:
        with _warehouse(settings) as warehouse:
            if warehouse is None:
                raise _fail(
                    "import needs the warehouse, and another process holds it (a running "
                    "send?); nothing was imported: run it again when that process ends"
                )
            report: ImportReport
            if file is not None:
                report = import_csv(
                    warehouse,
                    file,
                    target,
                    reason=reason,
                    actor=who,
                    config_hash=settings.config_hash,
                )
            else:
                assert relation is not None
                report = import_relation(
                    warehouse,
                    relation,
                    target,
                    reason=reason,
                    actor=who,
                    config_hash=settings.config_hash,
                )
    except SuppressionError as err:
        raise _fail(str(err)) from err
    _say(
        f"imported {report.added} suppressions at {target} from {report.origin} "
        f"({report.rows} rows: {report.already_suppressed} already suppressed there, "
        f"{report.duplicates} duplicates"
        + (f", {report.blank} blank lines" if report.blank else "")
        + "; audited)"
    )
