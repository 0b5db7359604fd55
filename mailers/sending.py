"""Sending one campaign window: audience rows in, ledger rows and provider calls out.

The flow, for each run:

1. settle messages an earlier run left ``dispatching`` as ``unknown`` (never re-sent);
2. record the audience's ``skip`` rows as ``skipped`` (one set-based insert);
3. stream the ``send`` rows as Arrow record batches; render each message (a failure is
   recorded for that recipient alone), pick its identity and provider account;
4. per provider batch: append ``dispatching`` rows, call the provider, append the outcome.
   An account that is unavailable is marked down for the rest of the run and its messages
   fail over along the routing chain; an ambiguous outcome is recorded ``unknown`` and
   never retried.

Memory holds one record batch at a time, whatever the audience size.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailers.audience import Disposition
from mailers.config import CampaignRef, IdentityConfig, Settings, StreamKind
from mailers.errors import ProviderOutcomeUnknown, ProviderUnavailable
from mailers.keys import bucket
from mailers.ledger import LedgerContext, LedgerEntry, LedgerStatus, LedgerWriter, SkipReason
from mailers.messages import MESSAGE_KEY_HEADER, OutboundMessage, SendOutcome, SendResult
from mailers.providers import Provider
from mailers.rendering import CampaignTemplate, RenderFailure
from mailers.routing import Router
from mailers.unsubscribe import LIST_UNSUBSCRIBE_POST, UnsubscribeClaim, unsubscribe_url
from mailers.warehouse import Warehouse

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
    ) -> None:
        self.warehouse = warehouse
        self.context = context
        self.providers = providers
        self.progress = progress
        cfg = context.settings.config
        workspace = cfg.workspaces[context.campaign.workspace]
        self.identities: dict[str, IdentityConfig] = {
            name: workspace.identities[name] for name in context.campaign.config.identities
        }
        self.router = Router(workspace.streams[context.stream].routing)
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

    def run(self, audience: str) -> SendReport:
        """Send the ``send`` rows of a resolved audience table; return what happened."""
        counts = self.report.counts
        counts["reconciled_unknown"] += self.ledger.settle_in_doubt()
        counts["skipped_recorded"] += self.ledger.record_skips(audience)
        # The ledger is consulted again here, not only when the audience was resolved: a
        # stale audience table must never lead to a second send.
        query = (
            f"select * from {audience} where mailers_disposition = '{Disposition.SEND}' "
            f"and mailers_message_key not in ({self.ledger.settled_keys_sql()}) "
            f"order by mailers_message_key"
        )
        for batch in self.warehouse.stream(query, batch_rows=AUDIENCE_BATCH_ROWS):
            self._send_rows(batch.to_pylist())
            if self.progress:
                self.progress(batch.num_rows)
        self.report.down_accounts = dict(self.down)
        return self.report

    def _send_rows(self, rows: list[dict[str, Any]]) -> None:
        failures: list[LedgerEntry] = []
        by_account: dict[str, list[OutboundMessage]] = defaultdict(list)
        for row in rows:
            message = self._render(row)
            if isinstance(message, LedgerEntry):
                failures.append(message)
            else:
                by_account[self._route(message.message_key)].append(message)
        self.ledger.record(failures)
        settled = sum(f.status is LedgerStatus.SKIPPED for f in failures)
        self.report.counts["render_failed"] += len(failures) - settled
        self.report.counts[f"skipped_{SkipReason.TEMPLATE_VARIABLE_MISSING}"] += settled
        for account, messages in by_account.items():
            self._dispatch(account, messages)

    def _route(self, message_key: str) -> str:
        return self.router.route(message_key, self.down) or self.router.chain(message_key)[0]

    def _identity(self, message_key: str) -> tuple[str, IdentityConfig]:
        names = list(self.identities)
        name = names[int(bucket(message_key, "identity") * len(names))]
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
            url = unsubscribe_url(
                ctx.settings.config.unsubscribe.base_url, claim, ctx.unsubscribe_key
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
        for start in range(0, len(messages), size):
            chunk = messages[start : start + size]
            if account in self.down:
                self._fail_over(chunk, already_recorded=False)
            else:
                self._send_chunk(provider, chunk)

    def _send_chunk(self, provider: Provider, chunk: Sequence[OutboundMessage]) -> None:
        batch_id = uuid.uuid4().hex
        entry = _entry_factory(provider, batch_id)
        self.ledger.record([entry(m, LedgerStatus.DISPATCHING) for m in chunk])
        try:
            results = provider.send_batch(chunk)
        except ProviderUnavailable as err:
            self.down[provider.account] = err.detail
            self.ledger.record([entry(m, LedgerStatus.NOT_SENT, str(err)) for m in chunk])
            self._fail_over(chunk, already_recorded=True)
            return
        except ProviderOutcomeUnknown as err:
            self.ledger.record([entry(m, LedgerStatus.UNKNOWN, str(err)) for m in chunk])
            self.report.counts["unknown"] += len(chunk)
            return
        by_key = {m.message_key: m for m in chunk}
        answered = {r.message_key for r in results}
        outcomes = [
            entry(by_key[r.message_key], _status(r), r.reason, r.provider_message_id)
            for r in results
            if r.message_key in by_key
        ]
        # A provider that silently drops a message from its answer leaves it in doubt.
        outcomes += [
            entry(m, LedgerStatus.UNKNOWN, "provider answered without this message")
            for key, m in by_key.items()
            if key not in answered
        ]
        self.ledger.record(outcomes)
        tally = Counter(str(o.status) for o in outcomes)
        self.report.counts.update(tally)
        self.report.accounts[provider.account] += tally[LedgerStatus.ACCEPTED]

    def _fail_over(self, chunk: Iterable[OutboundMessage], *, already_recorded: bool) -> None:
        """Send ``chunk`` through the next accounts up; record those no account can take."""
        regrouped: dict[str, list[OutboundMessage]] = defaultdict(list)
        stranded: list[OutboundMessage] = []
        for message in chunk:
            account = self.router.route(message.message_key, self.down)
            if account is None:
                stranded.append(message)
            else:
                regrouped[account].append(message)
        if stranded and not already_recorded:
            reason = "no provider account available: " + "; ".join(
                f"{name}: {why}" for name, why in self.down.items()
            )
            self.ledger.record(
                [
                    LedgerEntry(
                        message_key=m.message_key,
                        status=LedgerStatus.NOT_SENT,
                        recipient=m.recipient,
                        reason=reason,
                        identity=m.identity,
                        sending_domain=m.sending_domain,
                    )
                    for m in stranded
                ]
            )
        # Stranded messages were never handed over: a later run of this window retries them.
        self.report.counts["not_sent"] += len(stranded)
        for account, messages in regrouped.items():
            self._dispatch(account, messages)


def _status(result: SendResult) -> LedgerStatus:
    if result.accepted:
        return LedgerStatus.ACCEPTED
    return _UNANSWERED.get(result.outcome, LedgerStatus.REJECTED)


_UNANSWERED = {
    SendOutcome.NOT_SENT: LedgerStatus.NOT_SENT,
    SendOutcome.UNKNOWN: LedgerStatus.UNKNOWN,
}


def _entry_factory(provider: Provider, batch_id: str) -> Callable[..., LedgerEntry]:
    def entry(
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
            provider=provider.kind,
            provider_account=provider.account,
            provider_message_id=provider_message_id,
            batch_id=batch_id,
        )

    return entry
