"""The ``ledger:`` section of the config: whether and how sends journal their ledger rows.

See :mod:`mailers.ledger_journal`. ``journal: auto`` journals on warehouses where each
statement is costly (remote engines with per-table quotas) and writes straight through on
the embedded DuckDB, where an append is a local transaction.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class JournalConfig(BaseModel):
    """When a send's ledger rows are loaded from its journal into the warehouse."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    journal: Literal["auto", "on", "off"] = "auto"
    flush_rows: int = Field(
        default=50_000,
        ge=1,
        description="Load the buffered rows once this many are waiting.",
    )
    flush_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Load the buffered rows once the last load is this old (checked per append).",
    )

    def enabled(self, warehouse_kind: str) -> bool:
        """Whether a send on a warehouse of ``warehouse_kind`` journals its ledger rows."""
        if self.journal == "auto":
            return warehouse_kind != "duckdb"
        return self.journal == "on"
