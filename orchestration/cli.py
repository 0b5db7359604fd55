"""The ``mailers`` command line: ``demo``, ``dev``, ``validate`` and ``plan``.

``demo`` builds a DuckDB warehouse, seeds example contacts and suppressions, runs the
whole Dagster pipeline in-process and prints the deliverability marts. ``validate`` checks
the config. ``plan`` is a dry run of one campaign window.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import subprocess
import sys
import threading
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
from adapters.settings import load
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers import clock
from mailers.config import Settings
from mailers.errors import MailersError
from mailers.planning import plan as plan_window
from mailers.tables import ensure_tables
from mailers.windows import send_window

if TYPE_CHECKING:  # Dagster is imported only by the commands that run pipelines.
    from dagster import DagsterInstance

    from adapters.simulator.local import LocalProviders

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
# A pipe or CI log gets a fixed width wide enough for the summary tables.
console = Console() if sys.stdout.isatty() else Console(width=130)
errors = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Config file (default: $MAILERS_CONFIG or ./mailers.yaml)."
    ),
]


def _settings(config: Path | None) -> Settings:
    try:
        return load(config)
    except MailersError as err:
        errors.print(f"[red]config error[/red]\n{err}", markup=True, highlight=False)
        raise typer.Exit(1) from err


@app.command()
def validate(config: ConfigOption = None) -> None:
    """Check the config file: schema, references, templates, segment models, providers."""
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


@app.command()
def plan(
    campaign: Annotated[str, typer.Argument(help="workspace.campaign (or a unique campaign name)")],
    config: ConfigOption = None,
    window: Annotated[
        str | None, typer.Option(help="Send window to plan (default: the current one).")
    ] = None,
) -> None:
    """Dry run: who a campaign window would send to, via which accounts, and who it skips."""
    settings = _settings(config)
    try:
        ref = settings.campaign(campaign)
    except KeyError as err:
        errors.print(f"[red]{err.args[0]}[/red]")
        raise typer.Exit(2) from err
    the_window = window or send_window(ref.config.schedule, clock.now())
    try:
        with DuckDBWarehouse(settings.warehouse_path) as warehouse:
            ensure_tables(warehouse)
            result = plan_window(warehouse, settings, ref, the_window)
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
    table.add_row("[bold]to send[/bold]", f"[bold]{result.to_send}[/bold]")
    for account, count in sorted(result.by_account.items()):
        table.add_row(f"  via {account}", str(count))
    console.print(table)


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
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
        seeded, suppressed = demo_data.seed(warehouse, contacts)
    console.print(
        f"seeded {seeded} contacts and {suppressed} manual suppressions into "
        f"{settings.warehouse_path}"
    )
    with _local_providers(settings, signing_keys) as local:
        if not _run_pipeline(settings):
            raise typer.Exit(1)
        if local.receiver is not None:
            console.print(
                f"webhook receiver landed {local.receiver.landed} signed webhooks "
                f"(rejected {local.receiver.rejected})"
            )
    _print_outcome(settings)


@app.command()
def dev(config: ConfigOption = None) -> None:
    """Start the local provider simulator and webhook receiver, then the Dagster UI."""
    settings = _settings(config)
    signing_keys = _demo_environment(settings)
    env = {
        **os.environ,
        "MAILERS_CONFIG": str(settings.path),
        "DAGSTER_HOME": os.environ.get("DAGSTER_HOME", str(Path(".dagster").resolve())),
    }
    dagster = Path(sys.executable).parent / "dagster"
    with _local_providers(settings, signing_keys):
        console.print("Dagster UI on http://127.0.0.1:3000 (Ctrl-C stops everything)")
        subprocess.run(
            [str(dagster), "dev", "-w", "workspace.yaml"],
            env=env,
            cwd=settings.base_dir,
            check=False,
        )


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


def _run_pipeline(settings: Settings) -> bool:
    """Run ``mailers_pipeline`` in-process with a progress bar; its logs go to a file."""
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
        job = defs.resolve_job_def("mailers_pipeline")
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
        _print_failures(result)
        errors.print(f"full log: {log_path}")
        return False
    console.print(f"run {run_id} succeeded; log: {log_path} (browse it in the UI: make dev)")
    return True


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


def _print_failures(result: object) -> None:
    for event in getattr(result, "all_events", []):
        failure = event.step_failure_data if event.is_step_failure else None
        if failure is not None and failure.error is not None:
            error = failure.error
            while error.cause is not None:  # the root cause is what the user can act on
                error = error.cause
            errors.print(
                f"[red]{event.step_key} failed[/red]: {error.message.strip()}",
                highlight=False,
            )


def _print_outcome(settings: Settings) -> None:
    from orchestration.summary import (
        deliverability,
        message_statuses,
        print_deliverability,
        print_statuses,
    )

    with DuckDBWarehouse(settings.warehouse_path, read_only=True) as warehouse:
        print_statuses(console, message_statuses(warehouse))
        print_deliverability(console, deliverability(warehouse))
    emls = list(settings.outbox_dir.glob("*/*.eml"))
    if emls:  # sandbox accounts write every message they accept as a file
        console.print(f"{len(emls)} messages written as .eml files under {settings.outbox_dir}")
    console.print(f"warehouse: {settings.warehouse_path} (open it with duckdb to explore)")


def main() -> None:
    """Entry point of the ``mailers`` script."""
    try:
        app()
    except MailersError as err:
        errors.print(f"[red]error[/red]: {err}")
        sys.exit(1)
