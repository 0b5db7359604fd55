"""The warehouse tables Mailers owns, by name, with their Arrow schemas.

They live in the ``mailers`` schema of the warehouse (dbt reads them as the ``mailers``
source). Every one is append-only: rows are added, never updated or deleted, except
``audit_heads``, a derived index of the audit chain's heads (see :mod:`mailers.audit`), and
``send_claim_fence``, the one-row counter that makes claiming a send window a
compare-and-set where primary keys are not enforced (see :mod:`mailers.claims`).
"""

from __future__ import annotations

import pyarrow as pa

from mailers.affinity import AFFINITY_SCHEMA, AFFINITY_TABLE
from mailers.audit import (
    AUDIT_HEADS_KEY,
    AUDIT_HEADS_SCHEMA,
    AUDIT_HEADS_TABLE,
    AUDIT_SCHEMA,
    AUDIT_TABLE,
    chain_legacy_rows,
)
from mailers.claims import CLAIMS_KEY, CLAIMS_SCHEMA, CLAIMS_TABLE, FENCE_SCHEMA, FENCE_TABLE
from mailers.current_events import EVENT_REPLAYS_SCHEMA, EVENT_REPLAYS_TABLE
from mailers.events import EVENTS_SCHEMA, EVENTS_TABLE
from mailers.identity_changes import IDENTITY_CHANGES_SCHEMA, IDENTITY_CHANGES_TABLE
from mailers.ledger import LEDGER_SCHEMA, LEDGER_TABLE
from mailers.pauses import PAUSES_SCHEMA, PAUSES_TABLE
from mailers.suppression import SUPPRESSIONS_SCHEMA, SUPPRESSIONS_TABLE
from mailers.warehouse import MAILERS_SCHEMA, WORK_SCHEMA, Warehouse
from mailers.warmup_starts import WARMUP_STARTS_SCHEMA, WARMUP_STARTS_TABLE
from mailers.webhooks_out.tables import WEBHOOK_TABLES

__all__ = ["LANDED_FILES_TABLE", "MAILERS_SCHEMA", "OWNED_TABLES", "WORK_SCHEMA", "ensure_tables"]


LANDED_FILES_TABLE = "landed_files"
LANDED_FILES_SCHEMA = pa.schema(
    [
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("provider_account", pa.string(), nullable=False),
        pa.field("event_count", pa.int64(), nullable=False),
        pa.field("loaded_at", pa.timestamp("us"), nullable=False),
    ]
)
"""Landing files already loaded, so each file's events are ingested exactly once."""

OWNED_TABLES: dict[str, pa.Schema] = {
    LEDGER_TABLE: LEDGER_SCHEMA,
    EVENTS_TABLE: EVENTS_SCHEMA,
    SUPPRESSIONS_TABLE: SUPPRESSIONS_SCHEMA,
    AUDIT_TABLE: AUDIT_SCHEMA,
    LANDED_FILES_TABLE: LANDED_FILES_SCHEMA,
    CLAIMS_TABLE: CLAIMS_SCHEMA,
    FENCE_TABLE: FENCE_SCHEMA,
    AFFINITY_TABLE: AFFINITY_SCHEMA,
    WARMUP_STARTS_TABLE: WARMUP_STARTS_SCHEMA,
    PAUSES_TABLE: PAUSES_SCHEMA,
    AUDIT_HEADS_TABLE: AUDIT_HEADS_SCHEMA,
    IDENTITY_CHANGES_TABLE: IDENTITY_CHANGES_SCHEMA,
    EVENT_REPLAYS_TABLE: EVENT_REPLAYS_SCHEMA,
    **WEBHOOK_TABLES,
}

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    CLAIMS_TABLE: CLAIMS_KEY,
    AUDIT_HEADS_TABLE: AUDIT_HEADS_KEY,
}
"""Owned tables whose key the warehouse must enforce (the send claim's compare-and-set)."""


def ensure_tables(warehouse: Warehouse) -> None:
    """Create Mailers' schemas and tables where they do not exist yet (idempotent).

    A warehouse from before a column existed gets it added; an audit log from before the
    hash chain gets its rows chained once (:func:`~mailers.audit.chain_legacy_rows`).
    """
    audit_columns = warehouse.columns(MAILERS_SCHEMA, AUDIT_TABLE)
    for table, columns in OWNED_TABLES.items():
        warehouse.ensure_table(MAILERS_SCHEMA, table, columns, PRIMARY_KEYS.get(table, ()))
    warehouse.execute(f"create schema if not exists {warehouse.dialect.quote(WORK_SCHEMA)}")
    if audit_columns is not None and "row_hash" not in audit_columns:
        chain_legacy_rows(warehouse)
