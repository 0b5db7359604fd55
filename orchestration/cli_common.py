"""What every ``mailers`` command module shares: the consoles, the config option, settings."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from adapters.settings import load
from mailers.config import Settings
from mailers.errors import MailersError

# A pipe or CI log gets a fixed width wide enough for the summary tables.
console = Console() if sys.stdout.isatty() else Console(width=130)
errors = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Config file (default: $MAILERS_CONFIG or ./mailers.yaml)."
    ),
]

ActorOption = Annotated[
    str | None,
    typer.Option(help="Who is doing this, for the audit log (default: cli:<OS user>)."),
]


def settings_of(config: Path | None) -> Settings:
    """The validated config, or exit 1 with the config error printed."""
    try:
        return load(config)
    except MailersError as err:
        errors.print(f"[red]config error[/red]\n{err}", markup=True, highlight=False)
        raise typer.Exit(1) from err


def actor_of(actor: str | None) -> str:
    """The actor recorded for a CLI action: the one given, or ``cli:<OS user>``."""
    return actor or f"cli:{getpass.getuser()}"
