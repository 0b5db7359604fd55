"""How much of each daily cap is left: usage counted from the ledger, reserved as a run sends.

A message *uses* a day of a cap when its latest ledger row of that (local) day says it was
handed over: ``dispatching`` (in flight, or in doubt after a crash), ``accepted``,
``unknown`` or ``rejected``. That is counted across all campaigns and runs of the workspace
in one grouped query per time zone and day (:func:`usage_sql`), bounded by that day's rows.

:class:`UsageBook` keeps those counts for a workspace in this process and adds every
reservation a run makes before its provider call, so two sends of one process (two
campaigns at once) see each other's reservations at once; a send re-reads the ledger when
it starts. Across processes DuckDB's single writer serializes sends; a warehouse with many
concurrent writers would need the reservation itself to be a compare-and-set (as the
window claim is), which this module leaves to that engine's adapter.

:class:`Allowance` is one run's view: ``take`` reserves one message against every cap it
meets or names the cap that is full (:class:`Refusal`), ``release`` hands a reservation
back (the message did not leave), ``settle`` marks it recorded in the ledger.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import ClassVar
from zoneinfo import ZoneInfo

from mailers import clock
from mailers.caps import Cap, Scope, ScopeKind, Usage, day_bounds
from mailers.ledger import LedgerStatus, latest_rows_sql, sql_text
from mailers.warehouse import Warehouse

HANDED_OVER: tuple[LedgerStatus, ...] = (
    LedgerStatus.DISPATCHING,
    LedgerStatus.ACCEPTED,
    LedgerStatus.UNKNOWN,
    LedgerStatus.REJECTED,
)
"""Latest statuses of a day that mean the message used that day's capacity."""

DayKey = tuple[str, date]
"""A time zone and one local day of it."""


def usage_sql(
    warehouse: Warehouse,
    workspace: str,
    timezone: str,
    day: date,
    mailbox_providers: Mapping[str, str],
) -> str:
    """Messages handed over on ``day`` (in ``timezone``), grouped by what caps match on."""
    start, end = day_bounds(timezone, day)
    d = warehouse.dialect
    domain = f"lower({d.regexp_group('recipient', '@([^@]+)$')})"
    whens = " ".join(
        f"when {sql_text(name)} then {sql_text(provider)}"
        for name, provider in sorted(mailbox_providers.items())
    )
    provider = f"case {domain} {whens} end" if whens else "cast(null as varchar)"
    statuses = ", ".join(sql_text(s) for s in HANDED_OVER)
    where = (
        f"workspace = {sql_text(workspace)} "
        f"and recorded_at >= cast({sql_text(start.isoformat(sep=' '))} as timestamp) "
        f"and recorded_at < cast({sql_text(end.isoformat(sep=' '))} as timestamp)"
    )
    return f"""
        select stream, campaign, identity, sending_domain, provider_account,
            {provider} as mailbox_provider, count(*) as n
        from ({latest_rows_sql(warehouse, where)}) as latest
        where status in ({statuses})
        group by 1, 2, 3, 4, 5, 6"""


@dataclass
class _Day:
    """One time zone's day: usage by combination, and by scope as far as asked."""

    combos: Counter[Usage] = field(default_factory=Counter)
    inflight: Counter[Usage] = field(default_factory=Counter)
    by_scope: dict[Scope, int] = field(default_factory=dict)

    def used(self, scope: Scope) -> int:
        if scope not in self.by_scope:
            self.by_scope[scope] = sum(n for u, n in self.combos.items() if scope.matches(u))
        return self.by_scope[scope]

    def add(self, usage: Usage, n: int) -> None:
        self.combos[usage] += n
        for scope in self.by_scope:
            if scope.matches(usage):
                self.by_scope[scope] += n


class UsageBook:
    """Daily usage of one workspace in one warehouse, shared by the sends of this process."""

    _books: ClassVar[dict[tuple[str, str], UsageBook]] = {}
    _books_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, workspace: str, mailbox_providers: Mapping[str, str]) -> None:
        self.workspace = workspace
        self.mailbox_providers = dict(mailbox_providers)
        self.lock = threading.RLock()
        self._days: dict[DayKey, _Day] = {}

    @classmethod
    def of(
        cls, warehouse: Warehouse, workspace: str, mailbox_providers: Mapping[str, str]
    ) -> UsageBook:
        """The book of ``workspace`` in ``warehouse`` (one per database in this process)."""
        path = getattr(warehouse, "path", None)
        where = str(path) if path and path != ":memory:" else f"object-{id(warehouse)}"
        with cls._books_lock:
            book = cls._books.get((where, workspace))
            if book is None or book.mailbox_providers != dict(mailbox_providers):
                book = cls._books[(where, workspace)] = UsageBook(workspace, mailbox_providers)
            return book

    def refresh(self, warehouse: Warehouse, days: Iterable[DayKey]) -> None:
        """Re-read ``days`` from the ledger, keeping reservations not yet recorded."""
        with self.lock:
            for key in set(days):
                self._load(warehouse, key)

    def day(self, warehouse: Warehouse, key: DayKey) -> _Day:
        """The usage of one day, read from the ledger the first time it is asked for."""
        with self.lock:
            found = self._days.get(key)
            return found if found is not None else self._load(warehouse, key)

    def _load(self, warehouse: Warehouse, key: DayKey) -> _Day:
        timezone, day = key
        rows = warehouse.query(
            usage_sql(warehouse, self.workspace, timezone, day, self.mailbox_providers)
        ).to_pylist()
        previous = self._days.get(key)
        fresh = _Day()
        for row in rows:
            n = int(row.pop("n"))
            fresh.combos[Usage(**row)] += n
        if previous is not None:
            # Reserved but not yet recorded: the ledger cannot have counted them.
            for usage, n in previous.inflight.items():
                fresh.combos[usage] += n
            fresh.inflight = previous.inflight
        self._days[key] = fresh
        return fresh


@dataclass(frozen=True)
class Refusal:
    """Why a message may not go now: the cap that is full, and when it has room again."""

    cap: Cap
    day: date
    used: int
    limit: int
    eligible_at: datetime
    """Naive UTC: the start of the first later day on which the cap has room."""

    @property
    def reason(self) -> str:
        kind = "warm-up curve" if self.cap.curve is not None else "daily cap"
        eligible = self.eligible_at.replace(tzinfo=ZoneInfo("UTC")).astimezone(
            ZoneInfo(self.cap.timezone)
        )
        return (
            f"{kind} of {self.cap.scope} reached ({self.cap.source}: {self.used} of "
            f"{self.limit} on {self.day} {self.cap.timezone}); eligible from "
            f"{eligible:%Y-%m-%d %H:%M} {self.cap.timezone}"
        )

    @property
    def account_only(self) -> bool:
        """Whether another provider account may take the message instead."""
        return self.cap.scope.kind is ScopeKind.ACCOUNT


@dataclass(frozen=True)
class Reservation:
    """One message's claim on the caps it counts against, for one day per time zone."""

    usage: Usage
    days: tuple[DayKey, ...]


class Allowance:
    """One send run's caps and their usage."""

    def __init__(self, warehouse: Warehouse, book: UsageBook, caps: Sequence[Cap]) -> None:
        self.warehouse = warehouse
        self.book = book
        self.caps = list(caps)
        self.book.refresh(warehouse, self._today_keys())

    @property
    def limits_anything(self) -> bool:
        return bool(self.caps)

    def _today_keys(self) -> list[DayKey]:
        now = clock.now()
        return [(cap.timezone, cap.local_day(now)) for cap in self.caps]

    def take(self, usage: Usage) -> Reservation | Refusal:
        """Reserve one message against every cap it counts against, or say which is full.

        Caps of scopes other than provider accounts are checked first, so a refusal from
        an account cap means only that account is full.
        """
        now = clock.now()
        matching = [c for c in self.caps if c.scope.matches(usage)]
        matching.sort(key=lambda c: c.scope.kind is ScopeKind.ACCOUNT)
        with self.book.lock:
            keys: list[DayKey] = []
            for cap in matching:
                day = cap.local_day(now)
                key = (cap.timezone, day)
                limit = cap.limit_on(day)
                used = self.book.day(self.warehouse, key).used(cap.scope)
                if limit is not None and used >= limit:
                    return self._refusal(cap, day, used, limit)
                keys.append(key)
            unique = tuple(dict.fromkeys(keys))
            for key in unique:
                entry = self.book.day(self.warehouse, key)
                entry.add(usage, 1)
                entry.inflight[usage] += 1
            return Reservation(usage, unique)

    def room(self, usage: Usage, kind: ScopeKind) -> int | Refusal | None:
        """How many more messages like ``usage`` the caps of scope ``kind`` allow today.

        ``None`` when none of them limits; the :class:`Refusal` of the first that is full.
        Reserves nothing (a mailbox pool compares its mailboxes with it before ``take``).
        """
        now = clock.now()
        left: int | None = None
        with self.book.lock:
            for cap in self.caps:
                if cap.scope.kind is not kind or not cap.scope.matches(usage):
                    continue
                day = cap.local_day(now)
                limit = cap.limit_on(day)
                if limit is None:
                    continue
                used = self.book.day(self.warehouse, (cap.timezone, day)).used(cap.scope)
                if used >= limit:
                    return self._refusal(cap, day, used, limit)
                left = limit - used if left is None else min(left, limit - used)
        return left

    def _refusal(self, cap: Cap, day: date, used: int, limit: int) -> Refusal:
        later = cap.next_day_with_room(day)
        start = datetime.combine(later, time(), ZoneInfo(cap.timezone))
        eligible = start.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)
        return Refusal(cap, day, used, limit, eligible)

    def release(self, reservation: Reservation) -> None:
        """The reserved message did not leave: give its capacity back."""
        with self.book.lock:
            for key in reservation.days:
                entry = self.book.day(self.warehouse, key)
                entry.add(reservation.usage, -1)
                entry.inflight[reservation.usage] -= 1

    def settle(self, reservation: Reservation) -> None:
        """The reserved message's outcome is in the ledger, which now counts it."""
        with self.book.lock:
            for key in reservation.days:
                self.book.day(self.warehouse, key).inflight[reservation.usage] -= 1

    def standing(self, moment: datetime | None = None) -> list[tuple[Cap, date, int, int | None]]:
        """Every cap with its day, used count and limit at ``moment`` (default now)."""
        now = moment or clock.now()
        out = []
        with self.book.lock:
            for cap in self.caps:
                day = cap.local_day(now)
                used = self.book.day(self.warehouse, (cap.timezone, day)).used(cap.scope)
                out.append((cap, day, used, cap.limit_on(day)))
        return out
