"""The automatic pause rules run once from outside a send: by the sensor and ``mailers demo``.

The warehouse is opened read-only, so evaluating never waits on a writer; while a send
holds the DuckDB file even a read-only open fails, and then nothing is evaluated here: the
send evaluates the rules itself before every batch (:class:`mailers.pause_rules.LiveRules`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

from adapters.providers.registry import event_parser
from adapters.warehouses import open_warehouse
from mailers.alerts import Alerter
from mailers.config import Settings
from mailers.errors import WarehouseError
from mailers.events import EVENTS_TABLE
from mailers.feedback import LandedFeedback
from mailers.ledger import LEDGER_TABLE
from mailers.pause_rules import Alert, RulesOutcome, pause_line, run_rules
from mailers.pauses import PAUSES_TABLE, PauseBoard
from mailers.tables import LANDED_FILES_TABLE
from mailers.warehouse import MAILERS_SCHEMA

NEEDED = (LEDGER_TABLE, EVENTS_TABLE, LANDED_FILES_TABLE, PAUSES_TABLE)


def check_rules(
    settings: Settings,
    alerted: set[str] | None = None,
    alert_for: Callable[[str], Alert] | None = None,
) -> RulesOutcome | str:
    """Evaluate and apply every workspace's rules, counting landed feedback too; a string
    says why nothing was evaluated (the warehouse is busy or has no tables yet)."""
    try:
        warehouse = open_warehouse(settings, read_only=True)
    except WarehouseError:
        return "the warehouse is busy or missing (a running send checks the rules itself)"
    with warehouse:
        missing = [t for t in NEEDED if warehouse.columns(MAILERS_SCHEMA, t) is None]
        if missing:
            return f"the warehouse has no {', '.join(missing)} table yet"
        board = PauseBoard(settings.data_dir)
        feedback = LandedFeedback(warehouse, settings.landing_dir, event_parser)
        feedback.poll()
        return run_rules(warehouse, settings, board, feedback, alerted=alerted, alert_for=alert_for)


def print_pause_rules(console: Console, settings: Settings) -> None:
    """What ``mailers demo`` shows after its run: the rules' alerts (printed, and sent to
    any webhook), then every other automatic pause in force (one a running send wrote),
    each with how to resume it."""

    def printed(level: int, message: str) -> None:
        style = "red" if level >= logging.ERROR else "yellow"
        console.print(f"[{style}]{escape(message)}[/{style}]", highlight=False)

    def alert_for(workspace: str) -> Alert:
        webhook = settings.config.workspaces[workspace].pause_rules.alert_webhook
        return Alerter(webhook, line=printed)

    outcome = check_rules(settings, alert_for=alert_for)
    if isinstance(outcome, str):
        console.print(f"pause rules not evaluated: {outcome}")
        return
    new = {p.control_id for p in outcome.pauses}
    for pause in PauseBoard(settings.data_dir).active().values():
        if pause.automatic and pause.control_id not in new:
            printed(logging.ERROR, pause_line(pause))
