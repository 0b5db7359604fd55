"""Operator suppression requests and the entries behind an address.

:func:`request_add` and :func:`request_remove` write control records (so they work while a
send holds the warehouse); :func:`entries` reads one address's history from the warehouse:
each entry with the removal that lifted it, if any, in one set-based query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailers.addresses import is_valid, normalize
from mailers.control import ControlJournal, ControlKind, ControlRecord
from mailers.suppression import (
    SUPPRESSIONS_TABLE,
    SuppressionAction,
    SuppressionError,
    SuppressionScope,
    SuppressionSource,
    SuppressionTarget,
    target_of,
)
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

SUPPRESSION_KINDS = (ControlKind.SUPPRESSION_ADD, ControlKind.SUPPRESSION_REMOVE)


def suppression_address(address: str) -> str:
    """``address`` as the list stores it (trimmed, lower-cased); raise if it is not valid."""
    normalized = normalize(address)
    if not normalized or not is_valid(normalized):
        raise SuppressionError(f"{address!r} is not a valid email address")
    return normalized.lower()


@dataclass(frozen=True)
class Lift:
    """The removal that lifted an entry."""

    removal_id: str
    actor: str | None
    reason: str | None
    lifted_at: datetime


@dataclass(frozen=True)
class Entry:
    """One suppression entry of an address, with where it came from and whether it holds."""

    suppression_id: str
    address: str
    target: SuppressionTarget
    source: SuppressionSource
    since: datetime
    reason: str | None
    actor: str | None
    event_id: str | None
    provider_account: str | None
    origin: str | None
    lift: Lift | None = None
    pending: bool = False
    """A control record not loaded into the warehouse yet (a send holds it)."""

    @property
    def active(self) -> bool:
        return self.lift is None

    def provenance(self) -> str:
        """Who or what added it: ``event E via account A``, ``file F``, ``actor``."""
        if self.event_id:
            return f"event {self.event_id} via {self.provider_account or 'unknown account'}"
        if self.origin and not self.origin.startswith("control:"):
            return f"{self.origin} by {self.actor or 'unknown'}"
        return f"{self.actor or 'unknown'}" + (" (pending control record)" if self.pending else "")


def entries(warehouse: Warehouse, address: str) -> list[Entry]:
    """Every entry of ``address`` (stored form), oldest first, each with the first removal
    that lifted it."""
    table = warehouse.relation(MAILERS_SCHEMA, SUPPRESSIONS_TABLE)
    rows = warehouse.query(
        f"""
        with history as (
            select * from {table} where address = ?
        ),
        adds as (
            select * from history
            where coalesce(action, '{SuppressionAction.ADD}') = '{SuppressionAction.ADD}'
        ),
        lifts as (
            select a.suppression_id, r.suppression_id as removal_id, r.actor as removed_by,
                r.reason as removal_reason, r.created_at as lifted_at,
                row_number() over (
                    partition by a.suppression_id order by r.created_at, r.suppression_id
                ) as lift_rank
            from adds as a
            join history as r
              on r.action = '{SuppressionAction.REMOVE}' and r.scope = a.scope
             and coalesce(r.workspace, '') = coalesce(a.workspace, '')
             and coalesce(r.stream, '') = coalesce(a.stream, '')
             and r.created_at > a.created_at
             and (a.source <> '{SuppressionSource.COMPLAINT}'
                  or coalesce(r.override_complaint, false))
        )
        select adds.*, lifts.removal_id, lifts.removed_by, lifts.removal_reason, lifts.lifted_at
        from adds left join lifts
          on lifts.suppression_id = adds.suppression_id and lifts.lift_rank = 1
        order by adds.created_at, adds.suppression_id
        """,
        [address],
    ).to_pylist()
    return [_entry(row) for row in rows]


def _entry(row: dict[str, Any]) -> Entry:
    lift = None
    if row["removal_id"] is not None:
        lift = Lift(row["removal_id"], row["removed_by"], row["removal_reason"], row["lifted_at"])
    return Entry(
        suppression_id=row["suppression_id"],
        address=row["address"],
        target=SuppressionTarget(SuppressionScope(row["scope"]), row["workspace"], row["stream"]),
        source=SuppressionSource(row["source"]),
        since=row["created_at"],
        reason=row["reason"],
        actor=row["actor"],
        event_id=row["event_id"],
        provider_account=row["provider_account"],
        origin=row["origin"],
        lift=lift,
    )


def pending_entries(journal: ControlJournal, address: str) -> list[Entry]:
    """Adds of ``address`` still waiting in the control journal (not in the warehouse yet)."""
    return [
        Entry(
            suppression_id=r.control_id,
            address=address,
            target=target_of(r),
            source=SuppressionSource.MANUAL,
            since=r.recorded_at,
            reason=r.reason,
            actor=r.actor,
            event_id=None,
            provider_account=None,
            origin=f"control:{r.control_id}",
            pending=True,
        )
        for r in journal.pending()
        if r.kind is ControlKind.SUPPRESSION_ADD and r.body.get("address") == address
    ]


def pending_removals(journal: ControlJournal, address: str) -> list[ControlRecord]:
    """Removals of ``address`` waiting in the control journal."""
    return [
        r
        for r in journal.pending()
        if r.kind is ControlKind.SUPPRESSION_REMOVE and r.body.get("address") == address
    ]


def _needs_reason(what: str, reason: str) -> None:
    if not reason.strip():
        raise SuppressionError(f"{what} needs a reason (--reason)")


def request_add(
    journal: ControlJournal,
    address: str,
    target: SuppressionTarget,
    *,
    reason: str,
    actor: str,
    config_hash: str,
) -> ControlRecord:
    """Record a manual suppression of ``address`` for ``target`` as a control record."""
    stored = suppression_address(address)
    _needs_reason(f"suppressing {stored} for {target}", reason)
    record = ControlRecord(
        kind=ControlKind.SUPPRESSION_ADD,
        workspace=target.workspace or "",
        actor=actor,
        reason=reason,
        body={"address": stored, "scope": target.key, "config_hash": config_hash},
    )
    journal.append(record)
    return record


def check_removal(
    known: Sequence[Entry], address: str, target: SuppressionTarget, *, override_complaint: bool
) -> list[Entry]:
    """The active entries of exactly ``target`` a removal would lift; raise when there are
    none, or when one is a complaint and ``override_complaint`` is not given."""
    active = [e for e in known if e.active]
    matching = [e for e in active if e.target == target]
    if not matching:
        elsewhere = ", ".join(sorted({e.target.key for e in active})) or "none"
        raise SuppressionError(
            f"{address} has no active suppression at scope {target} "
            f"(its active scopes: {elsewhere}); nothing to remove"
        )
    complaints = [e for e in matching if e.source is SuppressionSource.COMPLAINT]
    if complaints and not override_complaint:
        first = complaints[0]
        raise SuppressionError(
            f"{address} is suppressed at {target} by a complaint (entry {first.suppression_id}, "
            f"{first.provenance()}, since {first.since:%Y-%m-%d %H:%M:%S} UTC); removing it "
            "needs an explicit --override-complaint"
        )
    return matching


def request_remove(
    journal: ControlJournal,
    address: str,
    target: SuppressionTarget,
    *,
    reason: str,
    actor: str,
    config_hash: str,
    override_complaint: bool = False,
) -> ControlRecord:
    """Record a removal of ``address``'s entries at ``target`` as a control record.

    Check first with :func:`check_removal` when the warehouse can be read; unchecked, the
    removal still never lifts a complaint entry without ``override_complaint``.
    """
    stored = suppression_address(address)
    _needs_reason(f"removing the suppression of {stored} at {target}", reason)
    record = ControlRecord(
        kind=ControlKind.SUPPRESSION_REMOVE,
        workspace=target.workspace or "",
        actor=actor,
        reason=reason,
        body={
            "address": stored,
            "scope": target.key,
            "override_complaint": override_complaint,
            "config_hash": config_hash,
        },
    )
    journal.append(record)
    return record
