"""The automatic pause rules run once from outside a send: by the sensor and ``mailers demo``.

The warehouse is opened read-only, so evaluating never waits on a writer; while a send
holds the DuckDB file even a read-only open fails, and then nothing is evaluated here: the
send evaluates the rules itself before every batch (:class:`mailers.pause_rules.LiveRules`).
"""

from __future__ import annotations

from adapters.providers.registry import event_parser
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.config import Settings
from mailers.errors import WarehouseError
from mailers.events import EVENTS_TABLE
from mailers.feedback import LandedFeedback
from mailers.ledger import LEDGER_TABLE
from mailers.pause_rules import RulesOutcome, run_rules
from mailers.pauses import PAUSES_TABLE, PauseBoard
from mailers.tables import LANDED_FILES_TABLE
from mailers.warehouse import MAILERS_SCHEMA

NEEDED = (LEDGER_TABLE, EVENTS_TABLE, LANDED_FILES_TABLE, PAUSES_TABLE)


def check_rules(settings: Settings, alerted: set[str] | None = None) -> RulesOutcome | str:
    """Evaluate and apply every workspace's rules, counting landed feedback too; a string
    says why nothing was evaluated (the warehouse is busy or has no tables yet)."""
    try:
        warehouse = DuckDBWarehouse(settings.warehouse_path, read_only=True)
    except WarehouseError:
        return "the warehouse is busy or missing (a running send checks the rules itself)"
    with warehouse:
        missing = [t for t in NEEDED if warehouse.columns(MAILERS_SCHEMA, t) is None]
        if missing:
            return f"the warehouse has no {', '.join(missing)} table yet"
        board = PauseBoard(settings.data_dir)
        feedback = LandedFeedback(warehouse, settings.landing_dir, event_parser)
        feedback.poll()
        return run_rules(warehouse, settings, board, feedback, alerted=alerted)
