"""When a warm-up curve without a configured start date started: the first day it was used.

``mailers.warmup_starts`` holds one row per curve owner (a sending domain, identity or
provider account of a workspace): the local day a send first ran under its curve. A send
records it before its first provider call, so the ramp begins the day the owner starts
sending; a dry run only reads it. Two sends recording the same owner at once both write a
row; the earliest day wins on every read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date

import pyarrow as pa

from mailers import clock
from mailers.caps import Cap
from mailers.clock import utcnow
from mailers.ledger import sql_text
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

WARMUP_STARTS_TABLE = "warmup_starts"

WARMUP_STARTS_SCHEMA = pa.schema(
    [
        pa.field("workspace", pa.string(), nullable=False),
        pa.field("owner_kind", pa.string(), nullable=False),
        pa.field("owner", pa.string(), nullable=False),
        pa.field("started_on", pa.date32(), nullable=False),
        pa.field("recorded_at", pa.timestamp("us"), nullable=False),
    ]
)
"""Columns of ``mailers.warmup_starts``; ``owner_kind`` is ``domain``, ``identity`` or
``account``."""


def with_started_curves(
    warehouse: Warehouse, workspace: str, caps: Sequence[Cap], *, record: bool
) -> list[Cap]:
    """``caps`` with every curve lacking a start date given the day it started.

    Curves never used start today; with ``record`` (a send) that day is recorded.
    """
    pending = [c for c in caps if c.curve is not None and c.curve.start_date is None]
    if not pending:
        return list(caps)
    owners = sorted({(str(c.scope.kind), c.scope.name) for c in pending})
    known = recorded_starts(warehouse, workspace, owners)
    now = clock.now()
    new_rows = []
    for cap in pending:
        owner = (str(cap.scope.kind), cap.scope.name)
        if owner not in known:
            known[owner] = cap.local_day(now)
            new_rows.append(owner)
    if record and new_rows:
        rows = [
            {
                "workspace": workspace,
                "owner_kind": kind,
                "owner": name,
                "started_on": known[(kind, name)],
                "recorded_at": utcnow(),
            }
            for kind, name in dict.fromkeys(new_rows)
        ]
        warehouse.append(
            MAILERS_SCHEMA,
            WARMUP_STARTS_TABLE,
            pa.Table.from_pylist(rows, schema=WARMUP_STARTS_SCHEMA),
        )
    started = []
    for cap in caps:
        curve = cap.curve
        if curve is not None and curve.start_date is None:
            day = known[(str(cap.scope.kind), cap.scope.name)]
            cap = replace(cap, curve=curve.model_copy(update={"start_date": day}))
        started.append(cap)
    return started


def recorded_starts(
    warehouse: Warehouse, workspace: str, owners: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], date]:
    """The recorded first day of each ``(owner_kind, owner)`` that has one (read only)."""
    if not owners:
        return {}
    table = warehouse.relation(MAILERS_SCHEMA, WARMUP_STARTS_TABLE)
    wanted = " or ".join(
        f"(owner_kind = {sql_text(kind)} and owner = {sql_text(name)})" for kind, name in owners
    )
    rows = warehouse.query(
        f"select owner_kind, owner, min(started_on) as started_on from {table} "
        f"where workspace = {sql_text(workspace)} and ({wanted}) group by 1, 2"
    ).to_pylist()
    return {(row["owner_kind"], row["owner"]): row["started_on"] for row in rows}
