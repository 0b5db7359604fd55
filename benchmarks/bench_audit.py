"""What an audit append and a chain verification cost as the audit log grows.

    .venv/bin/python benchmarks/bench_audit.py --rows 1000000 --workspaces 5

Builds a DuckDB file whose audit log holds ``--rows`` validly chained rows spread over
``--workspaces`` workspaces and the global chain. At 1,000, 100,000 and ``--rows`` rows it
prints the median time of one :func:`~mailers.audit.append_audit` call (one record), of
its head lookup alone (``chain_heads``, from ``audit_heads``), of the same head found by
scanning the log (``max(seq)`` of one workspace, the alternative), and the time of
``verify_chains`` over the whole log. Medians leave out the first append, which finds the
heads in the log once after the bulk build.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
from scratch import duckdb_file

from mailers.audit import (
    AUDIT_SCHEMA,
    GENESIS_HASH,
    GLOBAL_CHAIN,
    AuditAction,
    AuditRecord,
    append_audit,
    chain_heads,
    row_hash,
)
from mailers.audit_verify import verify_chains
from mailers.tables import ensure_tables
from mailers.warehouse import Warehouse


def _grow(warehouse: Warehouse, rows: int, workspaces: list[str | None]) -> None:
    """Append ``rows`` chained rows (as many appends would leave them): all but one per
    chain in bulk, then one per chain through :func:`append_audit`."""
    rows -= len(workspaces)
    chains = [w if w is not None else GLOBAL_CHAIN for w in workspaces]
    heads = chain_heads(warehouse, chains)
    batch: list[dict[str, Any]] = []
    for i in range(rows):
        workspace = workspaces[i % len(workspaces)]
        record = AuditRecord(
            run_id=f"bench-{i // 100}",
            actor="bench",
            action=AuditAction.SEND,
            config_hash="cfg",
            counts={"accepted": i % 500, "rejected": i % 7},
            detail={"accounts": {"a": i % 13}},
            workspace=workspace,
            campaign="pro_tips",
        )
        seq, prev, _ = heads.get(record.chain, (0, GENESIS_HASH, ""))
        row = {**record.row(), "seq": seq + 1, "prev_hash": prev}
        row["row_hash"] = row_hash(row)
        heads[record.chain] = (int(row["seq"]), str(row["row_hash"]), str(row["audit_id"]))
        batch.append(row)
        if len(batch) == 50_000 or i == rows - 1:
            warehouse.append("mailers", "audit_log", pa.Table.from_pylist(batch, AUDIT_SCHEMA))
            batch = []
    # The bulk insert went around append_audit: drop the heads it keeps, so its next call
    # finds them in the log once (the upgrade path) and keeps them from then on.
    warehouse.execute("delete from mailers.audit_heads")
    append_audit(
        warehouse,
        [AuditRecord("bench", "bench", AuditAction.SEND, "cfg", workspace=w) for w in workspaces],
    )


def _median_ms(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workspaces", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    workspaces: list[str | None] = [f"ws{i}" for i in range(args.workspaces)] + [None]
    steps = sorted({s for s in (1_000, 100_000, args.rows) if s <= args.rows})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.duckdb"
        with duckdb_file(path) as warehouse:
            ensure_tables(warehouse)
            size = 0
            one = AuditRecord("bench", "bench", AuditAction.BREAKER, "cfg", workspace="ws1")
            print(
                "rows       append_audit (ms)  head from audit_heads (ms)  head by scan (ms)  "
                "verify_chains (s)  build (s)"
            )
            for step in steps:
                start = time.perf_counter()
                _grow(warehouse, step - size, workspaces)
                built = time.perf_counter() - start
                size = step
                appended = _median_ms(lambda: append_audit(warehouse, [one]), args.repeat)
                size += args.repeat
                looked_up = _median_ms(lambda: chain_heads(warehouse, ["ws1"]), args.repeat)
                scanned = _median_ms(
                    lambda: warehouse.query(
                        "select max(seq) from mailers.audit_log where workspace = 'ws1'"
                    ),
                    args.repeat,
                )
                start = time.perf_counter()
                reports = verify_chains(warehouse)
                verified = time.perf_counter() - start
                assert all(r.ok for r in reports), [r.broken for r in reports if r.broken]
                assert sum(r.rows for r in reports) == size
                print(
                    f"{size:<10} {appended:>17.2f}  {looked_up:>26.2f}  {scanned:>17.2f}  "
                    f"{verified:>17.2f}  "
                    f"{built:>9.1f}"
                )


if __name__ == "__main__":
    main()
