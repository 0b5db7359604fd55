"""The ``ledger:`` section of the config: whether and how sends journal their ledger rows.

See :mod:`mailers.ledger_journal`. ``journal: auto`` journals on the warehouses where each
statement is costly (:data:`JOURNALED_BY_DEFAULT`: per-statement latency and cost, per-table
load-job quotas) and writes straight through on DuckDB and Postgres, where an append is a
cheap transaction.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

JOURNALED_BY_DEFAULT = frozenset({"bigquery", "snowflake"})
"""Warehouse kinds whose sends journal their ledger rows under ``journal: auto``."""


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
            return warehouse_kind in JOURNALED_BY_DEFAULT
        return self.journal == "on"
