"""The replay guard every receiver process shares: tokens seen, in the landing zone.

Provider verifiers call ``guard.first_use(token, ttl_seconds=...)``. The service hands
each request a :class:`PendingTokens`, which answers from the shared store and only
collects the tokens; the lander records them (:meth:`SharedReplayStore.commit`) after
the request's payload is durable. A request that failed to land leaves no token behind,
so the provider's retry of it is accepted.

The store is a SQLite database in WAL mode (``<landing>/.replay-guard.sqlite``), which
every process of one host sees, and which survives a restart. Within a process, a token
whose request is still landing is refused to an identical concurrent request. Two
processes racing on one token may both land it: ingestion drops the duplicate by event id.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from mailers.clock import epoch

REPLAY_DB = ".replay-guard.sqlite"
_PRUNE_EVERY = 1000

Token = tuple[str, float]
"""(token, ttl seconds)."""

Reservation = Literal["reserved", "landed", "landing"]


class SharedReplayStore:
    """Tokens accepted (durably landed) by any receiver process, until they expire."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._commits = 0
        with self._connection() as db:
            db.execute("create table if not exists seen (token text primary key, expires_at real)")

    @classmethod
    def in_landing_zone(cls, landing_dir: Path) -> SharedReplayStore:
        return cls(landing_dir / REPLAY_DB)

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("pragma journal_mode=wal")
            # A token lost with the last transaction before a power cut only weakens the
            # guard: the landed duplicate is dropped by event id at ingestion.
            db.execute("pragma synchronous=normal")
            self._local.db = db
        return db

    def reserve(self, token: str) -> Reservation:
        """``reserved`` for a new token (now landing here); ``landed`` when a request with
        it was durably landed before (and has not expired); ``landing`` while an identical
        request of this process is landing."""
        with self._lock:
            if token in self._in_flight:
                return "landing"
            row = (
                self._connection()
                .execute("select expires_at from seen where token = ?", (token,))
                .fetchone()
            )
            if row is not None and row[0] > epoch():
                return "landed"
            self._in_flight.add(token)
            return "reserved"

    def release(self, tokens: Iterable[Token]) -> None:
        """Forget reservations whose request did not land."""
        with self._lock:
            self._in_flight.difference_update(t for t, _ in tokens)

    def commit(self, tokens: Iterable[Token]) -> None:
        """Record tokens whose request is durably landed (one transaction)."""
        moment = epoch()
        rows = [(token, moment + ttl) for token, ttl in tokens]
        if not rows:
            return
        db = self._connection()
        try:
            db.execute("begin immediate")
            db.executemany(
                "insert into seen values (?, ?) on conflict (token) do update "
                "set expires_at = max(expires_at, excluded.expires_at)",
                rows,
            )
            self._commits += 1
            if self._commits % _PRUNE_EVERY == 0:
                db.execute("delete from seen where expires_at <= ?", (moment,))
            db.execute("commit")
        except BaseException:
            if db.in_transaction:
                db.execute("rollback")
            raise
        finally:
            self.release(rows)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class PendingTokens:
    """The :class:`~mailers.webhooks.ReplayGuard` one request is verified with."""

    def __init__(self, store: SharedReplayStore) -> None:
        self.store = store
        self.tokens: list[Token] = []
        self.refused: Reservation | None = None
        """Why the last refused token was refused: ``landed`` before, or ``landing`` now."""

    def first_use(self, token: str, *, ttl_seconds: float) -> bool:
        if any(token == t for t, _ in self.tokens):
            return False
        reservation = self.store.reserve(token)
        if reservation != "reserved":
            self.refused = reservation
            return False
        self.tokens.append((token, ttl_seconds))
        return True

    def release(self) -> None:
        """The request will not land: free its reservations."""
        self.store.release(self.tokens)
        self.tokens = []
