"""One sender per campaign window, on a real DuckDB file shared by several connections.

Every test runs twice: on DuckDB as it is (the primary key refuses a second acquisition)
and on DuckDB that declares keys without enforcing them, as Snowflake and BigQuery do, so
the claim takes its fenced path there; the races are then decided by the fence alone.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.claims import CLAIMS_TABLE, FENCE_ROW, FENCE_TABLE, WindowClaim
from mailers.clock import FixedClock
from mailers.errors import ClaimError, ClaimLost, MailersError, WarehouseError, WindowClaimed
from mailers.ledger import LedgerContext
from mailers.tables import ensure_tables
from mailers.warehouse import MAILERS_SCHEMA

WINDOW = "2026-11-30T08:00:00Z"
START = datetime(2026, 11, 30, 8, 0, 5, tzinfo=UTC)
TTL, RENEW, MARGIN = 600.0, 60.0, 120.0


def context(run_id: str, window: str = WINDOW, campaign: str = "pro_tips") -> LedgerContext:
    return LedgerContext(
        workspace="acme", stream="lifecycle", campaign=campaign, send_window=window, run_id=run_id
    )


class Ticker:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.value = 1_000.0

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


class UnkeyedDuckDB(DuckDBWarehouse):
    """DuckDB that, like Snowflake and BigQuery, does not enforce primary keys."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.capabilities = dataclasses.replace(self.capabilities, enforces_primary_keys=False)

    def ensure_table(
        self, schema: str, table: str, columns: pa.Schema, primary_key: Sequence[str] = ()
    ) -> None:
        super().ensure_table(schema, table, columns)


@pytest.fixture(params=["keyed", "unkeyed"])
def engine(request: pytest.FixtureRequest) -> type[DuckDBWarehouse]:
    return DuckDBWarehouse if request.param == "keyed" else UnkeyedDuckDB


@pytest.fixture
def path(tmp_path: Path, engine: type[DuckDBWarehouse]) -> Path:
    path = tmp_path / "warehouse.duckdb"
    with engine(path) as warehouse:
        ensure_tables(warehouse)
    return path


@pytest.fixture
def connect(path: Path, engine: type[DuckDBWarehouse]) -> Iterator[Callable[[], DuckDBWarehouse]]:
    """Open another connection to the one database file (each contender has its own)."""
    opened: list[DuckDBWarehouse] = []

    def open_one() -> DuckDBWarehouse:
        opened.append(engine(path))
        return opened[-1]

    yield open_one
    for warehouse in opened:
        warehouse.close()


def acquire(
    warehouse: DuckDBWarehouse,
    run_id: str,
    clock: FixedClock,
    ticker: Ticker | None = None,
    window: str = WINDOW,
) -> WindowClaim:
    return WindowClaim.acquire(
        warehouse,
        context(run_id, window),
        clock=clock,
        monotonic=ticker or Ticker(),
        ttl=TTL,
        renew_every=RENEW,
        margin=MARGIN,
    )


def claim_rows(warehouse: DuckDBWarehouse) -> list[tuple[int, int, str, str]]:
    rows = warehouse.query(
        f"select generation, beat, event, run_id from {MAILERS_SCHEMA}.{CLAIMS_TABLE} "
        "order by generation, beat"
    ).to_pylist()
    return [(r["generation"], r["beat"], r["event"], r["run_id"]) for r in rows]


def race(
    connect: Callable[[], DuckDBWarehouse], contenders: list[str], attempt: Callable[..., object]
) -> tuple[list[str], dict[str, BaseException]]:
    """Start every contender at once, each on its own connection; who won, who failed how."""
    warehouses = {name: connect() for name in contenders}
    barrier = threading.Barrier(len(contenders))
    won: list[str] = []
    failed: dict[str, BaseException] = {}

    def contend(name: str) -> None:
        barrier.wait()
        try:
            attempt(warehouses[name], name)
        except BaseException as err:
            failed[name] = err
        else:
            won.append(name)

    threads = [threading.Thread(target=contend, args=(name,)) for name in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won, failed


def test_a_free_window_is_claimed_and_released(
    connect: Callable[[], DuckDBWarehouse], clock: FixedClock
) -> None:
    warehouse = connect()
    with acquire(warehouse, "run-a", clock) as claim:
        assert claim.generation == 1
        assert claim.took_over is None
        claim.ensure_held()
    again = acquire(warehouse, "run-b", clock)

    assert again.generation == 2
    assert again.took_over is None  # run-a released: nothing was taken over
    assert claim_rows(warehouse) == [
        (1, 0, "acquired", "run-a"),
        (1, 1, "released", "run-a"),
        (2, 0, "acquired", "run-b"),
    ]


def test_a_second_contender_fails_naming_the_holder_and_its_lease(
    connect: Callable[[], DuckDBWarehouse], clock: FixedClock
) -> None:
    warehouse = connect()
    acquire(warehouse, "run-a", clock)
    clock.advance(30)

    with pytest.raises(WindowClaimed) as refused:
        acquire(connect(), "cli-plan-or-run-b", clock)

    message = str(refused.value)
    assert f"send window {WINDOW} of acme.pro_tips is being sent by run run-a" in message
    assert "its lease expires at 2026-11-30T08:10:05Z" in message
    assert refused.value.holder_run_id == "run-a"
    assert refused.value.expires_at == datetime(2026, 11, 30, 8, 10, 5)
    assert isinstance(refused.value, ClaimError) and isinstance(refused.value, MailersError)
    assert [row[3] for row in claim_rows(warehouse)] == ["run-a"]


@pytest.mark.parametrize("round_", range(8))
def test_of_two_concurrent_contenders_exactly_one_wins(
    connect: Callable[[], DuckDBWarehouse], clock: FixedClock, round_: int
) -> None:
    won, failed = race(
        connect, ["run-a", "run-b"], lambda warehouse, name: acquire(warehouse, name, clock)
    )

    assert len(won) == 1 and len(failed) == 1
    (loser, error), winner = next(iter(failed.items())), won[0]
    assert isinstance(error, WindowClaimed), error
    assert error.holder_run_id == winner
    assert f"is being sent by run {winner}" in str(error)
    assert claim_rows(connect()) == [(1, 0, "acquired", winner)]
    assert loser != winner


class ReadsFromBefore(UnkeyedDuckDB):
    """A contender whose first ``reads`` queries were answered before another run's commit.

    They come from a copy of the database file taken then, so the interleaving that a race
    hits once in a few hundred rounds is played here every time.
    """

    def __init__(self, path: Path, before: Path, reads: int) -> None:
        super().__init__(path)
        self._before = UnkeyedDuckDB(before)
        self._stale_reads = reads

    def query(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        if self._stale_reads > 0:
            self._stale_reads -= 1
            return self._before.query(sql, params)
        return super().query(sql, params)

    def close(self) -> None:
        self._before.close()
        super().close()


def test_a_fence_row_left_behind_by_two_first_uses_never_wins_a_second_acquisition(
    tmp_path: Path, clock: FixedClock
) -> None:
    """Two first uses of the fence can each insert a row at version 0. Here run-a's update
    moved its row to 1 before run-b's row was committed; run-b read version 0 and no claim
    before run-a committed. The row left at 0 must not let run-b acquire as well."""
    path, before = tmp_path / "warehouse.duckdb", tmp_path / "before.duckdb"
    fence = f"{MAILERS_SCHEMA}.{FENCE_TABLE}"

    def first_use(warehouse: DuckDBWarehouse) -> None:
        """What one contender's first use of the fence inserts."""
        warehouse.execute(
            f"insert into {fence} (fence, version, holder, updated_at) values (?, 0, '', ?)",
            [FENCE_ROW, START.replace(tzinfo=None)],
        )

    with UnkeyedDuckDB(path) as warehouse:
        ensure_tables(warehouse)
        first_use(warehouse)
    shutil.copy(path, before)
    with UnkeyedDuckDB(path) as warehouse:
        acquire(warehouse, "run-a", clock)
        first_use(warehouse)  # run-b's, committed after run-a's update read the fence
        assert warehouse.query(f"select version from {fence} order by 1").to_pylist() == [
            {"version": 0},
            {"version": 1},
        ]

    with ReadsFromBefore(path, before, reads=2) as late, pytest.raises(WindowClaimed) as refused:
        acquire(late, "run-b", clock)

    assert refused.value.holder_run_id == "run-a"
    with UnkeyedDuckDB(path) as warehouse:
        assert claim_rows(warehouse) == [(1, 0, "acquired", "run-a")]


def test_a_killed_holder_is_taken_over_by_exactly_one_of_two_takers(
    connect: Callable[[], DuckDBWarehouse], clock: FixedClock
) -> None:
    killed = acquire(connect(), "run-killed", clock, Ticker())
    clock.advance(TTL - 1)
    with pytest.raises(WindowClaimed, match="run run-killed"):
        acquire(connect(), "too-early", clock)
    clock.advance(1)  # the lease has lapsed: no heartbeat for a whole TTL

    taken: dict[str, WindowClaim] = {}

    def take(warehouse: DuckDBWarehouse, name: str) -> None:
        taken[name] = acquire(warehouse, name, clock)

    won, failed = race(connect, ["taker-a", "taker-b"], take)

    assert len(won) == 1 and len(failed) == 1
    winner = taken[won[0]]
    assert winner.generation == 2
    assert winner.took_over is not None and winner.took_over.run_id == "run-killed"
    error = next(iter(failed.values()))
    assert isinstance(error, WindowClaimed) and error.holder_run_id == won[0]
    rows = claim_rows(connect())
    assert [row for row in rows if row[0] == 2] == [(2, 0, "acquired", won[0])]
    assert killed.generation == 1


def test_the_old_holder_fences_itself_once_its_lease_may_have_lapsed(
    connect: Callable[[], DuckDBWarehouse], clock: FixedClock
) -> None:
    ticker = Ticker()
    stalled = acquire(connect(), "run-stalled", clock, ticker)
    clock.advance(TTL)
    ticker.advance(TTL)
    taker = acquire(connect(), "run-taker", clock)
    before = claim_rows(connect())

    with pytest.raises(ClaimLost) as lost:
        stalled.ensure_held()

    message = str(lost.value)
    assert "run run-stalled" in message and WINDOW in message
    assert "last renewed 600s ago (lease 600s, safety margin 120s)" in message
    assert claim_rows(connect()) == before  # a lapsed lease is never renewed
    taker.ensure_held()


def test_a_holder_stops_before_the_lease_could_lapse_even_if_nobody_took_over(
    connect: Callable[[], DuckDBWarehouse], clock: FixedClock
) -> None:
    """A long pause between provider calls (a stall, a slow render) fences the holder."""
    warehouse, ticker = connect(), Ticker()
    claim = acquire(warehouse, "run-a", clock, ticker)
    ticker.advance(TTL - MARGIN - 1)
    claim.ensure_held()  # still safe: renews
    assert [row[2] for row in claim_rows(warehouse)] == ["acquired", "renewed"]
    ticker.advance(TTL - MARGIN)

    with pytest.raises(ClaimLost, match="last renewed 480s ago"):
        claim.ensure_held()
    assert [row[2] for row in claim_rows(warehouse)] == ["acquired", "renewed"]


def test_a_holder_whose_window_was_taken_over_learns_it_at_its_next_renewal(
    connect: Callable[[], DuckDBWarehouse], clock: FixedClock
) -> None:
    """The taker's wall clock ran ahead (skew): the holder's own renewal read-back stops it."""
    ticker = Ticker()
    holder = acquire(connect(), "run-a", clock, ticker)
    ahead = FixedClock(START + timedelta(seconds=TTL))
    acquire(connect(), "run-b", ahead)
    ticker.advance(RENEW)

    with pytest.raises(ClaimLost, match="was taken over by run run-b"):
        holder.ensure_held()
    with pytest.raises(ClaimLost, match="was taken over by run run-b"):
        holder.renew()


def test_renewals_keep_the_window_and_are_rate_limited(
    connect: Callable[[], DuckDBWarehouse], clock: FixedClock
) -> None:
    warehouse, ticker = connect(), Ticker()
    claim = acquire(warehouse, "run-a", clock, ticker)
    for _ in range(100):  # a hundred provider calls within one renewal interval
        claim.ensure_held()
    assert len(claim_rows(warehouse)) == 1
    for _ in range(15):  # fifteen minutes of sending, renewing every minute
        clock.advance(RENEW)
        ticker.advance(RENEW)
        claim.ensure_held()
        claim.ensure_held()

    assert [row[2] for row in claim_rows(warehouse)] == ["acquired"] + ["renewed"] * 15
    with pytest.raises(WindowClaimed) as refused:
        acquire(connect(), "run-b", clock)
    assert "last heartbeat 2026-11-30T08:15:05Z" in str(refused.value)
    assert "expires at 2026-11-30T08:25:05Z" in str(refused.value)


def test_release_after_a_takeover_leaves_the_new_holders_claim_alone(
    connect: Callable[[], DuckDBWarehouse], clock: FixedClock
) -> None:
    old = acquire(connect(), "run-old", clock)
    clock.advance(TTL)
    new = acquire(connect(), "run-new", clock)

    old.release()
    old.release()

    assert [row for row in claim_rows(connect()) if row[2] == "released"] == []
    with pytest.raises(WindowClaimed, match="run run-new"):
        acquire(connect(), "run-third", clock)
    new.ensure_held()
    with pytest.raises(ClaimLost, match="already released"):
        old.ensure_held()


def test_the_claim_is_released_when_the_send_fails(
    connect: Callable[[], DuckDBWarehouse], clock: FixedClock
) -> None:
    warehouse = connect()
    with pytest.raises(RuntimeError), acquire(warehouse, "run-a", clock):
        raise RuntimeError("the provider adapter crashed")

    assert acquire(warehouse, "run-b", clock).generation == 2


def test_windows_and_campaigns_are_claimed_independently(
    connect: Callable[[], DuckDBWarehouse], clock: FixedClock
) -> None:
    warehouse = connect()
    acquire(warehouse, "run-a", clock)
    acquire(warehouse, "run-b", clock, window="2026-11-23T08:00:00Z")
    WindowClaim.acquire(warehouse, context("run-c", campaign="launch"), clock=clock)

    assert len(claim_rows(warehouse)) == 3


def test_the_warehouse_refuses_a_second_row_for_one_generation(
    connect: Callable[[], DuckDBWarehouse], clock: FixedClock, engine: type[DuckDBWarehouse]
) -> None:
    warehouse = connect()
    acquire(warehouse, "run-a", clock)
    if engine is UnkeyedDuckDB:
        pytest.skip("this engine declares the key without enforcing it: the fence decides")

    with pytest.raises(WarehouseError, match=r"(?i)primary key|duplicate key"):
        warehouse.execute(
            f"insert into {MAILERS_SCHEMA}.{CLAIMS_TABLE} select * replace ('run-x' as run_id) "
            f"from {MAILERS_SCHEMA}.{CLAIMS_TABLE}"
        )


@pytest.mark.parametrize(
    ("ttl", "renew_every", "margin"), [(600, 600, 120), (600, 60, 0), (100, 60, 120), (600, 0, 1)]
)
def test_impossible_lease_timing_is_refused(
    connect: Callable[[], DuckDBWarehouse], ttl: float, renew_every: float, margin: float
) -> None:
    with pytest.raises(ValueError, match="renew_every"):
        WindowClaim.acquire(
            connect(), context("run-a"), ttl=ttl, renew_every=renew_every, margin=margin
        )
