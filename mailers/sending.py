"""Sending one campaign window: audience rows in, ledger rows and provider calls out.

The flow, for each run:

1. settle messages an earlier run left ``dispatching`` as ``unknown`` (never re-sent
   blindly), then reconcile this window's ``unknown`` messages against landed events and
   the providers' records (:mod:`mailers.reconcile`): proven accepted, or proven never
   handed over and so sent in this run;
2. record the audience's ``skip`` rows as ``skipped`` (one set-based insert);
3. stream the ``send`` rows as Arrow record batches; render each message (a failure is
   recorded for that recipient alone), pick its identity, and assign it a provider account
   within the day's caps (:mod:`mailers.assignment`): a message over a cap is recorded
   ``deferred`` with the date it becomes eligible, overflowing first to accounts of its
   routing chain that still have room;
4. per provider batch: the provider journals every call it makes (:class:`LedgerJournal`):
   ``dispatching`` rows for exactly the messages of that call before it leaves, their
   outcome right after, each provider wave behind the account's circuit breaker
   (:mod:`mailers.breaker_board`), which opens on failures and later probes. An account
   whose provider gives up on it is marked down for the rest of the run and
   its unsent messages fail over along the routing chain; messages of a call without a
   usable answer are ``unknown`` (only those) and never re-sent blindly;
5. before every batch and every provider call the send asks its :class:`SendControl`:
   a pause of the workspace, stream or campaign stops the send (what is in flight is
   recorded as it ends, the rest of the window ``paused`` in one set-based insert); a
   pause of an identity or account holds its messages ``paused`` (never rerouted); a
   recipient suppressed since the audience was resolved is recorded ``skipped``.

Memory holds one record batch at a time, whatever the audience size.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailers.affinity import FirstSend, record_first_sends
from mailers.allowance import Allowance, Reservation, UsageBook
from mailers.assignment import Assigned, Assigner, Assignment, Deferred, Recipient, Stranded
from mailers.audience import Disposition
from mailers.breaker import BreakerState
from mailers.breaker_board import AuditContext, BreakerBoard
from mailers.caps import campaign_caps, mailbox_provider_of
from mailers.config import CampaignRef, IdentityConfig, Settings, StreamKind, WorkspaceConfig
from mailers.keys import draw
from mailers.ledger import LedgerContext, LedgerEntry, LedgerStatus, LedgerWriter, SkipReason
from mailers.mailboxes import MailboxPool, MailboxWait, Sleep, Slot
from mailers.messages import MESSAGE_KEY_HEADER, OutboundMessage, SendOutcome, SendResult
from mailers.pacing import Pacer
from mailers.pauses import Pause
from mailers.providers import HandOverHeld, Provider
from mailers.reconcile import MessageLookup, ReconcileReport, reconcile, window_filter
from mailers.rendering import CampaignTemplate, RenderFailure
from mailers.routing import Router
from mailers.send_control import SendControl
from mailers.unsubscribe import (
    LIST_UNSUBSCRIBE_POST,
    UnsubscribeClaim,
    link_expiry,
    unsubscribe_url,
)
from mailers.warehouse import Warehouse
from mailers.warmup_starts import with_started_curves

AUDIENCE_BATCH_ROWS = 5_000
"""Rows per Arrow record batch read from the audience table."""

Progress = Callable[[int], None]
"""Called with the number of audience rows just handled (for progress bars)."""


@dataclass
class SendReport:
    """Tallies of one send run, as they go into the audit record."""

    counts: Counter[str] = field(default_factory=Counter)
    accounts: Counter[str] = field(default_factory=Counter)
    down_accounts: dict[str, str] = field(default_factory=dict)
    reconciled: ReconcileReport = field(default_factory=ReconcileReport)
    deferred: Counter[str] = field(default_factory=Counter)
    """Messages deferred by the sending policy, per cap (its config key)."""
    paused_by: dict[str, Pause] = field(default_factory=dict)
    """The pauses that held messages of this run, by scope key."""

    def as_counts(self) -> dict[str, int]:
        return dict(self.counts)


@dataclass(frozen=True)
class SendContext:
    """Everything a send run needs besides the warehouse and the providers."""

    settings: Settings
    campaign: CampaignRef
    send_window: str
    run_id: str
    unsubscribe_key: str | None
    actor: str = "mailers"
    """Who or what started the run, for the audit records it writes (breaker transitions)."""

    @property
    def stream(self) -> StreamKind:
        return self.campaign.config.stream


class CampaignSender:
    """Sends one campaign window through the configured providers, recording everything."""

    def __init__(
        self,
        warehouse: Warehouse,
        context: SendContext,
        providers: Mapping[str, Provider],
        *,
        progress: Progress | None = None,
        before_dispatch: Callable[[], None] | None = None,
        lookups: Mapping[str, MessageLookup] | None = None,
        quotas: Mapping[str, int] | None = None,
        sleep: Sleep = time.sleep,
        control: SendControl | None = None,
    ) -> None:
        """``before_dispatch`` is called before every provider call and may stop the send
        by raising (e.g. this run no longer holds its window); ``lookups`` are the
        accounts' searchable records, used to settle messages in doubt; ``quotas`` are
        daily quotas providers publish for accounts (enforced beside configured caps);
        ``sleep`` waits for mailbox slots (:mod:`mailers.mailboxes`), calling
        ``before_dispatch`` at least every half minute of a wait; ``control`` is asked
        before every batch and call whether pauses or late suppressions hold messages."""
        self.warehouse = warehouse
        self.context = context
        self.providers = providers
        self.progress = progress
        self.before_dispatch = before_dispatch
        self.lookups = lookups or {}
        cfg = context.settings.config
        workspace = cfg.workspaces[context.campaign.workspace]
        self.identities: dict[str, IdentityConfig] = {
            name: workspace.identities[name] for name in context.campaign.config.identities
        }
        router = Router(workspace.streams[context.stream].routing, workspace.mailbox_providers)
        domains = mailbox_provider_of(workspace.mailbox_providers)
        book = UsageBook.of(warehouse, context.campaign.workspace, domains)
        caps = with_started_curves(
            warehouse,
            context.campaign.workspace,
            campaign_caps(workspace, context.campaign, router.accounts, quotas),
            record=True,
        )
        self.assigner = Assigner(router, Allowance(warehouse, book, caps), domains)
        self.scope_pacer = _scope_pacer(workspace, context.campaign)
        self.breakers = BreakerBoard.load(
            warehouse,
            context.campaign.workspace,
            {name: workspace.provider_accounts[name].breaker for name in router.accounts},
            AuditContext(
                run_id=context.run_id,
                actor=context.actor,
                config_hash=context.settings.config_hash,
                stream=str(context.stream),
                campaign=context.campaign.name,
                send_window=context.send_window,
            ),
        )
        self.pool = MailboxPool.for_campaign(
            warehouse, workspace, context.campaign, self.assigner.allowance
        )
        self.sleep = sleep
        self.control = control
        self._slots: dict[str, Slot] = {}
        """Message key → its mailbox slot (current batch, pooled campaigns)."""
        self.template = CampaignTemplate(
            context.settings.templates_dir, context.campaign.config.template
        )
        if context.stream.needs_unsubscribe and not context.unsubscribe_key:
            raise ValueError(f"stream {context.stream} needs an unsubscribe signing key")
        self.ledger = LedgerWriter(
            warehouse,
            LedgerContext(
                workspace=context.campaign.workspace,
                stream=str(context.stream),
                campaign=context.campaign.name,
                send_window=context.send_window,
                run_id=context.run_id,
            ),
        )
        self.report = SendReport()
        self.down: dict[str, str] = {}
        self._sticky: dict[str, str | None] = {}
        """Message key → the account that first sent to its recipient (current batch)."""
        self._reserved: dict[str, Reservation] = {}
        self._routes: dict[str, str] = {}

    def run(self, audience: str) -> SendReport:
        """Send the ``send`` rows of a resolved audience table; return what happened."""
        counts = self.report.counts
        counts["reconciled_unknown"] += self.ledger.settle_in_doubt()
        ctx = self.context
        self.report.reconciled = reconcile(
            self.warehouse,
            self.lookups,
            run_id=ctx.run_id,
            where=window_filter(ctx.campaign.workspace, ctx.campaign.name, ctx.send_window),
        )
        counts.update(self.report.reconciled.as_counts())
        counts["skipped_recorded"] += self.ledger.record_skips(audience)
        # The ledger is consulted again here, not only when the audience was resolved: a
        # stale audience table must never lead to a second send, and a message the
        # audience saw settled may have been reconciled as never handed over since.
        query = (
            f"select * from {audience} "
            f"where mailers_disposition in ('{Disposition.SEND}', '{Disposition.SETTLED}') "
            f"and mailers_skip_reason is null "
            f"and mailers_message_key not in ({self.ledger.settled_keys_sql()}) "
            f"order by mailers_message_key"
        )
        try:
            batches = self.warehouse.stream(query, batch_rows=AUDIENCE_BATCH_ROWS)
            try:
                stopped = self._stream(batches)
            finally:
                # A send a pause stopped leaves the stream unread: release its cursor now.
                getattr(batches, "close", lambda: None)()
            if stopped is not None:
                self._record_rest_paused(audience, *stopped)
        finally:
            # Reservations of messages a stopped run never handed over: the ledger (which
            # the next send re-reads) has no row using them, so nothing stays reserved.
            for reservation in self._reserved.values():
                self.assigner.allowance.settle(reservation)
            self._reserved.clear()
        self.report.down_accounts = dict(self.down)
        for account, breaker in self.breakers.breakers.items():
            if breaker.state is not BreakerState.CLOSED and account not in self.down:
                self.report.down_accounts[account] = breaker.why()
        if self.pool is not None:
            counts["recipient_timezone_unknown"] += sum(self.pool.unknown_zones.values())
        return self.report

    def _stream(self, batches: Iterable[Any]) -> tuple[str, Pause] | None:
        """Send the audience's record batches; stop before a batch a pause of the whole
        window holds, and return its first message key and the pause."""
        for batch in batches:
            rows = batch.to_pylist()
            pause = self.control.before_batch() if self.control is not None else None
            if pause is not None and rows:
                return rows[0]["mailers_message_key"], pause
            self._send_rows(rows)
            if self.progress:
                self.progress(batch.num_rows)
        return None

    def _record_rest_paused(self, audience: str, first_key: str, pause: Pause) -> None:
        """Record every message of the window from ``first_key`` on as ``paused``."""
        left = self.ledger.record_paused_from(audience, first_key, _paused_reason(pause))
        self.report.counts[str(LedgerStatus.PAUSED)] += left
        self.report.paused_by[pause.scope.key] = pause
        if self.progress:
            self.progress(left)

    def _send_rows(self, rows: list[dict[str, Any]]) -> None:
        failures: list[LedgerEntry] = []
        by_account: dict[str, list[OutboundMessage]] = defaultdict(list)
        held: list[LedgerEntry] = []
        # Nothing is handed over until every row of the batch is assigned, so which
        # accounts are unavailable is asked once for the batch, not once per message.
        down = self._unavailable()
        for row in rows:
            waiting = self._pick_mailbox(row)
            if waiting is not None:
                held.append(waiting)
                continue
            message = self._render(row)
            if isinstance(message, LedgerEntry):
                self._unpick(message.message_key)
                failures.append(message)
                continue
            self._sticky[message.message_key] = row.get("mailers_sticky_account")
            verdict = self._assign(message, down)
            if isinstance(verdict, Assigned):
                by_account[verdict.account].append(message)
            else:
                self._unpick(message.message_key)
                held.append(self._held_entry(message, verdict))
        self.ledger.record(failures + held)
        settled = sum(f.status is LedgerStatus.SKIPPED for f in failures)
        self.report.counts["render_failed"] += len(failures) - settled
        self.report.counts[f"skipped_{SkipReason.TEMPLATE_VARIABLE_MISSING}"] += settled
        for account, messages in self._in_slot_order(by_account):
            self._dispatch(account, messages)
        self._sticky.clear()
        self._slots.clear()

    def _assign(self, message: OutboundMessage, down: Mapping[str, str]) -> Assignment:
        """Route ``message`` under the caps, passing over the ``down`` accounts (see
        :meth:`_unavailable`); remember the reservation and route of a send."""
        verdict = self.assigner.assign(
            Recipient(
                message_key=message.message_key,
                address=message.recipient,
                stream=message.stream,
                campaign=message.campaign,
                identity=message.identity,
                sending_domain=message.sending_domain,
                sticky_account=self._sticky.get(message.message_key),
            ),
            down,
        )
        if isinstance(verdict, Assigned):
            self._reserved[message.message_key] = verdict.reservation
            self._routes[message.message_key] = verdict.route
        return verdict

    def _unavailable(self) -> dict[str, str]:
        """Accounts that cannot take a message now, and why: those that failed in this run,
        and those whose circuit breaker is open (an open one past its ``open_seconds``
        half-opens here and takes a probe)."""
        down = dict(self.down)
        for account in self.assigner.router.accounts:
            if account not in down and not self.breakers.available(account):
                down[account] = f"is unavailable ({self.breakers.why(account)})"
        return down

    def _held_entry(self, message: OutboundMessage, verdict: Deferred | Stranded) -> LedgerEntry:
        """The ledger row of a message no account takes now (and count it)."""
        if isinstance(verdict, Deferred):
            self.report.counts["deferred"] += 1
            self.report.deferred[verdict.refusal.cap.source] += 1
            status, eligible_at = LedgerStatus.DEFERRED, verdict.eligible_at
        else:
            # Not accepted anywhere: a later run of this window retries it.
            self.report.counts["not_sent"] += 1
            status, eligible_at = LedgerStatus.NOT_SENT, None
        return LedgerEntry(
            message_key=message.message_key,
            status=status,
            recipient=message.recipient,
            reason=verdict.reason,
            identity=message.identity,
            sending_domain=message.sending_domain,
            route=verdict.route,
            eligible_at=eligible_at,
        )

    def _identity(self, message_key: str) -> tuple[str, IdentityConfig]:
        slot = self._slots.get(message_key)
        name = slot.identity if slot else draw(list(self.identities), message_key, "identity")
        return name, self.identities[name]

    def _render(self, row: dict[str, Any]) -> OutboundMessage | LedgerEntry:
        ctx = self.context
        key = row["mailers_message_key"]
        recipient = row["mailers_recipient"]
        variables = {k: v for k, v in row.items() if not k.startswith("mailers_")}
        variables.update(workspace=ctx.campaign.workspace, campaign=ctx.campaign.name)
        headers = {MESSAGE_KEY_HEADER: key}
        if ctx.stream.needs_unsubscribe and ctx.unsubscribe_key:
            claim = UnsubscribeClaim(key, ctx.campaign.workspace, str(ctx.stream))
            links = ctx.settings.config.unsubscribe
            url = unsubscribe_url(
                links.base_url, claim, ctx.unsubscribe_key, link_expiry(links.token_ttl_days)
            )
            variables["unsubscribe_url"] = url
            headers["List-Unsubscribe"] = f"<{url}>"
            headers["List-Unsubscribe-Post"] = LIST_UNSUBSCRIBE_POST
        identity_name, identity = self._identity(key)
        content = self.template.render(variables)
        if isinstance(content, RenderFailure):
            status, reason = LedgerStatus.RENDER_FAILED, content.reason
            if content.variable is not None and content.variable not in variables:
                # Not a column of the segment (NULLs are keys here too) nor a variable Mailers
                # adds: every run of this window would fail alike, so settle instead of retrying.
                status = LedgerStatus.SKIPPED
                reason = (
                    f"{SkipReason.TEMPLATE_VARIABLE_MISSING}: {content.variable!r} is neither a "
                    f"column of segment {ctx.campaign.config.segment} nor a variable Mailers "
                    f"provides on the {ctx.stream} stream ({content.reason})"
                )
            return LedgerEntry(
                message_key=key,
                status=status,
                recipient=recipient,
                reason=reason,
                identity=identity_name,
                sending_domain=identity.sending_domain,
            )
        return OutboundMessage(
            message_key=key,
            workspace=ctx.campaign.workspace,
            stream=str(ctx.stream),
            campaign=ctx.campaign.name,
            send_window=ctx.send_window,
            identity=identity_name,
            recipient=recipient,
            from_address=identity.from_address,
            from_name=identity.from_name,
            reply_to=identity.reply_to,
            sending_domain=identity.sending_domain,
            subject=content.subject,
            html=content.html,
            text=content.text,
            headers=headers,
        )

    def _dispatch(self, account: str, messages: list[OutboundMessage]) -> None:
        provider = self.providers[account]
        size = provider.max_batch_size
        if self.scope_pacer is not None and self.scope_pacer.burst is not None:
            # Calls no larger than a second at the scope's pace, so it spaces them evenly.
            size = min(size, int(self.scope_pacer.burst))
        for start in range(0, len(messages), size):
            chunk = messages[start : start + size]
            if account in self.down:
                self._fail_over(chunk)
            else:
                self._send_chunk(provider, chunk)

    def _send_chunk(self, provider: Provider, chunk: Sequence[OutboundMessage]) -> None:
        chunk = self._controlled(provider.account, chunk)
        if not chunk:
            return
        if self.scope_pacer is not None:
            self.scope_pacer.acquire(len(chunk))
        chunk = self._await_slots(chunk)
        if not chunk:
            return
        journal = LedgerJournal(
            self.ledger,
            provider,
            chunk,
            self.before_dispatch,
            routes=self._routes,
            control=self.control,
        )
        results: list[SendResult] = []
        try:
            results = provider.send_batch(chunk, self.breakers.journal(provider.account, journal))
        finally:
            held = {r.message_key for r in results if r.outcome is SendOutcome.HELD}
            self.report.paused_by.update(journal.held_by)
            if self.pool is not None:
                self.pool.handed_over([m.identity for m in chunk if m.message_key not in held])
            # Whatever was handed over is in the ledger now, which counts it from here on;
            # what a pause held never left, so its capacity is given back.
            for message in chunk:
                reservation = self._reserved.pop(message.message_key, None)
                if reservation is None:
                    continue
                if message.message_key in held:
                    self.assigner.allowance.release(reservation)
                else:
                    self.assigner.allowance.settle(reservation)
        self._record_first_sends(provider.account, chunk, results)
        # Messages the account failed to take are not counted here: the next account up
        # (or the ledger row _fail_over writes, when none is left) decides what they become.
        moving = [r for r in results if r.account_unavailable]
        tally = Counter(str(_status(r)) for r in results if not r.account_unavailable)
        self.report.counts.update(tally)
        self.report.accounts[provider.account] += tally[LedgerStatus.ACCEPTED]
        if not moving:
            return
        if self.breakers.available(provider.account):
            # The provider gave up on the account (not its breaker): out for this run.
            self.down[provider.account] = moving[0].reason or "unavailable"
        self._fail_over([journal.messages[r.message_key] for r in moving])

    def _controlled(
        self, account: str, chunk: Sequence[OutboundMessage]
    ) -> Sequence[OutboundMessage]:
        """The messages of ``chunk`` that may leave through ``account`` now.

        Recipients suppressed since the audience was resolved are recorded ``skipped``,
        messages a pause of their identity or of the account holds ``paused``; neither is
        handed over, and their reserved capacity is given back.
        """
        if self.control is None:
            return chunk
        self.control.run_checks()
        blocked = self.control.blocked([m.recipient for m in chunk])
        pauses = {i: self.control.holding(account, i) for i in {m.identity for m in chunk}}
        if not blocked and not any(pauses.values()):
            return chunk
        kept, stopped = [], []
        for message in chunk:
            pause = pauses[message.identity]
            why = blocked.get(message.recipient)
            if why is None and pause is None:
                kept.append(message)
                continue
            if why is not None:
                status, reason = LedgerStatus.SKIPPED, f"{SkipReason.SUPPRESSED}: {why}"
                self.report.counts[f"skipped_{SkipReason.SUPPRESSED}_during_send"] += 1
            else:
                assert pause is not None
                status, reason = LedgerStatus.PAUSED, _paused_reason(pause)
                self.report.counts[str(LedgerStatus.PAUSED)] += 1
                self.report.paused_by[pause.scope.key] = pause
            self._unpick(message.message_key)
            reservation = self._reserved.pop(message.message_key, None)
            if reservation is not None:
                self.assigner.allowance.release(reservation)
            stopped.append(
                LedgerEntry(
                    message_key=message.message_key,
                    status=status,
                    recipient=message.recipient,
                    reason=reason,
                    identity=message.identity,
                    sending_domain=message.sending_domain,
                    provider_account=account,
                    route=self._routes.pop(message.message_key, None),
                )
            )
        self.ledger.record(stopped)
        return kept

    def _fail_over(self, chunk: Iterable[OutboundMessage]) -> None:
        """Send ``chunk`` (not handed over, or refused as a whole) through the next accounts.

        Their capacity on the account that failed was never used: it is reserved again on
        the account that takes them. Those no account can take now get their own row.
        """
        regrouped: dict[str, list[OutboundMessage]] = defaultdict(list)
        held: list[LedgerEntry] = []
        down = self._unavailable()
        for message in chunk:
            verdict = self._assign(message, down)
            if isinstance(verdict, Assigned):
                regrouped[verdict.account].append(message)
            else:
                held.append(self._held_entry(message, verdict))
        self.ledger.record(held)
        for account, messages in regrouped.items():
            self._dispatch(account, messages)

    def _record_first_sends(
        self, account: str, chunk: Sequence[OutboundMessage], results: Sequence[SendResult]
    ) -> None:
        """Remember the account and identity of recipients accepted here for the first time."""
        accepted = {r.message_key for r in results if r.accepted}
        firsts = [
            FirstSend(m.recipient, account, m.identity, m.message_key)
            for m in chunk
            if m.message_key in accepted and self._sticky.get(m.message_key) is None
        ]
        record_first_sends(
            self.warehouse, self.context.campaign.workspace, str(self.context.stream), firsts
        )

    def _pick_mailbox(self, row: dict[str, Any]) -> LedgerEntry | None:
        """Take the row's mailbox slot in a pooled campaign; its ``deferred`` row if none."""
        if self.pool is None:
            return None
        key, recipient = row["mailers_message_key"], row["mailers_recipient"]
        pick = self.pool.pick(recipient, row.get("mailers_sticky_identity"), row)
        if isinstance(pick, Slot):
            self._slots[key] = pick
            return None
        return self._waiting_entry(key, recipient, pick)

    def _unpick(self, message_key: str) -> None:
        slot = self._slots.pop(message_key, None)
        if slot is not None and self.pool is not None:
            self.pool.cancel(slot)

    def _waiting_entry(self, key: str, recipient: str, wait: MailboxWait) -> LedgerEntry:
        """The ``deferred`` row of a message its mailboxes cannot send in this run."""
        self.report.counts["deferred"] += 1
        self.report.deferred[wait.source] += 1
        return LedgerEntry(
            message_key=key,
            status=LedgerStatus.DEFERRED,
            recipient=recipient,
            reason=wait.reason,
            identity=wait.identity,
            sending_domain=self.identities[wait.identity].sending_domain,
            eligible_at=wait.eligible_at,
        )

    def _in_slot_order(
        self, by_account: Mapping[str, list[OutboundMessage]]
    ) -> list[tuple[str, list[OutboundMessage]]]:
        """Pooled messages grouped by slot and account, earliest slot first (a mailbox with
        a gap has one message per slot, so a provider call never carries two of its)."""
        if self.pool is None:
            return list(by_account.items())
        groups: dict[tuple[datetime, str], list[OutboundMessage]] = defaultdict(list)
        for account, messages in by_account.items():
            for m in messages:
                groups[(self._slots[m.message_key].at, account)].append(m)
        return [(account, groups[(at, account)]) for at, account in sorted(groups)]

    def _await_slots(self, chunk: Sequence[OutboundMessage]) -> Sequence[OutboundMessage]:
        """Wait until the chunk's mailboxes may send; defer those whose hours closed."""
        if self.pool is None:
            return chunk
        start, late = self.pool.due([self._slots[m.message_key] for m in chunk])
        held, kept = [], []
        for m in chunk:
            slot = self._slots[m.message_key]
            if not any(slot is s for s in late):
                kept.append(m)
                continue
            self.assigner.allowance.release(self._reserved.pop(m.message_key))
            self._routes.pop(m.message_key, None)
            held.append(self._waiting_entry(m.message_key, m.recipient, self.pool.withdrawn(slot)))
        self.ledger.record(held)
        self.pool.wait(start, self.sleep, self.before_dispatch)
        return kept


def _scope_pacer(workspace: WorkspaceConfig, campaign: CampaignRef) -> Pacer | None:
    """A pacer for the tightest ``messages_per_second`` of the workspace, stream and
    campaign policies (each account is paced by its own ``pacing`` besides)."""
    limits = (
        workspace.policy,
        workspace.streams[campaign.config.stream].policy,
        campaign.config.policy,
    )
    rates = [lim.messages_per_second for lim in limits if lim.messages_per_second is not None]
    if not rates:
        return None
    # One chunk is at most a second's worth (see _dispatch), so the bucket holds one chunk.
    return Pacer(min(rates), burst=float(max(1, math.ceil(min(rates)))))


def _paused_reason(pause: Pause) -> str:
    """The ledger reason of a message a pause held: the pause, and how to lift it."""
    return f"paused: {pause.describe()} (mailers resume {pause.scope.key} --reason ...)"


def _status(result: SendResult) -> LedgerStatus:
    if result.accepted:
        return LedgerStatus.ACCEPTED
    return _UNANSWERED.get(result.outcome, LedgerStatus.REJECTED)


_UNANSWERED = {
    SendOutcome.NOT_SENT: LedgerStatus.NOT_SENT,
    SendOutcome.UNKNOWN: LedgerStatus.UNKNOWN,
    SendOutcome.HELD: LedgerStatus.PAUSED,
}


class LedgerJournal:
    """The ledger side of :class:`~mailers.providers.DispatchJournal` for one batch.

    ``dispatching`` rows are appended before each provider call (after ``before_dispatch``,
    which may refuse by raising, e.g. when this run no longer holds its send window), and
    each call's outcomes right after it, so the ledger is never behind the provider by
    more than the call in flight.
    """

    def __init__(
        self,
        ledger: LedgerWriter,
        provider: Provider,
        messages: Sequence[OutboundMessage],
        before_dispatch: Callable[[], None] | None = None,
        *,
        routes: Mapping[str, str] | None = None,
        control: SendControl | None = None,
    ) -> None:
        """``routes`` maps a message key to why this account was chosen for it; ``control``
        is asked before every call whether a pause holds its messages."""
        self.ledger = ledger
        self.provider = provider
        self.messages = {m.message_key: m for m in messages}
        self.before_dispatch = before_dispatch
        self.routes = routes or {}
        self.control = control
        self.batch_ids: dict[str, str] = {}
        self.held_by: dict[str, Pause] = {}
        """The pause that refused a call of this batch, by scope key."""

    def handing_over(
        self, messages: Sequence[OutboundMessage], idempotency_keys: Mapping[str, str]
    ) -> None:
        if self.before_dispatch is not None:
            self.before_dispatch()
        if self.control is not None:
            # A pause written after the batch began still stops its next call.
            for identity in sorted({m.identity for m in messages}):
                pause = self.control.holding(self.provider.account, identity)
                if pause is not None:
                    self.held_by[pause.scope.key] = pause
                    raise HandOverHeld(_paused_reason(pause))
        # A call's batch id is its idempotency key when the provider takes one, so the
        # ledger shows which rows were one request and that a retry repeated it.
        batch_id = uuid.uuid4().hex
        self.batch_ids.update(
            (m.message_key, idempotency_keys.get(m.message_key, batch_id)) for m in messages
        )
        self.ledger.record([self._entry(m, LedgerStatus.DISPATCHING) for m in messages])

    def answered(self, results: Sequence[SendResult]) -> None:
        self.ledger.record(
            [
                self._entry(
                    self.messages[r.message_key], _status(r), r.reason, r.provider_message_id
                )
                for r in results
            ]
        )

    def _entry(
        self,
        message: OutboundMessage,
        status: LedgerStatus,
        reason: str | None = None,
        provider_message_id: str | None = None,
    ) -> LedgerEntry:
        return LedgerEntry(
            message_key=message.message_key,
            status=status,
            recipient=message.recipient,
            reason=reason,
            identity=message.identity,
            sending_domain=message.sending_domain,
            provider=self.provider.kind,
            provider_account=self.provider.account,
            provider_message_id=provider_message_id,
            batch_id=self.batch_ids.get(message.message_key),
            route=self.routes.get(message.message_key),
        )
