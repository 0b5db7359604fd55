"""Settling messages in doubt against the records that can prove what happened to them.

A message is ``unknown`` when it was handed to a provider and no usable answer came back
(a timeout, a dropped connection, a 500, or a run killed mid-call). It is never re-sent
blindly. :func:`reconcile` settles each one, in this order:

1. **Landed events**: any canonical event for the message key (delivered, bounced, opened,
   ...) proves the provider took it → ``accepted`` with the provider's message id (a
   ``rejected`` event → ``rejected``).
2. **The provider's own records**, for accounts whose adapter offers a
   :class:`MessageLookup` (e.g. Postmark's outbound message search, Mailgun's events API):
   found → ``accepted`` with its id; provably absent once the account's
   ``reconcile_absent_after_seconds`` have passed since the hand-over → ``not_sent``, so
   the next run of the window sends it (exactly once: it never reached the provider).
3. Whatever neither can settle stays ``unknown`` and is reported by account.

Rows are appended (the ledger is append-only) by the reconciling run, reason
``reconciled: ...``; the whole pass is set-based per window and bounded by the number of
messages in doubt, never by the size of the ledger's history.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from mailers.audit import AuditAction, AuditRecord
from mailers.clock import utcnow
from mailers.config import CampaignRef
from mailers.current_events import current_events_sql
from mailers.events import EventType
from mailers.ledger import (
    LEDGER_TABLE,
    LedgerContext,
    LedgerEntry,
    LedgerStatus,
    LedgerWriter,
    attributed_events_sql,
    latest_rows_sql,
    sql_text,
)
from mailers.warehouse import MAILERS_SCHEMA, Warehouse


@dataclass(frozen=True, slots=True)
class InDoubt:
    """One message whose latest ledger status is ``unknown``."""

    message_key: str
    recipient: str | None
    provider_account: str | None
    dispatched_at: datetime | None
    """When it was last handed over (naive UTC), from its latest ``dispatching`` row."""
    workspace: str
    stream: str
    campaign: str
    send_window: str
    identity: str | None = None
    sending_domain: str | None = None
    provider: str | None = None
    event_outcome: LedgerStatus | None = None
    """``accepted`` (or ``rejected``) when a landed provider event already proves it."""
    event_message_id: str | None = None


@dataclass(frozen=True, slots=True)
class Sighting:
    """What a provider's records say about one message: accepted, or no trace of it."""

    message_key: str
    accepted: bool
    provider_message_id: str | None = None


class MessageLookup(Protocol):
    """A provider account's searchable record of the messages it accepted."""

    absent_after: timedelta
    """How long after a hand-over "no record" proves the provider never accepted it."""

    def lookup(self, messages: Sequence[InDoubt]) -> list[Sighting]:
        """What the provider's records say of ``messages``; leave out any it cannot tell.

        Raises on a failure of the lookup itself (the messages stay ``unknown``).
        """
        ...


@dataclass
class ReconcileReport:
    """What one reconciliation pass settled, and what it could not."""

    from_events: int = 0
    accepted: int = 0
    never_handed_over: int = 0
    still_unknown: Counter[str] = field(default_factory=Counter)
    lookup_errors: dict[str, str] = field(default_factory=dict)

    @property
    def settled(self) -> int:
        return self.from_events + self.accepted + self.never_handed_over

    def as_counts(self) -> dict[str, int]:
        """Counts for the audit record and run metadata."""
        return {
            "reconciled_from_events": self.from_events,
            "reconciled_accepted": self.accepted,
            "reconciled_not_sent": self.never_handed_over,
            "still_unknown": sum(self.still_unknown.values()),
        }

    def audit_record(
        self,
        *,
        run_id: str,
        actor: str,
        config_hash: str,
        campaign: CampaignRef,
        send_window: str | None = None,
    ) -> AuditRecord:
        """The receipt of a reconciliation pass over one campaign (one or all windows)."""
        return AuditRecord(
            run_id=run_id,
            actor=actor,
            action=AuditAction.RECONCILE,
            config_hash=config_hash,
            counts=self.as_counts(),
            detail={
                "still_unknown_by_account": dict(self.still_unknown),
                "lookup_errors": self.lookup_errors,
            },
            workspace=campaign.workspace,
            stream=str(campaign.config.stream),
            campaign=campaign.name,
            send_window=send_window,
        )


def in_doubt(warehouse: Warehouse, where: str = "true") -> list[InDoubt]:
    """Messages in doubt matching ``where`` (on ledger columns), with what events proved.

    A landed event about the message (:func:`~mailers.ledger.attributed_events_sql`) makes
    its ``event_outcome`` ``accepted``, or ``rejected`` when any of its events is a refusal
    (never read as acceptance).
    """
    ledger = warehouse.relation(MAILERS_SCHEMA, LEDGER_TABLE)
    unknown = sql_text(LedgerStatus.UNKNOWN)
    # Only the events that can be about these messages: their key, or an id their rows carry.
    candidates = current_events_sql(
        warehouse,
        f"""message_key in (select message_key from unknown)
           or (message_key is null and provider_message_id in (
                select provider_message_id from {ledger}
                where message_key in (select message_key from unknown)
           ))""",
    )
    table = warehouse.query(
        f"""
        with unknown as (
            select * from ({latest_rows_sql(warehouse, where)}) as latest
            where status = {unknown}
        ),
        dispatched as (
            select message_key, max(recorded_at) as dispatched_at
            from {ledger}
            where status = {sql_text(LedgerStatus.DISPATCHING)}
              and message_key in (select message_key from unknown)
            group by message_key
        ),
        seen as (
            select message_key,
                min(case when event_type = {sql_text(EventType.REJECTED)} then 0 else 1 end)
                    as rank,
                max(provider_message_id) as event_message_id
            from ({attributed_events_sql(warehouse, candidates)}) as attributed
            where message_key in (select message_key from unknown)
              and event_type <> {sql_text(EventType.UNKNOWN)}
            group by message_key
        )
        select u.message_key, u.recipient, u.provider_account, d.dispatched_at,
            u.workspace, u.stream, u.campaign, u.send_window, u.identity, u.sending_domain,
            u.provider, s.rank as seen_rank, s.event_message_id
        from unknown as u
        left join dispatched as d on d.message_key = u.message_key
        left join seen as s on s.message_key = u.message_key
        order by u.message_key
        """
    )
    found = []
    for row in table.to_pylist():
        rank = row.pop("seen_rank")
        outcome = {0: LedgerStatus.REJECTED, 1: LedgerStatus.ACCEPTED}.get(rank)
        found.append(InDoubt(**row, event_outcome=outcome))
    return found


def reconcile(
    warehouse: Warehouse,
    lookups: Mapping[str, MessageLookup],
    *,
    run_id: str,
    where: str = "true",
) -> ReconcileReport:
    """Settle the messages in doubt matching ``where``; see the module docstring."""
    report = ReconcileReport()
    settled: dict[tuple[str, str, str, str], list[LedgerEntry]] = defaultdict(list)
    asking: dict[str, list[InDoubt]] = defaultdict(list)
    for message in in_doubt(warehouse, where):
        if message.event_outcome is not None:
            settled[_window(message)].append(
                _entry(
                    message,
                    message.event_outcome,
                    "reconciled: a provider event for this message landed",
                    message.event_message_id,
                )
            )
            report.from_events += 1
        elif message.provider_account is not None and message.provider_account in lookups:
            asking[message.provider_account].append(message)
        else:
            report.still_unknown[message.provider_account or "?"] += 1
    now = utcnow()
    for account, messages in asking.items():
        lookup = lookups[account]
        try:
            sightings = {s.message_key: s for s in lookup.lookup(messages)}
        except Exception as err:  # any failure of the lookup: those stay in doubt, reported
            report.lookup_errors[account] = f"{type(err).__name__}: {err}"
            report.still_unknown[account] += len(messages)
            continue
        for message in messages:
            sighting = sightings.get(message.message_key)
            if sighting is not None and sighting.accepted:
                entry = _entry(
                    message,
                    LedgerStatus.ACCEPTED,
                    f"reconciled: {account}'s records show it accepted",
                    sighting.provider_message_id,
                )
                report.accepted += 1
            elif sighting is not None and _long_enough(message, lookup.absent_after, now):
                entry = _entry(
                    message,
                    LedgerStatus.NOT_SENT,
                    f"reconciled: {account} has no record of it; it was never handed over",
                )
                report.never_handed_over += 1
            else:
                report.still_unknown[account] += 1
                continue
            settled[_window(message)].append(entry)
    for (workspace, stream, campaign, window), entries in settled.items():
        context = LedgerContext(workspace, stream, campaign, window, run_id)
        LedgerWriter(warehouse, context).record(entries)
    return report


def window_filter(workspace: str, campaign: str, send_window: str | None = None) -> str:
    """A ``where`` on ledger columns for one campaign (and optionally one window)."""
    where = f"workspace = {sql_text(workspace)} and campaign = {sql_text(campaign)}"
    if send_window is not None:
        where += f" and send_window = {sql_text(send_window)}"
    return where


def _long_enough(message: InDoubt, absent_after: timedelta, now: datetime) -> bool:
    return message.dispatched_at is not None and now - message.dispatched_at >= absent_after


def _window(message: InDoubt) -> tuple[str, str, str, str]:
    return (message.workspace, message.stream, message.campaign, message.send_window)


def _entry(
    message: InDoubt,
    status: LedgerStatus,
    reason: str,
    provider_message_id: str | None = None,
) -> LedgerEntry:
    return LedgerEntry(
        message_key=message.message_key,
        status=status,
        recipient=message.recipient,
        reason=reason,
        identity=message.identity,
        sending_domain=message.sending_domain,
        provider=message.provider,
        provider_account=message.provider_account,
        provider_message_id=provider_message_id,
    )
