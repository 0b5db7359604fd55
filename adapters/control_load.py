"""Loading pending control records (pauses, resumes, suppressions) into the warehouse now.

A control action is durable once its record is in the data directory
(:mod:`mailers.control`); loading it into the warehouse tables can wait. When no other
process holds the warehouse, the CLI and the control job load it at once; when a send
holds it (DuckDB has one writer), that send applies the record before its next batch and
loads it when it ends.
"""

from __future__ import annotations

from adapters.warehouses import open_warehouse
from mailers.config import Settings
from mailers.control import ControlJournal, load_control
from mailers.errors import WarehouseBusy
from mailers.tables import ensure_tables


def load_control_now(settings: Settings) -> int | None:
    """Load every pending control record; how many, or None while another process holds
    the warehouse (the records stay pending and lose nothing)."""
    try:
        with open_warehouse(settings) as warehouse:
            ensure_tables(warehouse)
            return load_control(warehouse, ControlJournal(settings.data_dir))
    except WarehouseBusy:
        return None
