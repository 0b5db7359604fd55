"""The audit log's hash chains on a real DuckDB file: appends chain per workspace, and any
edit, deletion, reordering or forged row is found and the first broken row named."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.audit import (
    AUDIT_SCHEMA,
    GENESIS_HASH,
    GLOBAL_CHAIN,
    AuditAction,
    AuditRecord,
    append_audit,
    row_hash,
)
from mailers.audit_verify import (
    ChainProblem,
    ChainReport,
    check_against,
    export_heads,
    verify_chains,
)
from mailers.clock import FixedClock, utcnow
from mailers.errors import WarehouseError
from mailers.tables import ensure_tables

LOG = "mailers.audit_log"


def record(
    workspace: str | None, action: AuditAction = AuditAction.SEND, **kw: object
) -> AuditRecord:
    return AuditRecord(
        run_id=kw.pop("run_id", "run-1"),  # type: ignore[arg-type]
        actor="dagster:schedule",
        action=action,
        config_hash="cfg",
        workspace=workspace,
        **kw,  # type: ignore[arg-type]
    )


def demo_like_log(path: Path) -> None:
    """What a demo leaves: sends and breakers per workspace, ingestion without one, pauses
    with scope, reason and before/after, some in one batch, some inside a transaction."""
    with DuckDBWarehouse(path) as warehouse:
        ensure_tables(warehouse)
        append_audit(warehouse, [record("acme", counts={"accepted": 10}, campaign="pro_tips")])
        append_audit(warehouse, [record("globex", counts={"accepted": 7})])
        append_audit(warehouse, [record(None, AuditAction.INGEST_EVENTS, counts={"files": 2})])
        append_audit(
            warehouse,
            [
                record(
                    "acme", AuditAction.BREAKER, detail={"account": "acme_a", "to_state": "open"}
                ),
                record("globex", AuditAction.BREAKER, detail={"account": "g", "to_state": "open"}),
                record(
                    "acme", AuditAction.BREAKER, detail={"account": "acme_a", "to_state": "closed"}
                ),
            ],
        )
        with warehouse.transaction():
            append_audit(
                warehouse,
                [
                    record(
                        "acme",
                        AuditAction.PAUSE,
                        scope="stream:acme.lifecycle",
                        reason="bounce storm — ünïcode 👩‍👩‍👧",
                        before={"paused": False},
                        after={"paused": True},
                    )
                ],
            )
        append_audit(warehouse, [record("acme", AuditAction.RESUME, reason="fixed")])
        append_audit(warehouse, [record(None, AuditAction.RECONCILE, counts={"accepted": 1})])


def reports(path: Path, workspace: str | None = None) -> dict[str, ChainReport]:
    with DuckDBWarehouse(path, read_only=True) as warehouse:
        return {r.chain: r for r in verify_chains(warehouse, workspace)}


def rows_of(path: Path, chain: str) -> list[dict[str, object]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return (
            con.sql(
                f"select * from {LOG} where coalesce(workspace, '*') = ? order by seq",
                params=[chain],
            )
            .to_arrow_table()
            .to_pylist()
        )


@pytest.fixture
def log(tmp_path: Path, fixed_clock: FixedClock) -> Path:
    path = tmp_path / "warehouse.duckdb"
    demo_like_log(path)
    return path


def test_a_demo_like_sequence_verifies_per_workspace(log: Path) -> None:
    found = reports(log)

    assert {c: (r.rows, r.head_seq, r.ok) for c, r in found.items()} == {
        "acme": (5, 5, True),
        "globex": (2, 2, True),
        GLOBAL_CHAIN: (2, 2, True),
    }
    acme = rows_of(log, "acme")
    assert [r["seq"] for r in acme] == [1, 2, 3, 4, 5]
    assert acme[0]["prev_hash"] == GENESIS_HASH
    assert all(b["prev_hash"] == a["row_hash"] for a, b in itertools.pairwise(acme))
    assert all(r["row_hash"] == row_hash(r) for r in acme)
    assert found["acme"].head_hash == acme[-1]["row_hash"]
    pause = acme[3]
    assert (pause["scope"], pause["before"], pause["after"]) == (
        "stream:acme.lifecycle",
        '{"paused": false}',
        '{"paused": true}',
    )
    assert "reason" not in str(pause["detail"])
    assert reports(log, "globex").keys() == {"globex"}


def test_a_rolled_back_transaction_leaves_neither_rows_nor_a_moved_head(log: Path) -> None:
    with DuckDBWarehouse(log) as warehouse:
        with pytest.raises(RuntimeError, match="boom"), warehouse.transaction():
            append_audit(warehouse, [record("acme")])
            raise RuntimeError("boom")
        append_audit(warehouse, [record("acme")])

    assert (reports(log)["acme"].head_seq, reports(log)["acme"].ok) == (6, True)


def _sql(path: Path, *statements: str, params: list[object] | None = None) -> None:
    with duckdb.connect(str(path)) as con:
        for statement in statements:
            con.execute(statement, params or [])


def edit(path: Path, seq: int) -> None:
    _sql(path, f"update {LOG} set actor = 'mallory' where workspace = 'acme' and seq = {seq}")


def delete(path: Path, seq: int) -> None:
    _sql(path, f"delete from {LOG} where workspace = 'acme' and seq = {seq}")


def swap(path: Path, seq: int) -> None:
    other = seq + 1 if seq < 5 else seq - 1
    _sql(
        path,
        f"update {LOG} set seq = case seq when {seq} then {other} else {seq} end "
        f"where workspace = 'acme' and seq in ({seq}, {other})",
    )


def forge(path: Path, seq: int) -> None:
    """A forged row claiming ``seq``, well formed (its own hash is right)."""
    original = rows_of(path, "acme")[seq - 1]
    forged = {**original, "audit_id": "forged", "counts": '{"accepted": 0}'}
    forged["row_hash"] = row_hash(forged)
    with DuckDBWarehouse(path) as warehouse:
        warehouse.append("mailers", "audit_log", pa.Table.from_pylist([forged], AUDIT_SCHEMA))


def rehash(path: Path, seq: int) -> None:
    """An edit whose author also recomputed the row's own hash."""
    row = {**rows_of(path, "acme")[seq - 1], "reason": "nothing happened"}
    _sql(
        path,
        f"update {LOG} set reason = ?, row_hash = ? where workspace = 'acme' and seq = {seq}",
        params=[row["reason"], row_hash(row)],
    )


Tamper = Callable[[Path, int], None]


def _expected(kind: str, seq: int) -> tuple[ChainProblem, int]:
    """What the first broken row must be, and its seq, after ``kind`` at ``seq`` (of 5)."""
    if kind == "edit":
        return ChainProblem.EDITED, seq
    if kind == "delete":
        return (ChainProblem.HEAD_MISMATCH, 4) if seq == 5 else (ChainProblem.GAP, seq + 1)
    if kind == "swap":
        return ChainProblem.REORDERED, min(
            seq, 4
        )  # swapped with the next row (the last: the one before)
    if kind == "forge":
        return ChainProblem.DUPLICATE_SEQ, seq
    return (ChainProblem.HEAD_MISMATCH, 5) if seq == 5 else (ChainProblem.BAD_PREV_LINK, seq + 1)


@pytest.mark.parametrize("seq", [1, 3, 5], ids=["first", "middle", "last"])
@pytest.mark.parametrize(
    ("kind", "tamper"),
    [("edit", edit), ("delete", delete), ("swap", swap), ("forge", forge), ("rehash", rehash)],
)
def test_tampering_with_any_row_is_found_and_the_first_broken_row_named(
    log: Path, kind: str, tamper: Tamper, seq: int
) -> None:
    before = {r["seq"]: r["audit_id"] for r in rows_of(log, "acme")}

    tamper(log, seq)

    found = reports(log)
    assert found["globex"].ok and found[GLOBAL_CHAIN].ok
    broken = found["acme"].broken
    assert broken is not None
    problem, at = _expected(kind, seq)
    assert (broken.chain, broken.problem, broken.seq) == ("acme", problem, at), broken
    if kind == "forge":
        assert broken.audit_id in {before[seq], "forged"}
    elif kind == "swap":
        assert broken.audit_id == before[min(seq + 1, 5)]  # the row moved into the earlier place
    else:
        assert broken.audit_id == before[at]
    assert broken.explanation


def test_a_swap_names_the_row_now_in_the_earlier_place(log: Path) -> None:
    before = {r["seq"]: r["audit_id"] for r in rows_of(log, "acme")}

    swap(log, 2)

    broken = reports(log)["acme"].broken
    assert broken is not None
    assert (broken.problem, broken.seq, broken.audit_id) == (ChainProblem.REORDERED, 2, before[3])
    assert "hash of seq 3" in broken.explanation


def test_a_row_written_around_append_audit_is_found(log: Path) -> None:
    row = {**rows_of(log, "globex")[0], "audit_id": "sneaky", "seq": None, "row_hash": None}
    with duckdb.connect(str(log)) as con:
        con.register("forged", pa.Table.from_pylist([row]))
        with pytest.raises(duckdb.ConstraintException, match="NOT NULL"):
            con.execute(f"insert into {LOG} select * from forged")
        # Someone allowed to change the table's definition gets it in (an upgraded log has
        # these columns nullable anyway).
        for column in ("seq", "prev_hash", "row_hash"):
            con.execute(f"alter table {LOG} alter column {column} drop not null")
        con.execute(f"insert into {LOG} select * from forged")

    broken = reports(log)["globex"].broken

    assert broken is not None
    assert (broken.problem, broken.audit_id) == (ChainProblem.UNCHAINED, "sneaky")


def test_a_well_forged_append_at_the_end_disagrees_with_the_recorded_head(log: Path) -> None:
    last = rows_of(log, "globex")[-1]
    forged = {**last, "audit_id": "tail", "seq": last["seq"] + 1, "prev_hash": last["row_hash"]}  # type: ignore[operator]
    forged["row_hash"] = row_hash(forged)
    with DuckDBWarehouse(log) as warehouse:
        warehouse.append("mailers", "audit_log", pa.Table.from_pylist([forged], AUDIT_SCHEMA))

    broken = reports(log)["globex"].broken

    assert broken is not None
    assert (broken.problem, broken.seq, broken.audit_id) == (ChainProblem.HEAD_MISMATCH, 3, "tail")


def rewrite_chain_from(path: Path, seq: int) -> None:
    """A thorough forger: edits ``seq`` and re-chains everything after it, heads included."""
    rows = rows_of(path, "acme")
    rows[seq - 1]["actor"] = "mallory"
    prev = rows[seq - 2]["row_hash"] if seq > 1 else GENESIS_HASH
    for row in rows[seq - 1 :]:
        row["prev_hash"] = prev
        row["row_hash"] = prev = row_hash(row)
    with duckdb.connect(str(path)) as con:
        con.register("rewritten", pa.Table.from_pylist(rows[seq - 1 :], AUDIT_SCHEMA))
        con.execute(
            f"update {LOG} set actor = r.actor, prev_hash = r.prev_hash, row_hash = r.row_hash "
            f"from rewritten as r where {LOG}.audit_id = r.audit_id"
        )
        con.execute(
            "update mailers.audit_heads set row_hash = ? where chain = 'acme'",
            [rows[-1]["row_hash"]],
        )


def test_an_exported_head_finds_a_rewrite_before_it_that_verify_alone_cannot(log: Path) -> None:
    with DuckDBWarehouse(log, read_only=True) as warehouse:
        exported = export_heads(verify_chains(warehouse), utcnow())
    with DuckDBWarehouse(log) as warehouse:
        append_audit(warehouse, [record("acme"), record("globex")])  # the log goes on

    rewrite_chain_from(log, 2)

    assert all(r.ok for r in reports(log).values())
    with DuckDBWarehouse(log, read_only=True) as warehouse:
        verdicts = check_against(warehouse, exported)
    assert verdicts["globex"] is None and verdicts[GLOBAL_CHAIN] is None
    assert verdicts["acme"] is not None and "rewritten at or before seq 5" in verdicts["acme"]


def test_an_exported_head_finds_a_truncated_chain(log: Path) -> None:
    with DuckDBWarehouse(log, read_only=True) as warehouse:
        exported = export_heads(verify_chains(warehouse), utcnow())
    acme = rows_of(log, "acme")
    _sql(
        log,
        f"delete from {LOG} where workspace = 'acme' and seq = 5",
        f"update mailers.audit_heads set seq = 4, row_hash = '{acme[3]['row_hash']}', "
        f"audit_id = '{acme[3]['audit_id']}' where chain = 'acme'",
    )

    assert reports(log)["acme"].ok
    with DuckDBWarehouse(log, read_only=True) as warehouse:
        verdict = check_against(warehouse, exported, "acme")
    assert verdict.keys() == {"acme"}
    assert "no longer in the chain" in str(verdict["acme"])


def test_an_audit_log_from_before_the_chain_is_chained_once_on_upgrade(
    tmp_path: Path, fixed_clock: FixedClock
) -> None:
    path = tmp_path / "old.duckdb"
    old_columns = [
        f
        for f in AUDIT_SCHEMA
        if f.name not in {"scope", "reason", "before", "after", "seq", "prev_hash", "row_hash"}
    ]
    with duckdb.connect(str(path)) as con:
        con.execute("create schema mailers")
        legacy = []
        for i, workspace in enumerate(["acme", None, "acme", "globex"]):
            fixed_clock.advance(1)
            row = record(workspace, run_id=f"old-{i}").row()
            legacy.append({f.name: row[f.name] for f in old_columns})
        con.register("legacy", pa.Table.from_pylist(legacy, pa.schema(old_columns)))
        con.execute(f"create table {LOG} as select * from legacy")

    with DuckDBWarehouse(path) as warehouse:
        ensure_tables(warehouse)
        ensure_tables(warehouse)  # idempotent: chains nothing twice
        append_audit(warehouse, [record("acme", run_id="new")])

    found = reports(path)
    assert {c: (r.rows, r.head_seq, r.ok) for c, r in found.items()} == {
        "acme": (3, 3, True),
        "globex": (1, 1, True),
        GLOBAL_CHAIN: (1, 1, True),
    }
    assert [r["run_id"] for r in rows_of(path, "acme")] == ["old-0", "old-2", "new"]


def test_two_writers_racing_for_one_chain_cannot_fork_it(log: Path) -> None:
    """Two connections in one process (DuckDB lets only one process write a file): the
    second transaction to move a chain's head is refused, so no two rows share a seq."""
    with DuckDBWarehouse(log) as first, DuckDBWarehouse(log) as second, first.transaction():
        append_audit(first, [record("acme", run_id="first")])
        with (
            pytest.raises(WarehouseError, match="Conflict"),
            second.transaction(),
        ):
            append_audit(second, [record("acme", run_id="second")])

    found = reports(log)["acme"]
    assert (found.rows, found.ok) == (6, True)
    assert rows_of(log, "acme")[-1]["run_id"] == "first"


def test_a_whole_chain_deleted_is_found_by_its_recorded_head(log: Path) -> None:
    _sql(log, f"delete from {LOG} where workspace = 'globex'")

    found = reports(log)

    assert found["acme"].ok and found[GLOBAL_CHAIN].ok
    broken = found["globex"].broken
    assert found["globex"].rows == 0 and broken is not None
    assert broken.problem is ChainProblem.HEAD_MISMATCH
    assert "has no rows but audit_heads says the head is seq 2" in broken.explanation
    assert reports(log, "globex")["globex"].broken == broken
