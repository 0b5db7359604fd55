"""One sender per campaign window: a claim that two runs of one window cannot both hold.

Two runs of the same window (two Dagster runs, a run and a CLI call, workers on a
warehouse with many writers) must never send side by side: each would treat the other's
``dispatching`` rows as a dead run's and hand messages over twice. So a run claims the
window before it sends, in ``mailers.send_claims`` (append-only, like every Mailers table),
one row per event of one *generation* of the claim::

    generation  beat  event     run_id  ttl_seconds  recorded_at
    1           0     acquired  run-a   600          08:00:01
    1           1     renewed   run-a   600          08:01:01
    1           2     released  run-a   600          08:04:12
    2           0     acquired  run-b   600          09:10:00   (run-b then died)
    3           0     acquired  run-c   600          09:25:30   (took over: lapsed 09:20:00)

* **Acquire** is a compare-and-set: read the latest generation N; when it is free (released,
  or its last beat is older than its TTL) insert ``(N + 1, beat 0)``. The primary key
  ``(workspace, campaign, send_window, generation, beat)`` lets exactly one contender's
  insert of generation N + 1 succeed; the loser reads the winner back and fails naming it.
  DuckDB and Postgres enforce primary keys.
* **The fence**, where the engine does not enforce primary keys (Snowflake, BigQuery: both
  accept a key and never check it, so two inserts of generation N + 1 would both land).
  There the compare-and-set moves to ``mailers.send_claim_fence``, one row (two, should two
  first uses race) whose ``version`` every acquisition bumps: a contender reads the version
  *before* the claim state, then in one transaction bumps every fence row by one where the
  highest version is still ``v``, and inserts its generation only if that update changed a
  row. Concurrent updates of one row serialize on both engines (Snowflake locks the table
  for the update until commit; BigQuery aborts the later of two transactions that mutate
  one table), so of two contenders that read the same version exactly one commits; the
  other re-reads and finds the window held. A ``MERGE ... when not matched then insert``
  would not do: an insert-only merge runs concurrently with another like a plain insert.
* **Lease**: the holder appends a ``renewed`` beat at most every ``renew_every`` seconds.
  A claim whose last beat is older than its TTL (stored in its rows, so a taker applies the
  holder's TTL, not its own) may be taken over by inserting the next generation.
* **Self-fencing**: before each provider call, :meth:`WindowClaim.ensure_held` checks by the
  holder's own monotonic clock that its last successful renewal is younger than
  ``ttl - margin``, and every renewal reads back that no later generation exists. A holder
  never renews a lease that may have lapsed: it stops with :class:`ClaimLost`. ``margin``
  has to cover a provider request still in flight at the fence and the clock skew between
  the hosts of holder and taker (beats are stamped with the writer's wall clock).
* **Release** on finish appends a ``released`` beat; a killed holder's claim lapses after
  its TTL instead.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import TracebackType
from typing import Any

import pyarrow as pa

from mailers import clock as mailers_clock
from mailers.clock import Clock
from mailers.errors import ClaimError, ClaimLost, WarehouseError, WindowClaimed
from mailers.ledger import LedgerContext
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

CLAIMS_TABLE = "send_claims"

CLAIM_TTL_SECONDS = 600.0
"""How long a claim lives without a heartbeat before another run may take it over."""

RENEW_EVERY_SECONDS = 60.0
"""A holder renews its claim at most this often (when a provider call is about to start)."""

SAFETY_MARGIN_SECONDS = 120.0
"""A holder stops this long before its lease could lapse (requests in flight, clock skew)."""

CONTENTION_PATIENCE_SECONDS = 10.0
"""How long a contender that lost the key waits (real time) for the winner's row to show."""

CONTENTION_PAUSE_SECONDS = 0.05


class ClaimEvent(StrEnum):
    """What one row of ``mailers.send_claims`` records."""

    ACQUIRED = "acquired"
    RENEWED = "renewed"
    RELEASED = "released"


CLAIMS_SCHEMA = pa.schema(
    [
        pa.field("workspace", pa.string(), nullable=False),
        pa.field("campaign", pa.string(), nullable=False),
        pa.field("send_window", pa.string(), nullable=False),
        pa.field("generation", pa.int64(), nullable=False),
        pa.field("beat", pa.int64(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("holder", pa.string(), nullable=False),
        pa.field("ttl_seconds", pa.float64(), nullable=False),
        pa.field("recorded_at", pa.timestamp("us"), nullable=False),
    ]
)
"""Columns of ``mailers.send_claims``; ``holder`` tells two acquisitions by one run apart."""

CLAIMS_KEY = ("workspace", "campaign", "send_window", "generation", "beat")
"""The primary key that makes acquiring a generation a compare-and-set."""

FENCE_TABLE = "send_claim_fence"
FENCE_SCHEMA = pa.schema(
    [
        pa.field("fence", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("holder", pa.string(), nullable=False),
        pa.field("updated_at", pa.timestamp("us"), nullable=False),
    ]
)
"""Columns of ``mailers.send_claim_fence``: the one row bumped by every acquisition where
primary keys are not enforced; ``holder`` is the last acquirer's."""

FENCE_ROW = "send_claims"
"""The fence row's name (one fence for every window: acquisitions are rare)."""


class _FenceMoved(Exception):
    """Another acquisition bumped the fence between this contender's read and its update."""


@dataclass(frozen=True)
class ClaimState:
    """The latest generation of one window's claim, as the warehouse holds it."""

    generation: int
    run_id: str
    holder: str
    ttl: timedelta
    acquired_at: datetime
    last_beat_at: datetime
    beats: int
    released: bool

    @property
    def expires_at(self) -> datetime:
        """When the lease lapses unless renewed (UTC, naive like the column)."""
        return self.last_beat_at + self.ttl

    def is_free(self, now: datetime) -> bool:
        """Whether another run may take the window at ``now`` (UTC, naive)."""
        return self.released or self.expires_at <= now


class WindowClaim:
    """This run's hold on one campaign window; use :meth:`acquire`, then ``with``."""

    def __init__(
        self,
        warehouse: Warehouse,
        context: LedgerContext,
        state: ClaimState,
        *,
        now: Callable[[], datetime],
        monotonic: Callable[[], float],
        renewed_at: float,
        renew_every: float,
        margin: float,
        took_over: ClaimState | None,
    ) -> None:
        self.warehouse = warehouse
        self.context = context
        self.generation = state.generation
        self.ttl = state.ttl.total_seconds()
        self.took_over = took_over
        """The lapsed claim of a run that died holding this window, if this one took it."""
        self._now = now
        self._monotonic = monotonic
        self._renewed_at = renewed_at
        self._renew_every = renew_every
        self._margin = margin
        self._state = state
        self._beats = state.beats
        self._released = False

    @classmethod
    def acquire(
        cls,
        warehouse: Warehouse,
        context: LedgerContext,
        *,
        clock: Clock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        ttl: float = CLAIM_TTL_SECONDS,
        renew_every: float = RENEW_EVERY_SECONDS,
        margin: float = SAFETY_MARGIN_SECONDS,
    ) -> WindowClaim:
        """Claim the window of ``context`` for its run, or raise :class:`WindowClaimed`.

        ``clock`` stamps the rows and judges other claims' leases (default: the clock in
        force, :func:`mailers.clock.now`); ``monotonic`` times this holder's own renewals.
        """
        if not 0 < renew_every < ttl - margin or margin <= 0:
            raise ValueError(
                f"claim timing needs 0 < renew_every ({renew_every}) < ttl ({ttl}) - margin "
                f"({margin}) and a positive margin"
            )
        now = clock.now if clock is not None else mailers_clock.now
        holder = uuid.uuid4().hex
        patience = time.monotonic() + CONTENTION_PATIENCE_SECONDS
        fenced = not warehouse.capabilities.enforces_primary_keys
        while True:
            # The fence is read before the claim state: a version read after another
            # contender's commit comes with that contender's claim row in view.
            version = _fence_version(warehouse, now()) if fenced else None
            stamp = _naive_utc(now())
            latest = _latest(warehouse, context)
            if latest is not None and not latest.is_free(stamp):
                raise _claimed(context, latest)
            state = ClaimState(
                generation=(latest.generation if latest else 0) + 1,
                run_id=context.run_id,
                holder=holder,
                ttl=timedelta(seconds=ttl),
                acquired_at=stamp,
                last_beat_at=stamp,
                beats=0,
                released=False,
            )
            started = monotonic()
            try:
                if version is None:
                    _append(warehouse, context, state, 0, ClaimEvent.ACQUIRED, stamp)
                else:
                    _fenced_acquire(warehouse, context, state, stamp, version)
                break
            except (WarehouseError, _FenceMoved) as err:
                # Another contender's insert of this generation won the key (or moved the
                # fence). Its row may not be committed yet (DuckDB checks keys against
                # uncommitted rows too), so read again until it shows, and name it.
                if time.monotonic() >= patience:
                    if isinstance(err, _FenceMoved):
                        raise ClaimError(
                            f"could not claim send window {context.send_window} of "
                            f"{context.workspace}.{context.campaign}: other runs kept "
                            f"claiming windows for {CONTENTION_PATIENCE_SECONDS:.0f}s"
                        ) from None
                    raise
                time.sleep(CONTENTION_PAUSE_SECONDS)
        took_over = latest if latest is not None and not latest.released else None
        return cls(
            warehouse,
            context,
            state,
            now=now,
            monotonic=monotonic,
            renewed_at=started,
            renew_every=renew_every,
            margin=margin,
            took_over=took_over,
        )

    def ensure_held(self) -> None:
        """Raise :class:`ClaimLost` unless this run may still send; renew when due.

        Cheap enough for every provider call: the warehouse is asked only when a renewal
        is due (at most every ``renew_every`` seconds).
        """
        if self._released:
            raise ClaimLost(f"{self._describe()} was already released")
        at = self._monotonic()
        self._check_fresh(at)
        if at - self._renewed_at >= self._renew_every:
            self.renew()

    def renew(self) -> None:
        """Append a heartbeat, then make sure no other run took the window meanwhile."""
        started = self._monotonic()
        self._check_fresh(started)
        self._beats += 1
        self._append(ClaimEvent.RENEWED)
        latest = _latest(self.warehouse, self.context)
        if latest is None or latest.generation != self.generation:
            taker = f"run {latest.run_id}" if latest else "another run"
            raise ClaimLost(
                f"{self._describe()} was taken over by {taker}; this run stops before its "
                "next provider call"
            )
        self._renewed_at = started

    def release(self) -> None:
        """Give the window up (when still held); later calls do nothing."""
        if self._released:
            return
        self._released = True
        latest = _latest(self.warehouse, self.context)
        if latest is None or latest.generation != self.generation or latest.released:
            return
        self._beats += 1
        self._append(ClaimEvent.RELEASED)

    def __enter__(self) -> WindowClaim:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()

    def _check_fresh(self, at: float) -> None:
        elapsed = at - self._renewed_at
        if elapsed >= self.ttl - self._margin:
            raise ClaimLost(
                f"{self._describe()} was last renewed {elapsed:.0f}s ago (lease {self.ttl:.0f}s, "
                f"safety margin {self._margin:.0f}s): another run may take the window over, so "
                "this run stops before its next provider call"
            )

    def _append(self, event: ClaimEvent) -> None:
        stamp = _naive_utc(self._now())
        _append(self.warehouse, self.context, self._state, self._beats, event, stamp)

    def _describe(self) -> str:
        ctx = self.context
        return (
            f"the claim of run {ctx.run_id} on send window {ctx.send_window} of "
            f"{ctx.workspace}.{ctx.campaign} (generation {self.generation})"
        )


def _claimed(context: LedgerContext, holder: ClaimState) -> WindowClaimed:
    return WindowClaimed(
        f"send window {context.send_window} of {context.workspace}.{context.campaign} is "
        f"being sent by run {holder.run_id} (claimed {_iso(holder.acquired_at)}, last "
        f"heartbeat {_iso(holder.last_beat_at)}); its lease expires at "
        f"{_iso(holder.expires_at)} unless renewed. Wait for that run to finish; if it died, "
        "run this window again after that time.",
        holder_run_id=holder.run_id,
        expires_at=holder.expires_at,
    )


def _latest(warehouse: Warehouse, context: LedgerContext) -> ClaimState | None:
    claims = warehouse.relation(MAILERS_SCHEMA, CLAIMS_TABLE)
    rows = warehouse.query(
        f"""
        select generation, run_id, holder, ttl_seconds,
               min(recorded_at) as acquired_at, max(recorded_at) as last_beat_at,
               max(beat) as beats,
               max(case when event = '{ClaimEvent.RELEASED}' then 1 else 0 end) as released
        from {claims}
        where workspace = ? and campaign = ? and send_window = ?
        group by generation, run_id, holder, ttl_seconds
        order by generation desc
        limit 1
        """,
        [context.workspace, context.campaign, context.send_window],
    ).to_pylist()
    if not rows:
        return None
    row = rows[0]
    return ClaimState(
        generation=int(row["generation"]),
        run_id=row["run_id"],
        holder=row["holder"],
        ttl=timedelta(seconds=float(row["ttl_seconds"])),
        acquired_at=row["acquired_at"],
        last_beat_at=row["last_beat_at"],
        beats=int(row["beats"]),
        released=bool(row["released"]),
    )


def _append(
    warehouse: Warehouse,
    context: LedgerContext,
    claim: ClaimState,
    beat: int,
    event: ClaimEvent,
    stamp: datetime,
) -> None:
    """One row of ``claim``, as a single-row insert: the key check is the compare-and-set."""
    claims = warehouse.relation(MAILERS_SCHEMA, CLAIMS_TABLE)
    values: list[Any] = [
        context.workspace,
        context.campaign,
        context.send_window,
        claim.generation,
        beat,
        str(event),
        claim.run_id,
        claim.holder,
        claim.ttl.total_seconds(),
        stamp,
    ]
    columns = ", ".join(CLAIMS_SCHEMA.names)
    marks = ", ".join("?" for _ in values)
    warehouse.execute(f"insert into {claims} ({columns}) values ({marks})", values)


def _fence_version(warehouse: Warehouse, moment: datetime) -> int:
    """The fence's version now (the highest of its rows), creating its row on first use.

    Two first uses may both insert a row at version 0 (neither insert sees the other's).
    :func:`_fenced_acquire` copes: it compares against the highest version and moves
    every row, so a row left behind can never be won on its own.
    """
    fence = warehouse.relation(MAILERS_SCHEMA, FENCE_TABLE)
    for _ in range(2):
        rows = warehouse.query(
            f"select max(version) as version from {fence} where fence = ?", [FENCE_ROW]
        ).to_pylist()
        if rows and rows[0]["version"] is not None:
            return int(rows[0]["version"])
        warehouse.execute(
            f"insert into {fence} (fence, version, holder, updated_at) "
            f"select ?, 0, '', ? where not exists (select 1 from {fence} where fence = ?)",
            [FENCE_ROW, _naive_utc(moment), FENCE_ROW],
        )
    raise WarehouseError(f"{fence} has no row {FENCE_ROW!r} right after inserting it")


def _fenced_acquire(
    warehouse: Warehouse, context: LedgerContext, state: ClaimState, stamp: datetime, version: int
) -> None:
    """Bump the fence from ``version`` and insert the acquisition, or raise _FenceMoved.

    The update compares ``version`` with the *highest* fence version and moves every fence
    row, not only those at ``version``. Two first uses can leave two rows; if an update
    matched on the row's own version, a contender whose snapshot missed the other row
    would bump only its own, and a later contender holding the same stale version would
    then find the row left behind still at it and win a second time. Moving every row
    makes two contenders write the same rows, which the engine serializes.
    """
    fence = warehouse.relation(MAILERS_SCHEMA, FENCE_TABLE)
    with warehouse.transaction():
        moved = warehouse.execute(
            f"update {fence} set version = version + 1, holder = ?, updated_at = ? "
            f"where fence = ? and (select max(version) from {fence} where fence = ?) = ?",
            [state.holder, stamp, FENCE_ROW, FENCE_ROW, version],
        )
        if moved == 0:
            raise _FenceMoved  # rolls the transaction back; the caller reads again
        _append(warehouse, context, state, 0, ClaimEvent.ACQUIRED, stamp)


def _naive_utc(moment: datetime) -> datetime:
    """UTC without tzinfo, as warehouse ``TIMESTAMP`` columns hold it."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
