"""The ``mailers`` command line: ``demo``, ``dev``, ``validate``, ``plan``, ``reconcile``,
``policy show``, ``pause``/``resume``/``pauses``, ``suppression`` and ``audit``.

``demo`` builds a DuckDB warehouse, seeds example contacts and suppressions, runs the
whole Dagster pipeline in-process and prints the deliverability marts. ``validate`` checks
the config, the environment variables it needs and its templates against the segments'
columns. ``plan`` is a dry run of one campaign window. ``policy show`` prints the
effective sending policy of a workspace, stream or campaign and where each value comes from.
The control commands (``orchestration/cli_control.py``, ``cli_suppression.py``,
``cli_audit.py``) work while a send holds the warehouse, through durable control records.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from adapters import demo_data
from adapters.control_load import load_control_now
from adapters.settings import SIMULATOR_PORT_ENV
from adapters.warehouses import describe_warehouse, open_warehouse, warehouse_exists
from mailers import clock
from mailers.audience import SEGMENTS_SCHEMA
from mailers.audit import append_audit
from mailers.config import Settings
from mailers.errors import MailersError, WindowError
from mailers.outcomes import NOT_SENT_FAILURE, PAUSED_FAILURE
from mailers.planning import SendPlan
from mailers.planning import plan as plan_window
from mailers.preflight import (
    check_template,
    environment_references,
    is_warehouse_secret,
    segment_columns_from_dbt,
    unset,
)
from mailers.reconcile import reconcile as reconcile_window
from mailers.reconcile import window_filter
from mailers.tables import ensure_tables
from mailers.windows import WindowRequest, requested_window, send_window
from orchestration import cli_control
from orchestration.cli_audit import audit_app
from orchestration.cli_common import ConfigOption, console, errors, settings_of
from orchestration.cli_events import events_app
from orchestration.cli_serve import serve
from orchestration.cli_suppression import app as suppression_app
from orchestration.cli_webhooks import webhooks_app

if TYPE_CHECKING:  # Dagster is imported only by the commands that run pipelines.
    from dagster import DagsterInstance

    from adapters.simulator.local import LocalProviders

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
cli_control.register(app)
_settings = settings_of


@app.command()
def validate(config: ConfigOption = None) -> None:
    """Check the config: schema, references, providers, the environment variables it needs,
    and each template rendered against its segment's columns."""
    settings = _settings(config)
    cfg = settings.config
    console.print(f"[green]ok[/green] {settings.path} (config hash {settings.config_hash[:12]})")
    for name, workspace in cfg.workspaces.items():
        console.print(
            f"  workspace [bold]{name}[/bold]: {len(workspace.provider_accounts)} provider "
            f"accounts, {len(workspace.identities)} identities, streams "
            f"{', '.join(str(s) for s in workspace.streams)}, campaigns "
            f"{', '.join(workspace.campaigns) or '-'}"
        )
    problems = _check_environment(settings) + _check_templates(settings)
    if problems:
        errors.print("[red]validation failed[/red]\n" + "\n".join(problems), highlight=False)
        raise typer.Exit(1)


def _check_environment(settings: Settings) -> list[str]:
    """Print every environment variable the config references; the problem if any is unset."""
    from adapters.simulator.local import simulated_accounts

    references = environment_references(settings)
    table = Table(title="Environment variables the config references (values never shown)")
    for column in ("variable", "state", "referenced at"):
        table.add_column(column)
    for ref in references:
        state = (
            "[green]set[/green]"
            if ref.is_set()
            else "[red]missing[/red]"
            if ref.needed
            else "[dim]unset, not needed[/dim]"
        )
        table.add_row(ref.env, state, ref.path)
    console.print(table)
    missing = unset(references)
    if not missing:
        return []
    names = list(dict.fromkeys(ref.env for ref in missing))
    problem = f"{len(names)} needed environment variables are not set: {', '.join(names)}"
    simulated = {a.name for a in simulated_accounts(settings)}
    filled = sorted(
        {
            ref.env
            for ref in missing
            if ref.account in simulated | {None}
            and not ref.subscriber
            and not is_warehouse_secret(ref)
        }
    )
    if filled:
        which = "these" if len(filled) == len(names) else ", ".join(filled)
        problem += (
            f" (mailers demo and mailers dev fill {which} with throwaway values for the local "
            "simulator; export them for any other run)"
        )
    return [problem]


def _check_templates(settings: Settings) -> list[str]:
    """Render each campaign's template against its segment's columns; the errors found."""
    problems: list[str] = []
    for ref in settings.campaigns():
        segment = ref.config.segment
        columns, source = _segment_columns(settings, segment)
        label = f"  {ref.qualified_name}: template {ref.config.template!r}"
        if columns is None:
            console.print(
                f"{label} [yellow]not checked[/yellow]: the columns of {segment} are unknown "
                f"({source})"
            )
            continue
        found = check_template(settings, ref, columns)
        verdict = "[red]fails[/red]" if found.errors else "[green]fits[/green]"
        console.print(f"{label} {verdict} {segment} ({len(columns)} columns, {source})")
        for note in found.notes:
            console.print(f"    [yellow]note[/yellow] {note}", highlight=False)
        problems.extend(f"{settings.path}: {error}" for error in found.errors)
    return problems


def _segment_columns(settings: Settings, segment: str) -> tuple[list[str] | None, str]:
    """A segment's columns from the warehouse when it is built there, else from its yml."""
    why = "no warehouse yet"
    if warehouse_exists(settings):
        try:
            with open_warehouse(settings, read_only=True) as warehouse:
                columns = warehouse.columns(SEGMENTS_SCHEMA, segment)
        except MailersError as err:
            why = f"warehouse not readable: {err}"
        else:
            if columns is not None:
                return columns, "from the warehouse"
            why = "not built in the warehouse"
    documented = segment_columns_from_dbt(settings, segment)
    if documented is not None:
        return documented, f"from its dbt yml; {why}"
    return None, f"{why}, and no yml under models/segments describes its columns"


@app.command()
def plan(
    campaign: Annotated[str, typer.Argument(help="workspace.campaign (or a unique campaign name)")],
    config: ConfigOption = None,
    window: Annotated[
        str | None,
        typer.Option(
            help="Send window to plan: 'once' for a one-off campaign, else a tick of its "
            "schedule as YYYY-MM-DDTHH:MM:SSZ (default: the current one)."
        ),
    ] = None,
) -> None:
    """Dry run: who a campaign window would send to, via which accounts, and who it skips."""
    settings = _settings(config)
    try:
        ref = settings.campaign(campaign)
    except KeyError as err:
        errors.print(f"[red]{err.args[0]}[/red]")
        raise typer.Exit(2) from err
    now = clock.now()
    try:
        request = (
            requested_window(ref, window, now)
            if window is not None
            else WindowRequest.current_of(ref, send_window(ref.config.schedule, now))
        )
    except WindowError as err:
        errors.print(f"[red]cannot plan {ref.qualified_name}:[/red] {err}", highlight=False)
        raise typer.Exit(2) from err
    try:
        with open_warehouse(settings) as warehouse:
            ensure_tables(warehouse)
            result = plan_window(warehouse, settings, ref, request.window)
    except MailersError as err:
        errors.print(f"[red]cannot plan {ref.qualified_name}:[/red] {err}")
        raise typer.Exit(1) from err
    table = Table(title=f"Plan for {result.campaign}, window {result.send_window} (nothing sent)")
    table.add_column("what")
    table.add_column("recipients", justify="right")
    table.add_row("segment rows", str(result.counts.get("segment_rows", 0)))
    for key in sorted(result.counts):
        if key.startswith("skipped_") or key in {"duplicates", "already_settled"}:
            table.add_row(key.replace("_", " "), str(result.counts[key]))
    if in_doubt := result.counts.get("in_doubt"):
        # Shown apart from "already settled": they may never have reached the provider.
        table.add_row("[yellow]in doubt (dispatching/unknown)[/yellow]", str(in_doubt))
    if waiting := result.counts.get("waiting_deferred"):
        table.add_row("deferred earlier, not yet eligible", str(waiting))
    table.add_row("[bold]to send[/bold]", f"[bold]{result.to_send}[/bold]")
    for account, count in sorted(result.by_account.items()):
        table.add_row(f"  via {account}", str(count))
    if deferred := result.counts.get("deferred_by_caps"):
        table.add_row("  [yellow]deferred by caps today[/yellow]", str(deferred))
    console.print(table)
    if result.caps:
        console.print(_caps_table(result))
    if request.is_backfill:
        from orchestration.defs.runs import BACKFILL_TAG, SEND_WINDOW_TAG

        console.print(
            f"[yellow]backfill[/yellow]: {request.window} is not the current window "
            f"({request.current}); sending it needs the run tags "
            f"{SEND_WINDOW_TAG}={request.window} {BACKFILL_TAG}=true",
            highlight=False,
        )


def _caps_table(result: SendPlan) -> Table:
    """Today's caps of a planned window: limit, used, planned, deferred, days to full."""
    table = Table(title="Caps today (warm-up curves and daily caps)")
    for column in ("scope", "from", "day", "cap", "used", "planned", "deferred", "to full"):
        table.add_column(column, justify="left" if column in ("scope", "from", "day") else "right")
    for cap in result.caps:
        table.add_row(
            cap.scope,
            cap.source,
            f"{cap.day} {cap.timezone}",
            "warm" if cap.limit is None else str(cap.limit),
            str(cap.used),
            str(cap.planned),
            str(cap.deferred),
            "" if cap.days_to_full is None else f"{cap.days_to_full} d",
        )
    return table


app.add_typer(suppression_app, name="suppression")

policy_app = typer.Typer(no_args_is_help=True, help="The sending policy: limits, routes, warm-up.")
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")
app.add_typer(events_app, name="events")
app.add_typer(webhooks_app, name="webhooks")
app.command("serve")(serve)


@policy_app.command("show")
def policy_show(
    scope: Annotated[
        str,
        typer.Argument(
            help="workspace, workspace.stream or workspace.stream.campaign (or workspace.campaign)"
        ),
    ],
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """The effective policy of a send and where each value came from (key path or default).

    Warm-up curves show today's cap and the days until full volume, on Mailers' clock;
    a curve without a start date reads its first send from the warehouse when there is one.
    """
    from mailers.errors import ScopeError
    from mailers.policy import effective_policy
    from orchestration.policy_view import policy_lines

    settings = _settings(config)
    try:
        if warehouse_exists(settings):
            with open_warehouse(settings, read_only=True) as warehouse:
                policy = effective_policy(settings, scope, warehouse=warehouse)
        else:
            policy = effective_policy(settings, scope)
    except ScopeError as err:
        errors.print(f"[red]unknown policy scope[/red]: {err}", highlight=False)
        raise typer.Exit(2) from err
    if as_json:
        typer.echo(json.dumps(policy.to_json(), indent=2))
    else:
        typer.echo("\n".join(policy_lines(policy)))


@app.command()
def reconcile(
    campaign: Annotated[
        str | None, typer.Argument(help="workspace.campaign (default: every campaign)")
    ] = None,
    config: ConfigOption = None,
    window: Annotated[
        str | None, typer.Option(help="Only this send window (default: every window).")
    ] = None,
) -> None:
    """Settle messages in doubt against landed events and the providers' own records.

    Each ``unknown`` message becomes ``accepted`` (with the provider's id) when a landed
    event or the provider's records prove it, or ``not_sent`` when the provider has no
    record of it (the next run of its window sends it). Exits 1 while any stays unknown.
    """
    from adapters.providers.registry import message_lookups

    settings = _settings(config)
    try:
        refs = [settings.campaign(campaign)] if campaign else settings.campaigns()
    except KeyError as err:
        errors.print(f"[red]{err.args[0]}[/red]")
        raise typer.Exit(2) from err
    run_id = f"reconcile-{uuid.uuid4().hex[:12]}"
    table = Table(title=f"Reconciliation {run_id}")
    for column in ("campaign", "from events", "accepted", "never handed over", "still unknown"):
        table.add_column(column, justify="left" if column == "campaign" else "right")
    left, failed = 0, False
    with open_warehouse(settings) as warehouse:
        ensure_tables(warehouse)
        for ref in refs:
            report = reconcile_window(
                warehouse,
                message_lookups(settings, ref.workspace),
                run_id=run_id,
                where=window_filter(ref.workspace, ref.name, window),
            )
            actor = f"cli:reconcile:{getpass.getuser()}"
            record = report.audit_record(
                run_id=run_id,
                actor=actor,
                config_hash=settings.config_hash,
                campaign=ref,
                send_window=window,
            )
            append_audit(warehouse, [record])
            remaining = sum(report.still_unknown.values())
            left += remaining
            table.add_row(
                ref.qualified_name,
                str(report.from_events),
                str(report.accepted),
                str(report.never_handed_over),
                str(remaining),
            )
            for account, problem in report.lookup_errors.items():
                failed = True
                errors.print(
                    f"[red]{ref.qualified_name}: lookup at {account} failed:[/red] {problem}"
                )
    console.print(table)
    if left or failed:
        console.print(
            f"[yellow]{left} message(s) stay in doubt[/yellow]: no provider record can settle "
            "them yet; they are never re-sent blindly"
        )
        raise typer.Exit(1)


@app.command()
def demo(
    config: ConfigOption = None,
    contacts: Annotated[int, typer.Option(min=1, help="Example contacts to seed.")] = 2_000,
    fresh: Annotated[bool, typer.Option(help="Delete the data directory first.")] = False,
) -> None:
    """Seed a DuckDB warehouse and run the whole pipeline end to end, in-process."""
    settings = _settings(config)
    if fresh and settings.data_dir.exists():
        shutil.rmtree(settings.data_dir)
    signing_keys = _demo_environment(settings)
    with open_warehouse(settings) as warehouse:
        ensure_tables(warehouse)
        seeded, suppressed = demo_data.seed(warehouse, contacts)
    console.print(
        f"seeded {seeded} contacts and {suppressed} manual suppressions into "
        f"{describe_warehouse(settings)}"
    )
    with _local_providers(settings, signing_keys) as local:
        outcome = _run_pipeline(settings)
        if outcome == "paused":
            # The seeded complaint domains trip the automatic pause rules mid-send: the
            # paused sends fail (work is left undone), the rest of the pipeline still runs.
            console.print(
                "[yellow]a pause held part of the send (see above); loading the events that "
                "landed and building the marts[/yellow]"
            )
            outcome = _run_pipeline(settings, "ingest_events")
        if outcome != "ok":
            raise typer.Exit(1)
        if local.receiver is not None:
            console.print(
                f"webhook receiver landed {local.receiver.landed} signed webhooks "
                f"(rejected {local.receiver.rejected})"
            )
    _print_outcome(settings)
    from orchestration.rules import print_pause_rules

    print_pause_rules(console, settings)
    # A pause the rules just wrote lands in mailers.pauses and the audit log now, not only
    # at the next send.
    load_control_now(settings)


@app.command()
def dev(
    config: ConfigOption = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Dagster UI port (default: 3000, else a free one)."),
    ] = None,
    simulator_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Provider simulator port (default: the simulated accounts' base_url port).",
        ),
    ] = None,
) -> None:
    """Start the local provider simulator and webhook receiver, then the Dagster UI."""
    if simulator_port is not None:
        # Read by every load of the config: this process's and those dagster dev starts.
        os.environ[SIMULATOR_PORT_ENV] = str(simulator_port)
    settings = _settings(config)
    ui_port = _ui_port(port)
    signing_keys = _demo_environment(settings)
    env = {
        **os.environ,
        "MAILERS_CONFIG": str(settings.path),
        "DAGSTER_HOME": os.environ.get("DAGSTER_HOME", str(Path(".dagster").resolve())),
    }
    dagster = Path(sys.executable).parent / "dagster"
    command = [str(dagster), "dev", "-w", "workspace.yaml", "-h", UI_HOST, "-p", str(ui_port)]
    with _local_providers(settings, signing_keys):
        console.print(f"starting dagster dev (UI port {ui_port})")
        ui = subprocess.Popen(command, env=env, cwd=settings.base_dir)
        try:
            url = f"http://{UI_HOST}:{ui_port}"
            if _wait_until_serving(ui, url):
                console.print(f"Dagster UI on {url} (Ctrl-C stops everything)")
            ui.wait()
        except KeyboardInterrupt:
            ui.wait()  # dagster dev got the same Ctrl-C and shuts its services down
    if ui.returncode:
        errors.print(f"[red]dagster dev exited with code {ui.returncode}[/red]")
        raise typer.Exit(1)


UI_HOST = "127.0.0.1"
DEFAULT_UI_PORT = 3000


def _ui_port(requested: int | None) -> int:
    """The UI port: the one asked for (it must be free), else 3000 or any free port."""
    if requested is not None:
        if not _port_free(requested):
            errors.print(
                f"[red]port {requested} on {UI_HOST} is in use[/red]: stop what listens "
                "there or pass another --port"
            )
            raise typer.Exit(1)
        return requested
    if _port_free(DEFAULT_UI_PORT):
        return DEFAULT_UI_PORT
    with socket.socket() as probe:
        probe.bind((UI_HOST, 0))
        free = int(probe.getsockname()[1])
    console.print(f"[yellow]note[/yellow] port {DEFAULT_UI_PORT} is in use: using {free}")
    return free


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((UI_HOST, port))
        except OSError:
            return False
    return True


def _wait_until_serving(process: subprocess.Popen[bytes], url: str) -> bool:
    """Wait until the UI answers at ``url``; False when ``dagster dev`` exited first."""
    import httpx

    while process.poll() is None:
        try:
            if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def _demo_environment(settings: Settings) -> dict[str, str]:
    """Demo only: fill unset secrets with throwaway values; real runs must set them."""
    from adapters.simulator.local import demo_credentials

    key_env = settings.config.unsubscribe.signing_key.env
    if not os.environ.get(key_env):
        os.environ[key_env] = secrets.token_urlsafe(32)
        console.print(
            f"[yellow]note[/yellow] {key_env} is not set: using a one-off key for this "
            "demo's unsubscribe links"
        )
    return demo_credentials(settings)


def _local_providers(settings: Settings, signing_keys: dict[str, str]) -> LocalProviders:
    from adapters.simulator.local import LocalProviders

    local = LocalProviders(settings, signing_keys)
    if local.origin is not None:
        kinds = ", ".join(sorted({a.kind for a in local.accounts}))
        console.print(f"provider simulator ({kinds}) on {local.origin}")
    return local


def _run_pipeline(settings: Settings, job_name: str = "mailers_pipeline") -> str:
    """Run a job in-process with a progress bar, its logs in a file: ``ok``, ``paused``
    (it failed only because pauses held messages of sends) or ``failed``."""
    import dagster as dg
    from dagster._core.utils import make_new_run_id

    from orchestration.defs.build import build_definitions
    from orchestration.defs.runs import ACTOR_TAG

    os.environ.setdefault("DAGSTER_HOME", str((Path.cwd() / ".dagster").resolve()))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    run_id = make_new_run_id()
    log_path = settings.data_dir / "logs" / f"{run_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    screen = Console(file=sys.stdout)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    outcome: dict[str, dg.ExecuteInProcessResult] = {}
    with Progress(*columns, console=screen) as progress:
        task = progress.add_task("loading definitions (dbt parse on first run)", total=None)
        defs = build_definitions(str(settings.path))
        job = defs.resolve_job_def(job_name)
        instance = dg.DagsterInstance.get()
        progress.update(task, total=len(job.graph.node_defs), description="starting run")

        def execute() -> None:
            # Dagster's and dbt's own output is kept in a log file, not on the screen.
            with log_path.open("w") as log, redirect_stdout(log), redirect_stderr(log):
                outcome["result"] = job.execute_in_process(
                    instance=instance,
                    run_id=run_id,
                    tags={ACTOR_TAG: f"cli:demo:{getpass.getuser()}"},
                    raise_on_error=False,
                )

        worker = threading.Thread(target=execute, name="mailers-pipeline")
        worker.start()
        while worker.is_alive():
            worker.join(timeout=0.25)
            _show_steps(progress, task, instance, run_id)
        _show_steps(progress, task, instance, run_id)
    result = outcome.get("result")
    if result is None or not result.success:
        paused = _print_failures(result)
        errors.print(f"full log: {log_path}")
        return "paused" if paused else "failed"
    console.print(f"run {run_id} succeeded; log: {log_path} (browse it in the UI: make dev)")
    return "ok"


def _show_steps(progress: Progress, task: TaskID, instance: DagsterInstance, run_id: str) -> None:
    """Move the progress bar to the run's finished steps and name the running one."""
    from dagster import DagsterEventType

    records = instance.all_logs(
        run_id,
        of_type={
            DagsterEventType.STEP_START,
            DagsterEventType.STEP_SUCCESS,
            DagsterEventType.STEP_FAILURE,
        },
    )
    started = [r.step_key for r in records if r.dagster_event_type == DagsterEventType.STEP_START]
    finished = [r for r in records if r.dagster_event_type != DagsterEventType.STEP_START]
    running = [key for key in started if key not in {r.step_key for r in finished}]
    description = f"running {running[-1]}" if running else "pipeline"
    progress.update(task, completed=len(finished), description=description)


def _print_failures(result: object) -> bool:
    """Print each failed step's root cause; whether every failure was a send that pauses
    held (nothing else went wrong)."""
    paused_only, failures = True, 0
    for event in getattr(result, "all_events", []):
        failure = event.step_failure_data if event.is_step_failure else None
        if failure is not None and failure.error is not None:
            failures += 1
            error = failure.error
            while error.cause is not None:  # the root cause is what the user can act on
                error = error.cause
            message = error.message.strip()
            held = PAUSED_FAILURE in message and NOT_SENT_FAILURE not in message
            paused_only = paused_only and event.step_key.endswith("__sends") and held
            errors.print(
                f"[{'yellow' if held else 'red'}]{event.step_key} failed[/]: {message}",
                highlight=False,
            )
    return failures > 0 and paused_only


def _print_outcome(settings: Settings) -> None:
    from mailers.completeness import read_completeness
    from orchestration.summary import (
        deferred_by_policy,
        deliverability,
        message_statuses,
        print_deferred,
        print_deliverability,
        print_statuses,
    )

    with open_warehouse(settings, read_only=True) as warehouse:
        print_statuses(console, message_statuses(warehouse))
        print_deferred(console, deferred_by_policy(warehouse))
        print_deliverability(console, deliverability(warehouse))
        console.print(f"completeness: {read_completeness(warehouse).describe()}")
    emls = list(settings.outbox_dir.glob("*/*.eml"))
    if emls:  # sandbox accounts write every message they accept as a file
        console.print(f"{len(emls)} messages written as .eml files under {settings.outbox_dir}")
    console.print(f"warehouse: {describe_warehouse(settings)} (open it to explore)")


def main() -> None:
    """Entry point of the ``mailers`` script."""
    try:
        app()
    except MailersError as err:
        errors.print(f"[red]error[/red]: {err}")
        sys.exit(1)
