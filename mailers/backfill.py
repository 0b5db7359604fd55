"""Backfilling provider feedback that never arrived, from the providers' events APIs.

A webhook receiver that was down for a day loses that day's events unless someone asks
the provider again. :func:`open_windows` finds, per provider account and hand-over day,
the messages still without a final event (:data:`~mailers.completeness.FINAL_EVENT_TYPES`)
``backfill_after_hours`` after they were handed over, and :func:`backfill_into_landing`
fetches each such window's events from the provider and lands them like any webhook
batch. Each window carries its open messages' provider message ids, for providers whose
API answers per message rather than per time range (Postmark's deliveries). Ingestion
drops event ids it has already stored, so events that did arrive are not loaded twice,
and the ones that did not are loaded once.

Set-based: one query over the ledger rows and events of the last
``backfill_max_age_hours`` (older messages are left to the overdue check: providers keep
events for days, not forever), however long the history.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from mailers.clock import utcnow
from mailers.completeness import FINAL_EVENT_TYPES, CompletenessConfig
from mailers.current_events import current_events_sql
from mailers.landing import land
from mailers.ledger import LEDGER_TABLE, LedgerStatus, recency_order, sql_text
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

Fetch = Callable[[datetime, datetime, Sequence[str]], list[bytes]]
"""``fetch(start, end, open_message_ids)``: every event payload the provider holds for the
account whose event time lies in ``[start, end]`` (naive UTC). ``open_message_ids`` are the
provider message ids of the span's messages still without a final event, for providers
whose events API is per message (Postmark's deliveries); the others ignore them."""

SLACK = timedelta(minutes=5)
"""Fetched before the first hand-over of a window: the provider's clock is not ours."""

_OPEN_STATUSES = (LedgerStatus.ACCEPTED, LedgerStatus.UNKNOWN)


@dataclass(frozen=True)
class BackfillWindow:
    """One provider account's hand-over day with messages still missing a final event."""

    provider: str
    provider_account: str
    day: date
    messages: int
    start: datetime
    end: datetime
    provider_message_ids: tuple[str, ...] = ()
    """The open messages' provider message ids (sorted; those the ledger knows)."""


@dataclass(frozen=True)
class BackfillSpan:
    """The time span one fetch asks an account for: overlapping windows merged."""

    account: str
    start: datetime
    end: datetime
    provider_message_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackfillTarget:
    """One provider account whose events API can be asked for a past time window."""

    kind: str
    account: str
    fetch: Fetch


@dataclass
class BackfillReport:
    """What one backfill fetched and landed, per account, and the accounts that failed."""

    windows: list[BackfillWindow] = field(default_factory=list)
    fetched: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    landed: list[Path] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.fetched.values())


def open_windows(
    warehouse: Warehouse,
    config: CompletenessConfig,
    *,
    accounts: Collection[str] | None = None,
    since: datetime | None = None,
) -> list[BackfillWindow]:
    """The account-days with messages handed over between ``since`` (default: now less
    ``backfill_max_age_hours``) and ``backfill_after_hours`` ago that have no final event
    yet, each with the event-time window to fetch: from its first hand-over (less
    :data:`SLACK`) to the deadline after its last one, or now if that is sooner."""
    now = utcnow()
    oldest = since or now - timedelta(hours=config.backfill_max_age_hours)
    ripe = now - timedelta(hours=config.backfill_after_hours)
    if oldest >= ripe:
        return []
    ledger = warehouse.relation(MAILERS_SCHEMA, LEDGER_TABLE)
    finals = ", ".join(sql_text(t) for t in FINAL_EVENT_TYPES)
    statuses = ", ".join(sql_text(s) for s in _OPEN_STATUSES)
    only = ""
    if accounts is not None:
        if not accounts:
            return []
        only = f"and provider_account in ({', '.join(sql_text(a) for a in sorted(accounts))})"
    oldest_sql = f"cast({sql_text(oldest.isoformat(sep=' '))} as timestamp)"
    ripe_sql = f"cast({sql_text(ripe.isoformat(sep=' '))} as timestamp)"
    final_events = current_events_sql(
        warehouse, f"event_type in ({finals}) and occurred_at >= {oldest_sql}"
    )
    # Rows older than ``oldest`` cannot be a recent message's latest row, so filtering
    # before ranking keeps the latest row of every message recorded since then.
    rows = warehouse.query(
        f"""
        with latest as (
            select * from (
                select message_key, status, provider, provider_account,
                    provider_message_id, recorded_at, ledger_id,
                    row_number() over (
                        partition by message_key order by {recency_order()}
                    ) as recency
                from {ledger}
                where recorded_at >= {oldest_sql} {only}
            ) as ranked
            where recency = 1
        ),
        finals as (
            select message_key, provider_account, provider_message_id
            from {final_events} as current
        ),
        open as (
            select latest.* from latest
            where latest.status in ({statuses})
              and latest.provider_account is not null
              and latest.recorded_at <= {ripe_sql}
              and not exists (
                select 1 from finals
                where finals.message_key = latest.message_key
                   or (finals.provider_account = latest.provider_account
                       and finals.provider_message_id = latest.provider_message_id)
              )
        )
        select provider, provider_account, cast(recorded_at as date) as day,
            count(*) as messages, min(recorded_at) as first_sent_at,
            max(recorded_at) as last_sent_at,
            array_agg(provider_message_id order by provider_message_id) as message_ids
        from open
        group by provider, provider_account, cast(recorded_at as date)
        order by provider_account, day
        """
    ).to_pylist()
    deadline = timedelta(hours=config.deadline_hours)
    return [
        BackfillWindow(
            provider=row["provider"],
            provider_account=row["provider_account"],
            day=row["day"],
            messages=int(row["messages"]),
            start=row["first_sent_at"] - SLACK,
            end=min(now, row["last_sent_at"] + deadline),
            provider_message_ids=tuple(i for i in row["message_ids"] or () if i),
        )
        for row in rows
    ]


def backfill_into_landing(
    landing_dir: Path, targets: Sequence[BackfillTarget], windows: Sequence[BackfillWindow]
) -> BackfillReport:
    """Fetch the events of the targets' accounts over their windows and land them, one
    file per fetch; overlapping windows of an account (consecutive days) are fetched as
    one span. An account that fails is reported and the others still backfilled.

    Windows of accounts without a target (a provider without an events API, such as SES)
    are left alone: nothing can be asked for them."""
    report = BackfillReport(windows=list(windows))
    by_account = {target.account: target for target in targets}
    for span in spans(windows):
        target = by_account.get(span.account)
        if target is None or span.account in report.errors:
            continue
        try:
            payloads = target.fetch(span.start, span.end, span.provider_message_ids)
        except Exception as err:  # any provider failure: report it, backfill the others
            report.errors[target.account] = f"{type(err).__name__}: {err}"
            continue
        path = land(landing_dir, target.kind, target.account, payloads)
        if path is not None:
            report.landed.append(path)
        report.fetched[target.account] = report.fetched.get(target.account, 0) + len(payloads)
    return report


def spans(windows: Sequence[BackfillWindow]) -> list[BackfillSpan]:
    """The spans covering the windows, overlapping ones merged per account (with the open
    message ids of all of them)."""
    merged: list[BackfillSpan] = []
    for window in sorted(windows, key=lambda w: (w.provider_account, w.start)):
        last = merged[-1] if merged else None
        if last and last.account == window.provider_account and window.start <= last.end:
            ids = sorted({*last.provider_message_ids, *window.provider_message_ids})
            merged[-1] = BackfillSpan(
                last.account, last.start, max(last.end, window.end), tuple(ids)
            )
        else:
            merged.append(
                BackfillSpan(
                    window.provider_account,
                    window.start,
                    window.end,
                    window.provider_message_ids,
                )
            )
    return merged
