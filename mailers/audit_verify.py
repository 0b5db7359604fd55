"""Check the audit log's hash chains (see :mod:`mailers.audit`) and compare exported heads.

Every check is set-based SQL over the log, one pass: each row's hash is recomputed from
its own columns, and its link checked against the row before it in its chain. The first
broken row of a chain is named with what is wrong with it:

==============  ============================================================================
problem         meaning
==============  ============================================================================
unchained       a row without ``seq`` or hash: written around :func:`~mailers.audit.append_audit`
duplicate_seq   two rows claim one ``seq``: a row was inserted or copied
gap             ``seq`` values are missing before this row: rows were deleted
reordered       the row's ``prev_hash`` links it after another ``seq``: rows were moved
edited          the row's hash does not match its columns: it was changed after writing
bad_prev_link   ``prev_hash`` is not the hash of the row before: that row was rewritten
                (hash recomputed) or this one forged
head_mismatch   the chain ends elsewhere than ``audit_heads`` says: rows deleted from or
                appended to the end outside :func:`~mailers.audit.append_audit`
==============  ============================================================================

A chain whose last rows were deleted (and ``audit_heads`` rewritten to match) still looks
whole; an exported head (:func:`export_heads`) kept elsewhere catches that
(:func:`check_against`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from mailers.audit import (
    AUDIT_HEADS_TABLE,
    AUDIT_TABLE,
    GENESIS_HASH,
    GLOBAL_CHAIN,
    canonical_sql,
)
from mailers.errors import MailersError
from mailers.warehouse import MAILERS_SCHEMA, Warehouse


class ChainProblem(StrEnum):
    UNCHAINED = "unchained"
    DUPLICATE_SEQ = "duplicate_seq"
    GAP = "gap"
    REORDERED = "reordered"
    EDITED = "edited"
    BAD_PREV_LINK = "bad_prev_link"
    HEAD_MISMATCH = "head_mismatch"


@dataclass(frozen=True)
class ChainBreak:
    """The first broken row of a chain."""

    chain: str
    seq: int | None
    audit_id: str | None
    problem: ChainProblem
    explanation: str


@dataclass(frozen=True)
class ChainReport:
    """One chain (a workspace, or ``*`` for records without one) as verified."""

    chain: str
    rows: int
    head_seq: int | None
    head_hash: str | None
    head_audit_id: str | None
    broken: ChainBreak | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None


def _chain_expr() -> str:
    return f"coalesce(workspace, '{GLOBAL_CHAIN}')"


def _where(workspace: str | None) -> tuple[str, list[Any]]:
    if workspace is None:
        return "", []
    return f"where {_chain_expr()} = ?", [workspace]


def verify_chains(warehouse: Warehouse, workspace: str | None = None) -> list[ChainReport]:
    """Verify every chain (or only ``workspace``'s; ``*`` for global records)."""
    where, params = _where(workspace)
    log = warehouse.relation(MAILERS_SCHEMA, AUDIT_TABLE)
    heads = warehouse.relation(MAILERS_SCHEMA, AUDIT_HEADS_TABLE)
    recomputed = warehouse.dialect.sha256_hex(canonical_sql(warehouse, "a"))
    rows = warehouse.query(
        f"""
        with log as (
            select {_chain_expr()} as chain, seq, audit_id, prev_hash, row_hash,
                   {recomputed} as recomputed
            from {log} as a
            {where}
        ),
        chained as (
            select log.*,
                   lag(seq) over w as prior_seq,
                   lag(row_hash) over w as prior_hash,
                   count(*) over (partition by chain, seq) as copies
            from log
            where seq is not null
            window w as (partition by chain order by seq, audit_id)
        ),
        links as (
            select chain, row_hash, min(seq) as seq from log
            where seq is not null group by chain, row_hash
        ),
        checked as (
            select c.chain, c.seq, c.audit_id, c.prior_seq, l.seq as linked_seq, c.copies,
                   case
                       when c.copies > 1 then 'duplicate_seq'
                       when c.seq <> coalesce(c.prior_seq, 0) + 1 then 'gap'
                       when c.recomputed <> c.row_hash or c.row_hash is null then
                           case when l.seq is not null and l.seq <> c.seq - 1
                                then 'reordered' else 'edited' end
                       when c.prev_hash is distinct from coalesce(c.prior_hash, '{GENESIS_HASH}')
                           then case when l.seq is not null and l.seq <> c.seq - 1
                                     then 'reordered' else 'bad_prev_link' end
                   end as problem
            from chained as c
            left join links as l on l.chain = c.chain and l.row_hash = c.prev_hash
        ),
        unchained as (
            select chain, cast(null as bigint) as seq, audit_id,
                   cast(null as bigint) as prior_seq, cast(null as bigint) as linked_seq,
                   1 as copies, 'unchained' as problem
            from log where seq is null
        ),
        problems as (
            select *, row_number() over (
                partition by chain order by seq nulls first, audit_id
            ) as rank
            from (select * from checked where problem is not null union all
                  select * from unchained) as p
        ),
        summary as (
            select chain, count(*) as n, max(seq) as head_seq from log group by chain
        ),
        tips as (
            select distinct on (chain) chain, seq, row_hash, audit_id from log
            where seq is not null order by chain, seq desc, audit_id
        )
        select c.chain, coalesce(s.n, 0) as n, t.seq as head_seq, t.row_hash as head_hash,
               t.audit_id as head_audit_id, h.seq as recorded_seq, h.row_hash as recorded_hash,
               p.seq as bad_seq, p.audit_id as bad_audit_id, p.problem, p.prior_seq,
               p.linked_seq, p.copies
        from (
            select chain from summary
            union select chain from {heads} {"" if workspace is None else "where chain = ?"}
        ) as c
        left join summary as s on s.chain = c.chain
        left join tips as t on t.chain = c.chain
        left join {heads} as h on h.chain = c.chain
        left join problems as p on p.chain = c.chain and p.rank = 1
        order by c.chain
        """,
        params * 2,
    ).to_pylist()
    return [_report(r) for r in rows]


def _report(r: Mapping[str, Any]) -> ChainReport:
    broken = None
    if r["problem"] is not None:
        broken = ChainBreak(
            r["chain"], r["bad_seq"], r["bad_audit_id"], ChainProblem(r["problem"]), _explain(r)
        )
    elif (r["recorded_seq"], r["recorded_hash"]) != (r["head_seq"], r["head_hash"]):
        recorded = (
            "has no head for this chain"
            if r["recorded_seq"] is None
            else f"says the head is seq {r['recorded_seq']} ({r['recorded_hash'][:12]})"
        )
        ends = "has no rows" if r["head_seq"] is None else f"ends at seq {r['head_seq']}"
        broken = ChainBreak(
            r["chain"],
            r["head_seq"],
            r["head_audit_id"],
            ChainProblem.HEAD_MISMATCH,
            f"the chain {ends} but audit_heads {recorded}: rows were deleted from or "
            "appended to the end outside append_audit (or audit_heads edited)",
        )
    return ChainReport(
        chain=r["chain"],
        rows=r["n"],
        head_seq=r["head_seq"],
        head_hash=r["head_hash"],
        head_audit_id=r["head_audit_id"],
        broken=broken,
    )


def _explain(r: Mapping[str, Any]) -> str:
    seq, problem = r["bad_seq"], ChainProblem(r["problem"])
    if problem is ChainProblem.UNCHAINED:
        return "the row has no seq or hash: it was written around append_audit"
    if problem is ChainProblem.DUPLICATE_SEQ:
        return f"{r['copies']} rows claim seq {seq}: a row was inserted or copied"
    if problem is ChainProblem.GAP:
        first = (r["prior_seq"] or 0) + 1
        missing = f"seq {first}" if first == seq - 1 else f"seq {first}..{seq - 1}"
        return f"{missing} missing before it: rows were deleted"
    if problem is ChainProblem.REORDERED:
        return (
            f"its prev_hash is the hash of seq {r['linked_seq']}, not of seq {seq - 1}: "
            "rows were moved"
        )
    if problem is ChainProblem.EDITED:
        return "its hash does not match its columns: the row was changed after it was written"
    return (
        f"its prev_hash is not the hash of seq {seq - 1}: that row was rewritten "
        "(with its hash recomputed) or this one forged"
    )


def export_heads(reports: list[ChainReport], exported_at: datetime) -> dict[str, Any]:
    """The heads of verified chains as a JSON-able document for :func:`check_against`."""
    return {
        "exported_at": exported_at.isoformat(),
        "heads": {
            r.chain: {"seq": r.head_seq, "row_hash": r.head_hash, "audit_id": r.head_audit_id}
            for r in reports
            if r.head_seq is not None
        },
    }


class HeadsFileError(MailersError):
    """An exported heads file that cannot be read as one."""


def check_against(
    warehouse: Warehouse, exported: Mapping[str, Any], workspace: str | None = None
) -> dict[str, str | None]:
    """Chain → ``None`` when its exported head is still in the log with the same hash (so,
    with the chain verified, nothing at or before it was rewritten), or what is wrong."""
    heads = exported.get("heads")
    if not isinstance(heads, Mapping):
        raise HeadsFileError("not an exported heads document: no 'heads' object")
    wanted = {c: h for c, h in heads.items() if workspace is None or c == workspace}
    if not wanted:
        return {}
    for chain, head in wanted.items():
        if not isinstance(head, Mapping) or not {"seq", "row_hash"} <= set(head):
            raise HeadsFileError(f"head of chain {chain!r} lacks 'seq' or 'row_hash'")
    marks = ", ".join("(?, ?)" for _ in wanted)
    found = warehouse.query(
        f"""
        select {_chain_expr()} as chain, seq, row_hash
        from {warehouse.relation(MAILERS_SCHEMA, AUDIT_TABLE)}
        where ({_chain_expr()}, seq) in ({marks})
        """,
        [v for c, h in wanted.items() for v in (c, int(h["seq"]))],
    ).to_pylist()
    hashes: dict[str, list[str]] = {}
    for row in found:
        hashes.setdefault(row["chain"], []).append(row["row_hash"])
    verdicts: dict[str, str | None] = {}
    for chain, head in sorted(wanted.items()):
        seq, expected = int(head["seq"]), head["row_hash"]
        present = hashes.get(chain, [])
        if not present:
            verdicts[chain] = (
                f"seq {seq} (the exported head) is no longer in the chain: rows were deleted"
            )
        elif present != [expected]:
            verdicts[chain] = (
                f"seq {seq} has hash {present[0][:12]}, the export says {expected[:12]}: the "
                f"chain was rewritten at or before seq {seq}"
            )
        else:
            verdicts[chain] = None
    return verdicts
