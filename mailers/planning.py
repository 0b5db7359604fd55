"""Dry runs: what a campaign window would do, without sending or recording anything.

The plan resolves the audience into a scratch table and assigns every message it would
send now to an account under today's caps (:class:`~mailers.assignment.Assigner`, on a
private copy of the day's usage, so the plan reserves nothing a real send would see).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date

from mailers.allowance import Allowance, UsageBook
from mailers.assignment import Assigned, Assigner, Deferred, Recipient
from mailers.audience import AudienceSpec, Disposition, disposition_counts, resolve
from mailers.caps import Cap, campaign_caps, mailbox_provider_of
from mailers.config import CampaignRef, Settings
from mailers.keys import draw
from mailers.ledger import LedgerContext, LedgerStatus, LedgerWriter, sql_text
from mailers.ledger_journal import journal_dir, recover_journals
from mailers.routing import Router
from mailers.warehouse import Warehouse
from mailers.warmup import curve_day
from mailers.warmup_starts import with_started_curves


@dataclass(frozen=True)
class CapStanding:
    """One cap on the day of the plan: its limit, what is used, what the plan would add."""

    scope: str
    source: str
    timezone: str
    day: date
    limit: int | None
    """``None``: the warm-up curve no longer limits (the owner is warm)."""
    used: int
    planned: int
    deferred: int
    days_to_full: int | None
    """For a warm-up curve: days until it reaches full volume; ``None`` for fixed caps."""


@dataclass
class SendPlan:
    """How many recipients a window would send, via which accounts, and who is skipped.

    ``counts`` holds the audience's disposition counts, except that settled messages whose
    latest ledger status is ``dispatching`` or ``unknown`` count as ``in_doubt`` (they may
    have gone out; a send leaves them alone) and those ``deferred`` to a later day as
    ``waiting_deferred``, not as ``already_settled``. ``to_send`` counts what is eligible
    now; of those, ``deferred_by_caps`` would be deferred today rather than sent.
    """

    campaign: str
    send_window: str
    counts: dict[str, int]
    by_account: Counter[str] = field(default_factory=Counter)
    caps: list[CapStanding] = field(default_factory=list)

    @property
    def to_send(self) -> int:
        return self.counts.get("to_send", 0)


def plan(warehouse: Warehouse, settings: Settings, campaign: CampaignRef, window: str) -> SendPlan:
    """Resolve the audience into a scratch table, assign it on paper; then drop it.

    Render failures are not predicted (templates run only when sending); everything else
    matches what a send of this window would decide now.
    """
    # A killed send's journaled rows count: what it left in flight is in doubt.
    recover_journals(warehouse, journal_dir(settings.data_dir))
    spec = AudienceSpec.of(campaign, window)
    ledger = LedgerWriter(warehouse, LedgerContext.of(campaign, window, run_id="plan"))
    table = resolve(warehouse, spec, ledger.settled_keys_sql(), purpose="plan")
    result = SendPlan(
        campaign=campaign.qualified_name,
        send_window=window,
        counts=disposition_counts(warehouse, table),
    )
    for name, statuses in (("in_doubt", IN_DOUBT), ("waiting_deferred", (LedgerStatus.DEFERRED,))):
        found = _settled_with(warehouse, table, ledger, statuses)
        if found:
            result.counts[name] = found
            result.counts["already_settled"] -= found
    if not result.counts.get("already_settled", 1):
        del result.counts["already_settled"]
    _assign_on_paper(warehouse, settings, campaign, table, ledger, result)
    warehouse.execute(f"drop table if exists {table}")
    return result


def _assign_on_paper(
    warehouse: Warehouse,
    settings: Settings,
    campaign: CampaignRef,
    table: str,
    ledger: LedgerWriter,
    result: SendPlan,
) -> None:
    workspace = settings.config.workspaces[campaign.workspace]
    router = Router(workspace.streams[campaign.config.stream].routing, workspace.mailbox_providers)
    domains = mailbox_provider_of(workspace.mailbox_providers)
    caps = with_started_curves(
        warehouse,
        campaign.workspace,
        campaign_caps(workspace, campaign, router.accounts),
        record=False,
    )
    allowance = Allowance(warehouse, UsageBook(campaign.workspace, domains), caps)
    before = {id(cap): used for cap, _, used, _ in allowance.standing()}
    assigner = Assigner(router, allowance, domains)
    identities = campaign.config.identities
    deferred_by: Counter[int] = Counter()
    rows = warehouse.stream(
        f"select mailers_message_key as k, mailers_recipient as r, "
        f"mailers_sticky_account as s from {table} "
        f"where mailers_disposition = '{Disposition.SEND}' "
        f"and mailers_message_key not in ({ledger.settled_keys_sql()})"
    )
    for batch in rows:
        for row in batch.to_pylist():
            # The same draw as the sender's, so the plan names the identity a send would use.
            name = draw(identities, row["k"], "identity")
            verdict = assigner.assign(
                Recipient(
                    message_key=row["k"],
                    address=row["r"],
                    stream=str(campaign.config.stream),
                    campaign=campaign.name,
                    identity=name,
                    sending_domain=workspace.identities[name].sending_domain,
                    sticky_account=row["s"],
                ),
                {},
            )
            if isinstance(verdict, Assigned):
                result.by_account[verdict.account] += 1
            elif isinstance(verdict, Deferred):
                deferred_by[id(verdict.refusal.cap)] += 1
    result.counts["deferred_by_caps"] = sum(deferred_by.values())
    for cap, day, used, limit in allowance.standing():
        result.caps.append(
            CapStanding(
                scope=str(cap.scope),
                source=cap.source,
                timezone=cap.timezone,
                day=day,
                limit=limit,
                used=before[id(cap)],
                planned=used - before[id(cap)],
                deferred=deferred_by[id(cap)],
                days_to_full=_days_to_full(cap, day),
            )
        )


def _days_to_full(cap: Cap, day: date) -> int | None:
    if cap.curve is None:
        return None
    return curve_day(cap.curve, day, cap.scope.mailbox_provider).days_to_full


IN_DOUBT = (LedgerStatus.DISPATCHING, LedgerStatus.UNKNOWN)
"""Latest statuses of a message that may or may not have reached the provider."""


def _settled_with(
    warehouse: Warehouse, audience: str, ledger: LedgerWriter, statuses: tuple[LedgerStatus, ...]
) -> int:
    """Settled audience rows whose latest ledger status is one of ``statuses``."""
    wanted = ", ".join(sql_text(status) for status in statuses)
    rows = warehouse.query(
        f"""
        select count(*) as n
        from {audience} as audience
        join ({ledger.latest_rows_sql()}) as latest
          on latest.message_key = audience.mailers_message_key
        where audience.mailers_disposition = '{Disposition.SETTLED}'
          and latest.status in ({wanted})
        """
    )
    return int(rows["n"][0].as_py())
