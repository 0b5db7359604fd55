"""Audit records: what each run did and why, append-only and hash-chained per workspace.

An operator shows these as receipts: which run (and who or what triggered it) sent or
skipped how many messages for which campaign and window, under which config version, and
every control action with its actor, scope, reason and before/after state.

Tamper evidence: the rows of each workspace (records without one chain under
:data:`GLOBAL_CHAIN`) form a hash chain. Row ``n`` carries ``seq = n``, the ``row_hash``
of row ``n - 1`` as ``prev_hash`` (:data:`GENESIS_HASH` for the first) and its own
``row_hash``: sha256 of :func:`canonical_text`, which covers every other column, so
editing, deleting or reordering a row breaks the chain (:mod:`mailers.audit_verify`
finds where). :func:`append_audit` is the only way to write audit rows; it finds each
chain's head in the small ``audit_heads`` table, which it replaces in the same transaction,
so an append costs the same however long the log is.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import pyarrow as pa

from mailers.clock import stamp
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

AUDIT_TABLE = "audit_log"
AUDIT_HEADS_TABLE = "audit_heads"
GLOBAL_CHAIN = "*"
"""The chain of records with no workspace (workspace names cannot be ``*``)."""
GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of each chain's first row."""
CANONICAL_VERSION = "mailers-audit-v1"


class AuditAction(StrEnum):
    """The kinds of action that leave an audit record."""

    SEND = "send"
    INGEST_EVENTS = "ingest_events"
    REPLAY_EVENTS = "replay_events"
    """Stored payloads re-normalized after a mapping fix (:mod:`mailers.events_replay`)."""
    RECONCILE = "reconcile"
    BREAKER = "breaker"
    """A provider account's circuit breaker changed state (:mod:`mailers.breaker`)."""
    PAUSE = "pause"
    RESUME = "resume"
    AUTO_PAUSE = "auto_pause"
    SUPPRESSION_ADD = "suppression_add"
    SUPPRESSION_REMOVE = "suppression_remove"
    SUPPRESSION_IMPORT = "suppression_import"
    IDENTITY_CHANGE = "identity_change"
    """An identity, account or route changed in the config (:mod:`mailers.identity_changes`)."""
    WEBHOOK_DISABLE = "webhook_disable"
    """A webhook subscriber was disabled for failing (:mod:`mailers.webhooks_out.delivery`)."""
    WEBHOOK_ENABLE = "webhook_enable"
    """A disabled webhook subscriber was enabled again (``mailers webhooks enable``)."""


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

    @property
    def chain(self) -> str:
        """The hash chain this record joins: its workspace, or :data:`GLOBAL_CHAIN`."""
        return self.workspace if self.workspace is not None else GLOBAL_CHAIN

    def row(self) -> dict[str, Any]:
        """The record's columns of :data:`AUDIT_SCHEMA`, without the chain columns."""
        return {
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
            "detail": _json(self.detail),
            "scope": self.scope,
            "reason": self.reason,
            "before": None if self.before is None else _json(self.before),
            "after": None if self.after is None else _json(self.after),
        }


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), sort_keys=True, default=str)


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
        pa.field("scope", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("before", pa.string()),
        pa.field("after", pa.string()),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("prev_hash", pa.string(), nullable=False),
        pa.field("row_hash", pa.string(), nullable=False),
    ]
)
"""Columns of ``mailers.audit_log``; ``counts``, ``detail``, ``before`` and ``after`` are
JSON objects as text. ``seq``, ``prev_hash`` and ``row_hash`` are the chain (see above)."""

HASHED_COLUMNS: tuple[str, ...] = tuple(f.name for f in AUDIT_SCHEMA if f.name != "row_hash")
"""The columns ``row_hash`` covers, in the order :func:`canonical_text` writes them."""

AUDIT_HEADS_SCHEMA = pa.schema(
    [
        pa.field("chain", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("row_hash", pa.string(), nullable=False),
        pa.field("audit_id", pa.string(), nullable=False),
    ]
)
"""Columns of ``mailers.audit_heads``: each chain's last row. A derived index, not a record:
the one owned table replaced in place (by :func:`append_audit`, in its transaction)."""
AUDIT_HEADS_KEY = ("chain",)


def canonical_text(row: Mapping[str, Any]) -> str:
    """The text ``row_hash`` is the sha256 of: each of :data:`HASHED_COLUMNS` in order, as
    ``<length>:<text>`` (``~`` for null), joined by ``|``; the length prefix makes it
    unambiguous whatever the values contain. :func:`canonical_sql` is the same in SQL."""
    parts = [CANONICAL_VERSION]
    for name in HASHED_COLUMNS:
        value = row[name]
        if value is None:
            parts.append("~")
            continue
        text = value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else str(value)
        parts.append(f"{len(text)}:{text}")
    return "|".join(parts)


def row_hash(row: Mapping[str, Any]) -> str:
    """Lower-case hex sha256 of :func:`canonical_text`."""
    return hashlib.sha256(canonical_text(row).encode("utf-8")).hexdigest()


def canonical_sql(warehouse: Warehouse, alias: str) -> str:
    """A SQL expression of :func:`canonical_text` over the audit columns of ``alias``."""
    d = warehouse.dialect
    parts = [f"'{CANONICAL_VERSION}'"]
    for f in AUDIT_SCHEMA:
        if f.name == "row_hash":
            continue
        column = f"{alias}.{d.quote(f.name)}"
        if f.type == pa.timestamp("us"):
            text = d.timestamp_text(column)
        elif f.type == pa.string():
            text = column
        else:
            text = f"cast({column} as varchar)"
        parts.append(
            f"(case when {column} is null then '~' "
            f"else cast(length({text}) as varchar) || ':' || {text} end)"
        )
    return " || '|' || ".join(parts)


_append_lock = threading.Lock()
"""Serializes appends of this process: reading a head and writing its successor is one step.
Other processes are kept out by the warehouse (DuckDB: one writing process per file), and
two transactions racing for one chain collide on ``audit_heads``' key."""


def append_audit(warehouse: Warehouse, records: Sequence[AuditRecord]) -> None:
    """Append ``records`` to ``mailers.audit_log`` in one bulk write, in order, chained.

    Runs in one transaction with the move of the chains' heads (joining the caller's
    transaction when there is one), so a crash leaves both or neither.
    """
    if not records:
        return
    with _append_lock, warehouse.transaction():
        heads = chain_heads(warehouse, sorted({r.chain for r in records}))
        rows = []
        for record in records:
            seq, prev, _ = heads.get(record.chain, (0, GENESIS_HASH, ""))
            row = {**record.row(), "seq": seq + 1, "prev_hash": prev}
            row["row_hash"] = row_hash(row)
            heads[record.chain] = (row["seq"], row["row_hash"], row["audit_id"])
            rows.append(row)
        warehouse.append(MAILERS_SCHEMA, AUDIT_TABLE, pa.Table.from_pylist(rows, AUDIT_SCHEMA))
        _move_heads(warehouse, heads)


def chain_heads(warehouse: Warehouse, chains: Sequence[str]) -> dict[str, tuple[int, str, str]]:
    """Chain → ``(seq, row_hash, audit_id)`` of its last row, for those of ``chains`` with rows.

    Read from ``audit_heads``; a chain missing there (a warehouse from before that table)
    is looked up once in the log itself and then kept in ``audit_heads``.
    """
    if not chains:
        return {}
    marks = ", ".join("?" for _ in chains)
    heads = {
        r["chain"]: (r["seq"], r["row_hash"], r["audit_id"])
        for r in warehouse.query(
            f"select chain, seq, row_hash, audit_id "
            f"from {warehouse.relation(MAILERS_SCHEMA, AUDIT_HEADS_TABLE)} "
            f"where chain in ({marks})",
            list(chains),
        ).to_pylist()
    }
    missing = [c for c in chains if c not in heads]
    if missing:
        marks = ", ".join("?" for _ in missing)
        rows = warehouse.query(
            f"""
            select chain, seq, row_hash, audit_id from (
                select coalesce(workspace, '{GLOBAL_CHAIN}') as chain, seq, row_hash, audit_id,
                       row_number() over (
                           partition by coalesce(workspace, '{GLOBAL_CHAIN}') order by seq desc
                       ) as recency
                from {warehouse.relation(MAILERS_SCHEMA, AUDIT_TABLE)}
                where coalesce(workspace, '{GLOBAL_CHAIN}') in ({marks}) and seq is not null
            ) as ranked
            where recency = 1
            """,
            missing,
        ).to_pylist()
        heads.update({r["chain"]: (r["seq"], r["row_hash"], r["audit_id"]) for r in rows})
    return heads


def _move_heads(warehouse: Warehouse, heads: Mapping[str, tuple[int, str, str]]) -> None:
    chains = sorted(heads)
    marks = ", ".join("?" for _ in chains)
    warehouse.execute(
        f"delete from {warehouse.relation(MAILERS_SCHEMA, AUDIT_HEADS_TABLE)} "
        f"where chain in ({marks})",
        chains,
    )
    warehouse.append(
        MAILERS_SCHEMA,
        AUDIT_HEADS_TABLE,
        pa.Table.from_pylist(
            [
                {"chain": c, "seq": heads[c][0], "row_hash": heads[c][1], "audit_id": heads[c][2]}
                for c in chains
            ],
            AUDIT_HEADS_SCHEMA,
        ),
    )


def chain_legacy_rows(warehouse: Warehouse) -> int:
    """Chain the rows an older Mailers wrote before the chain existed; return how many.

    A one-time migration, run when the chain columns were just added: those rows get
    ``seq``, ``prev_hash`` and ``row_hash`` in ``recorded_at`` order (the only update ever
    made to audit rows), so the whole log verifies from then on.
    """
    table = warehouse.relation(MAILERS_SCHEMA, AUDIT_TABLE)
    legacy = warehouse.query(
        f"select * from {table} where row_hash is null "
        f"order by coalesce(workspace, '{GLOBAL_CHAIN}'), recorded_at, audit_id"
    )
    if legacy.num_rows == 0:
        return 0
    heads: dict[str, tuple[int, str, str]] = {}
    chained = []
    for row in legacy.to_pylist():
        chain = row["workspace"] if row["workspace"] is not None else GLOBAL_CHAIN
        seq, prev, _ = heads.get(chain, (0, GENESIS_HASH, ""))
        row.update(seq=seq + 1, prev_hash=prev)
        row["row_hash"] = row_hash(row)
        heads[chain] = (row["seq"], row["row_hash"], row["audit_id"])
        chained.append({k: row[k] for k in ("audit_id", "seq", "prev_hash", "row_hash")})
    links = pa.Table.from_pylist(chained)
    with warehouse.transaction(), warehouse.staged(links) as staged:
        warehouse.execute(
            f"update {table} set seq = s.seq, prev_hash = s.prev_hash, row_hash = s.row_hash "
            f"from {staged} as s where {table}.audit_id = s.audit_id"
        )
        _move_heads(warehouse, heads)
    return len(chained)
