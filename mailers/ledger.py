"""The send ledger: an append-only record of every send decision.

Each message has a deterministic key (workspace, campaign, recipient, send window; see
:mod:`mailers.keys`). A message's story is the sequence of its ledger rows:

* ``skipped``        decided not to send (invalid address, suppressed, or the template uses
                     a variable the segment does not have); final.
* ``render_failed``  the template failed for this recipient; a later run may try again.
* ``dispatching``    written *before* the batch is handed to a provider.
* ``accepted``       the provider took it; carries the provider message id.
* ``rejected``       the provider refused this message; final.
* ``not_sent``       the provider account was unavailable and nothing was handed over;
                     a later run may try again.
* ``unknown``        the outcome is ambiguous (timeout after the request left, or a run that
                     died between ``dispatching`` and its outcome); never retried blindly.
* ``deferred``       held back by the sending policy (a warm-up curve or a daily cap is
                     full today); ``eligible_at`` says when it may go, and from then on it
                     is retryable. Nothing was handed over.

A message's *latest* row is the one :func:`recency_order` puts first (the latest
``recorded_at``; rows of one instant by :data:`STATUS_PRECEDENCE`, then ``ledger_id``), and
:func:`attributed_events_sql` ties provider events to messages: dbt's models follow the
same two rules.

A message whose latest row is ``render_failed`` or ``not_sent``, or ``deferred`` once its
``eligible_at`` has passed, is *retryable*; every other status settles the message for its
send window, so re-running a send never sends it twice. ``route`` says why the row's
provider account was chosen (the routing rule, and any fallback).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import pyarrow as pa

from mailers.clock import stamp, utcnow
from mailers.config import CampaignRef
from mailers.events import EVENTS_SCHEMA
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

LEDGER_TABLE = "send_ledger"


class LedgerStatus(StrEnum):
    """What happened to a message at one point in its life."""

    SKIPPED = "skipped"
    RENDER_FAILED = "render_failed"
    DISPATCHING = "dispatching"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    NOT_SENT = "not_sent"
    UNKNOWN = "unknown"
    DEFERRED = "deferred"
    PAUSED = "paused"
    """Not handed over: a pause held its scope (:mod:`mailers.pauses`); the next run of the
    window after the resume sends it."""


RETRYABLE_STATUSES: frozenset[LedgerStatus] = frozenset(
    {LedgerStatus.RENDER_FAILED, LedgerStatus.NOT_SENT, LedgerStatus.PAUSED}
)
"""Latest statuses that leave a message eligible for a later run of the same window
(and ``deferred``, once its ``eligible_at`` has passed)."""


class SkipReason(StrEnum):
    """Why a recipient is not sent to: decided by the audience step, or when rendering."""

    MISSING_ADDRESS = "missing_address"
    INVALID_ADDRESS = "invalid_address"
    SUPPRESSED = "suppressed"
    TEMPLATE_VARIABLE_MISSING = "template_variable_missing"
    """The template needs a variable that is neither a segment column nor one Mailers gives:
    every later run would fail alike, so the message is settled rather than retried. The
    recorded reason starts with this value and names the variable."""


LEDGER_SCHEMA = pa.schema(
    [
        pa.field("ledger_id", pa.string(), nullable=False),
        pa.field("message_key", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("workspace", pa.string(), nullable=False),
        pa.field("stream", pa.string(), nullable=False),
        pa.field("campaign", pa.string(), nullable=False),
        pa.field("send_window", pa.string(), nullable=False),
        pa.field("recipient", pa.string()),
        pa.field("identity", pa.string()),
        pa.field("sending_domain", pa.string()),
        pa.field("provider", pa.string()),
        pa.field("provider_account", pa.string()),
        pa.field("provider_message_id", pa.string()),
        pa.field("batch_id", pa.string()),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("recorded_at", pa.timestamp("us"), nullable=False),
        pa.field("route", pa.string()),
        pa.field("eligible_at", pa.timestamp("us")),
    ]
)
"""Columns of ``mailers.send_ledger``, one row per status change of one message."""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One ledger row before the writer stamps context, run and time on it."""

    message_key: str
    status: LedgerStatus
    recipient: str | None = None
    reason: str | None = None
    identity: str | None = None
    sending_domain: str | None = None
    provider: str | None = None
    provider_account: str | None = None
    provider_message_id: str | None = None
    batch_id: str | None = None
    route: str | None = None
    eligible_at: datetime | None = None
    """For ``deferred``: when the message may go (UTC, naive)."""


@dataclass(frozen=True)
class LedgerContext:
    """The campaign window and run every row of one writer belongs to."""

    workspace: str
    stream: str
    campaign: str
    send_window: str
    run_id: str

    @classmethod
    def of(cls, campaign: CampaignRef, send_window: str, run_id: str) -> LedgerContext:
        """The context of one run of a configured campaign's window."""
        return cls(
            workspace=campaign.workspace,
            stream=str(campaign.config.stream),
            campaign=campaign.name,
            send_window=send_window,
            run_id=run_id,
        )


class LedgerWriter:
    """Appends ledger rows for one campaign window and run, always in bulk."""

    def __init__(self, warehouse: Warehouse, context: LedgerContext) -> None:
        self.warehouse = warehouse
        self.context = context

    def record(self, entries: Sequence[LedgerEntry]) -> None:
        """Append one row per entry, all stamped with the same, strictly later, time."""
        if not entries:
            return
        self.warehouse.append(MAILERS_SCHEMA, LEDGER_TABLE, self.table_of(self.context, entries))

    @staticmethod
    def table_of(context: LedgerContext, entries: Sequence[LedgerEntry]) -> pa.Table:
        """The ledger rows of ``entries`` in ``context`` (:data:`LEDGER_SCHEMA`), each with
        a fresh ``ledger_id`` and all stamped with one new :func:`~mailers.clock.stamp`."""
        now = stamp()
        columns: dict[str, list[Any]] = {name: [] for name in LEDGER_SCHEMA.names}
        for entry in entries:
            columns["ledger_id"].append(uuid.uuid4().hex)
            columns["message_key"].append(entry.message_key)
            columns["status"].append(str(entry.status))
            columns["reason"].append(entry.reason)
            columns["recipient"].append(entry.recipient)
            columns["identity"].append(entry.identity)
            columns["sending_domain"].append(entry.sending_domain)
            columns["provider"].append(entry.provider)
            columns["provider_account"].append(entry.provider_account)
            columns["provider_message_id"].append(entry.provider_message_id)
            columns["batch_id"].append(entry.batch_id)
            columns["route"].append(entry.route)
            columns["eligible_at"].append(entry.eligible_at)
        count = len(entries)
        columns["workspace"] = [context.workspace] * count
        columns["stream"] = [context.stream] * count
        columns["campaign"] = [context.campaign] * count
        columns["send_window"] = [context.send_window] * count
        columns["run_id"] = [context.run_id] * count
        columns["recorded_at"] = [now] * count
        return pa.Table.from_pydict(columns, schema=LEDGER_SCHEMA)

    def _insert_select(self, select_rows: str, status: LedgerStatus) -> int:
        """Append rows produced by a query of (message_key, recipient, reason, ...) in bulk."""
        ctx = self.context
        d = self.warehouse.dialect
        ledger = self.warehouse.relation(MAILERS_SCHEMA, LEDGER_TABLE)
        return self.warehouse.execute(
            f"""
            insert into {ledger} (
                ledger_id, message_key, status, reason, workspace, stream, campaign,
                send_window, recipient, identity, sending_domain, provider, provider_account,
                provider_message_id, batch_id, run_id, recorded_at
            )
            select
                {d.md5_hex("src.message_key || '|' || ? || '|' || ?")}, src.message_key, ?,
                src.reason, ?, ?, ?, ?, src.recipient, src.identity, src.sending_domain,
                src.provider, src.provider_account, src.provider_message_id, null, ?, ?
            from ({select_rows}) as src
            """,
            [
                str(status),
                ctx.run_id,
                str(status),
                ctx.workspace,
                ctx.stream,
                ctx.campaign,
                ctx.send_window,
                ctx.run_id,
                stamp(),
            ],
        )

    def latest_rows_sql(self) -> str:
        """A query of the latest ledger row of every message of this campaign window."""
        ctx = self.context
        return latest_rows_sql(
            self.warehouse,
            f"workspace = {sql_text(ctx.workspace)} and campaign = {sql_text(ctx.campaign)} "
            f"and send_window = {sql_text(ctx.send_window)}",
        )

    def settled_keys_sql(self) -> str:
        """A query of the message keys this window has settled: not to be decided now.

        A ``deferred`` message counts as settled until its ``eligible_at``.
        """
        retryable = ", ".join(sql_text(s) for s in sorted(RETRYABLE_STATUSES))
        eligible = utcnow().isoformat(sep=" ")
        return (
            f"select message_key from ({self.latest_rows_sql()}) as latest "
            f"where status not in ({retryable}) and not ("
            f"status = {sql_text(LedgerStatus.DEFERRED)} "
            f"and eligible_at <= cast({sql_text(eligible)} as timestamp))"
        )

    def record_skips(self, audience: str) -> int:
        """Record the audience's rows with a skip reason as ``skipped`` (set-based).

        That includes rows the audience saw settled whose message has since become
        retryable (reconciled as never handed over) and is skipped now. Keys the ledger has
        settled meanwhile are left out, so recording twice is harmless.
        """
        return self._insert_select(
            f"""
            select mailers_message_key as message_key, mailers_recipient as recipient,
                   mailers_skip_reason as reason, null as identity, null as sending_domain,
                   null as provider, null as provider_account, null as provider_message_id
            from {audience}
            where mailers_disposition in ('skip', 'settled')
              and mailers_skip_reason is not null
              and mailers_message_key not in ({self.settled_keys_sql()})
            """,
            LedgerStatus.SKIPPED,
        )

    def record_paused_from(self, audience: str, first_key: str, reason: str) -> int:
        """Record as ``paused`` (set-based) the audience's ``send`` rows from ``first_key``
        on (in message key order) that this window has not settled: the rest of a send
        stopped by a pause. Returns how many."""
        return self._insert_select(
            f"""
            select mailers_message_key as message_key, mailers_recipient as recipient,
                   {sql_text(reason)} as reason, null as identity, null as sending_domain,
                   null as provider, null as provider_account, null as provider_message_id
            from {audience}
            where mailers_disposition in ('send', 'settled')
              and mailers_skip_reason is null
              and mailers_message_key >= {sql_text(first_key)}
              and mailers_message_key not in ({self.settled_keys_sql()})
            """,
            LedgerStatus.PAUSED,
        )

    def settle_in_doubt(self) -> int:
        """Mark messages of this window left ``dispatching`` by an earlier run as ``unknown``.

        Such a run died after handing (or while handing) the batch to the provider: the
        message may have gone out, so it is settled as ``unknown`` rather than re-sent.
        """
        ctx = self.context
        reason = (
            "the run that dispatched this message ended before the provider's answer was "
            "recorded; not re-sent (provider events will settle it)"
        )
        return self._insert_select(
            f"""
            select message_key, recipient, {sql_text(reason)} as reason, identity,
                   sending_domain, provider, provider_account, provider_message_id
            from ({self.latest_rows_sql()}) as latest
            where status = 'dispatching' and run_id <> {sql_text(ctx.run_id)}
            """,
            LedgerStatus.UNKNOWN,
        )


STATUS_PRECEDENCE: tuple[LedgerStatus, ...] = (
    LedgerStatus.DISPATCHING,
    LedgerStatus.RENDER_FAILED,
    LedgerStatus.NOT_SENT,
    LedgerStatus.DEFERRED,
    LedgerStatus.PAUSED,
    LedgerStatus.UNKNOWN,
    LedgerStatus.SKIPPED,
    LedgerStatus.REJECTED,
    LedgerStatus.ACCEPTED,
)
"""The order of a message's rows recorded in the same instant, earliest first.

:func:`stamp` orders the rows of one process, so only rows of two processes tie. Then a
dispatch precedes its outcome; a retryable outcome is superseded by an ambiguous one and
that by a settled one (a message that may have gone out is never made retryable by a tie);
``deferred`` and ``paused`` (nothing handed over) rank with the retryable ones; of the settled ones,
``accepted`` (the provider has it) wins over ``rejected`` over ``skipped``. dbt's
``ledger_recency_order`` macro ranks the statuses the same way.
"""


def recency_order() -> str:
    """The ``order by`` that puts a message's latest ledger row first.

    Latest ``recorded_at``; at equal times the later status of :data:`STATUS_PRECEDENCE`;
    rows alike in both (two runs recording the same status at once), the greatest
    ``ledger_id``: arbitrary, but the same on every read and in dbt's
    ``int_message_ledger_latest``.
    """
    ranks = " ".join(
        f"when {sql_text(status)} then {rank}" for rank, status in enumerate(STATUS_PRECEDENCE)
    )
    return f"recorded_at desc, case status {ranks} end desc, ledger_id desc"


def latest_rows_sql(warehouse: Warehouse, where: str = "true") -> str:
    """A query of the latest ledger row (by :func:`recency_order`) of every message matching
    ``where``, with a ``recency`` column (always 1)."""
    ledger = warehouse.relation(MAILERS_SCHEMA, LEDGER_TABLE)
    return f"""
        select * from (
            select *, row_number() over (
                partition by message_key order by {recency_order()}
            ) as recency
            from {ledger}
            where {where}
        ) as ranked
        where recency = 1"""


FILLED_FROM_MESSAGE = ("workspace", "stream", "campaign", "recipient")
"""Event columns that, when the event lacks them, are taken from its message's latest row."""


def attributed_events_sql(warehouse: Warehouse, events: str) -> str:
    """A query of ``events`` (a relation, or a parenthesized query, of events' columns), each
    tied to the message it is about; dbt's ``fct_email_events`` ties events the same way.

    * An event carrying a ``message_key`` is about that message, whatever its provider
      message id says and even when the ledger has no row of that key.
    * An event without one is about the message whose ledger rows carry its
      ``provider_message_id`` for the same provider and provider account (an id is unique
      only within the account that issued it), when exactly one message carries it: an id
      several messages share identifies none of them, and the event stays unattributed.

    Columns: those of ``events``, ``message_key`` being the message's key (null when
    unattributed); ``message_key_source``, ``'event'`` or ``'provider_message_id'`` (null
    when unattributed); and :data:`FILLED_FROM_MESSAGE` the event's own, else those of its
    message's latest ledger row (:func:`latest_rows_sql`).
    """
    ledger = warehouse.relation(MAILERS_SCHEMA, LEDGER_TABLE)
    columns = ", ".join(
        f"coalesce(matched.{name}, latest.{name}) as {name}"
        if name in FILLED_FROM_MESSAGE
        else f"matched.{name}"
        for name in EVENTS_SCHEMA.names
    )
    carried = ", ".join(f"e.{name}" for name in EVENTS_SCHEMA.names if name != "message_key")
    # Only ids some keyless event asks about are counted; all their rows, so sharing shows.
    return f"""
        with provider_message_ids as (
            select provider, provider_account, provider_message_id,
                min(message_key) as message_key
            from {ledger}
            where provider_message_id in (
                select provider_message_id from {events} as asked where asked.message_key is null
            )
            group by provider, provider_account, provider_message_id
            having count(distinct message_key) = 1
        ),
        matched as (
            select {carried},
                coalesce(e.message_key, ids.message_key) as message_key,
                case
                    when e.message_key is not null then 'event'
                    when ids.message_key is not null then 'provider_message_id'
                end as message_key_source
            from {events} as e
            left join provider_message_ids as ids
                on e.message_key is null
                and ids.provider = e.provider
                and ids.provider_account = e.provider_account
                and ids.provider_message_id = e.provider_message_id
        )
        select {columns}, matched.message_key_source
        from matched
        left join ({latest_rows_sql(warehouse, "message_key in (select message_key from matched)")})
            as latest on latest.message_key = matched.message_key"""


def sql_text(value: str) -> str:
    """``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"
