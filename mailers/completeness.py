"""Completeness of provider feedback: every handed-over message should reach a final event.

A message whose latest ledger status is ``accepted`` (or ``unknown``: it may have gone out)
should get a final event (:data:`FINAL_EVENT_TYPES`) within ``completeness.deadline_hours``
of being handed over. dbt's ``fct_message_completeness`` counts, per provider account and
day, the messages with one, those still within the deadline (pending) and those past it
(overdue); it reads the deadline and the evaluation time from the vars
:func:`dbt_vars` returns, so dbt and Python agree on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mailers.clock import utcnow
from mailers.warehouse import Warehouse

FINAL_EVENT_TYPES = ("delivered", "bounced", "rejected", "failed", "complained")
"""Event types after which the provider reports nothing more about delivery."""

DEADLINE_VAR = "completeness_deadline_hours"
NOW_VAR = "completeness_now"


class CompletenessConfig(BaseModel):
    """``completeness:`` in ``mailers.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deadline_hours: float = Field(
        default=72,
        gt=0,
        description="How long after hand-over a message may wait for its final event before "
        "it counts as overdue (providers retry deferred mail for up to about three days).",
    )
    backfill_after_hours: float = Field(
        default=6,
        gt=0,
        description="How long after hand-over a message without a final event has its "
        "provider's events API asked for its window (mailers.backfill).",
    )
    backfill_max_age_hours: float = Field(
        default=168,
        gt=0,
        description="Messages handed over longer ago than this are not backfilled any more "
        "(providers keep events for days, not forever).",
    )


def dbt_vars(config: CompletenessConfig, now: datetime | None = None) -> dict[str, Any]:
    """The dbt vars of the completeness model: the deadline, and ``now`` (naive UTC, the
    Mailers clock's by default) so a build is evaluated at one instant."""
    moment = now or utcnow()
    return {DEADLINE_VAR: config.deadline_hours, NOW_VAR: moment.isoformat(sep=" ")}


MART_SCHEMA = "marts"
MART = "fct_message_completeness"


@dataclass(frozen=True)
class OverdueDay:
    """Messages of one provider account and hand-over day past the deadline without a
    final event."""

    day: date
    workspace: str | None
    provider: str | None
    provider_account: str | None
    overdue: int
    first_sent_at: datetime
    last_sent_at: datetime


@dataclass(frozen=True)
class Completeness:
    """The completeness figure over every day of the mart."""

    messages: int
    with_final_event: int
    settled_unknown: int
    pending: int
    overdue: tuple[OverdueDay, ...]

    @property
    def overdue_count(self) -> int:
        return sum(day.overdue for day in self.overdue)

    def describe(self) -> str:
        """e.g. ``99.8% of 1,234 accepted messages have a final event; 2 overdue``."""
        share = f"{100 * self.with_final_event / self.messages:.1f}%" if self.messages else "-"
        return (
            f"{share} of {self.messages:,} accepted messages have a final event; "
            f"{self.overdue_count:,} overdue, {self.pending:,} pending; "
            f"{self.settled_unknown:,} unknown outcomes settled by an event"
        )


def read_completeness(warehouse: Warehouse) -> Completeness:
    """The figure and the overdue account-days, read from ``marts.fct_message_completeness``
    (built by dbt; never recomputed here)."""
    mart = warehouse.relation(MART_SCHEMA, MART)
    totals = warehouse.query(
        f"""
        select coalesce(sum(messages), 0) as messages,
            coalesce(sum(with_final_event), 0) as with_final_event,
            coalesce(sum(settled_unknown), 0) as settled_unknown,
            coalesce(sum(pending), 0) as pending
        from {mart}
        """
    ).to_pylist()[0]
    overdue = warehouse.query(
        f"""
        select day, workspace, provider, provider_account, overdue,
            first_overdue_sent_at, last_overdue_sent_at
        from {mart} where overdue > 0
        order by provider_account, day
        """
    ).to_pylist()
    return Completeness(
        messages=int(totals["messages"]),
        with_final_event=int(totals["with_final_event"]),
        settled_unknown=int(totals["settled_unknown"]),
        pending=int(totals["pending"]),
        overdue=tuple(
            OverdueDay(
                day=row["day"],
                workspace=row["workspace"],
                provider=row["provider"],
                provider_account=row["provider_account"],
                overdue=int(row["overdue"]),
                first_sent_at=row["first_overdue_sent_at"],
                last_sent_at=row["last_overdue_sent_at"],
            )
            for row in overdue
        ),
    )
