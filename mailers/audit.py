"""Audit records: what each run did and why, append-only, one row per action.

An operator shows these as receipts: which run (and who or what triggered it) sent or
skipped how many messages for which campaign and window, under which config version.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pyarrow as pa

from mailers.clock import stamp
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

AUDIT_TABLE = "audit_log"


class AuditAction(StrEnum):
    """The kinds of action that leave an audit record."""

    SEND = "send"
    INGEST_EVENTS = "ingest_events"
    RECONCILE = "reconcile"
    BREAKER = "breaker"
    """A provider account's circuit breaker changed state (:mod:`mailers.breaker`)."""
    PAUSE = "pause"
    RESUME = "resume"
    AUTO_PAUSE = "auto_pause"
    SUPPRESSION_ADD = "suppression_add"
    SUPPRESSION_REMOVE = "suppression_remove"
    SUPPRESSION_IMPORT = "suppression_import"


@dataclass(frozen=True)
class AuditRecord:
    """One action of one run. ``counts`` holds outcome and skip-reason tallies."""

    run_id: str
    actor: str
    action: AuditAction
    config_hash: str
    counts: Mapping[str, int] = field(default_factory=dict)
    detail: Mapping[str, Any] = field(default_factory=dict)
    workspace: str | None = None
    stream: str | None = None
    campaign: str | None = None
    send_window: str | None = None
    scope: str | None = None
    reason: str | None = None
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None

    def to_arrow(self) -> pa.Table:
        """The record as a one-row Arrow table of :data:`AUDIT_SCHEMA`."""
        row = {
            "audit_id": str(uuid.uuid4()),
            # Strictly after every earlier record of this process, so "the latest record"
            # (a breaker's state, read back by the next run) never ties, even on a fixed clock.
            "recorded_at": stamp(),
            "run_id": self.run_id,
            "actor": self.actor,
            "action": str(self.action),
            "workspace": self.workspace,
            "stream": self.stream,
            "campaign": self.campaign,
            "send_window": self.send_window,
            "config_hash": self.config_hash,
            "counts": json.dumps(dict(sorted(self.counts.items()))),
            "detail": json.dumps(
                {
                    **self.detail,
                    **{
                        k: v
                        for k, v in (
                            ("scope", self.scope),
                            ("reason", self.reason),
                            ("before", self.before),
                            ("after", self.after),
                        )
                        if v is not None
                    },
                },
                sort_keys=True,
                default=str,
            ),
        }
        return pa.Table.from_pylist([row], schema=AUDIT_SCHEMA)


AUDIT_SCHEMA = pa.schema(
    [
        pa.field("audit_id", pa.string(), nullable=False),
        pa.field("recorded_at", pa.timestamp("us"), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("actor", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("workspace", pa.string()),
        pa.field("stream", pa.string()),
        pa.field("campaign", pa.string()),
        pa.field("send_window", pa.string()),
        pa.field("config_hash", pa.string(), nullable=False),
        pa.field("counts", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
    ]
)
"""Columns of ``mailers.audit_log``; ``counts`` and ``detail`` are JSON objects as text."""


def append_audit(warehouse: Warehouse, records: Sequence[AuditRecord]) -> None:
    """Append ``records`` to ``mailers.audit_log`` in one bulk write, in order."""
    if records:
        warehouse.append(
            MAILERS_SCHEMA, AUDIT_TABLE, pa.concat_tables([r.to_arrow() for r in records])
        )
