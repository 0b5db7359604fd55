"""Dry runs: what a campaign window would do, without sending or recording anything."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from mailers.audience import AudienceSpec, Disposition, disposition_counts, resolve
from mailers.config import CampaignRef, Settings
from mailers.ledger import LedgerContext, LedgerStatus, LedgerWriter
from mailers.routing import Router
from mailers.warehouse import Warehouse


@dataclass
class SendPlan:
    """How many recipients a window would send, via which accounts, and who is skipped.

    ``counts`` holds the audience's disposition counts, except that settled messages whose
    latest ledger status is ``dispatching`` or ``unknown`` count as ``in_doubt`` (they may
    have gone out; a send leaves them alone), not as ``already_settled``.
    """

    campaign: str
    send_window: str
    counts: dict[str, int]
    by_account: Counter[str] = field(default_factory=Counter)

    @property
    def to_send(self) -> int:
        return self.counts.get("to_send", 0)


def plan(warehouse: Warehouse, settings: Settings, campaign: CampaignRef, window: str) -> SendPlan:
    """Resolve the audience into a scratch table and route it on paper; then drop it.

    Render failures are not predicted (templates run only when sending); everything else
    matches what a send of this window would decide now.
    """
    spec = AudienceSpec.of(campaign, window)
    ledger = LedgerWriter(warehouse, LedgerContext.of(campaign, window, run_id="plan"))
    table = resolve(warehouse, spec, ledger.settled_keys_sql(), purpose="plan")
    result = SendPlan(
        campaign=campaign.qualified_name,
        send_window=window,
        counts=disposition_counts(warehouse, table),
    )
    in_doubt = _in_doubt(warehouse, table, ledger)
    if in_doubt:
        result.counts["in_doubt"] = in_doubt
        result.counts["already_settled"] -= in_doubt
        if not result.counts["already_settled"]:
            del result.counts["already_settled"]
    workspace = settings.config.workspaces[campaign.workspace]
    router = Router(workspace.streams[campaign.config.stream].routing)
    keys = warehouse.stream(
        f"select mailers_message_key as k from {table} "
        f"where mailers_disposition = '{Disposition.SEND}' "
        f"and mailers_message_key not in ({ledger.settled_keys_sql()})"
    )
    for batch in keys:
        result.by_account.update(router.chain(k)[0] for k in batch.column("k").to_pylist())
    warehouse.execute(f"drop table if exists {table}")
    return result


IN_DOUBT = (LedgerStatus.DISPATCHING, LedgerStatus.UNKNOWN)
"""Latest statuses of a message that may or may not have reached the provider."""


def _in_doubt(warehouse: Warehouse, audience: str, ledger: LedgerWriter) -> int:
    """Settled audience rows whose latest ledger status leaves the outcome open."""
    statuses = ", ".join(f"'{status}'" for status in IN_DOUBT)
    rows = warehouse.query(
        f"""
        select count(*) as n
        from {audience} as audience
        join ({ledger.latest_rows_sql()}) as latest
          on latest.message_key = audience.mailers_message_key
        where audience.mailers_disposition = '{Disposition.SETTLED}'
          and latest.status in ({statuses})
        """
    )
    return int(rows["n"][0].as_py())
