"""Suppressing feedback that landed during a send: blocked before the next batch leaves.

A send holds the warehouse, so the hard bounces, complaints and unsubscribes that land
while it runs are not loaded into ``mailers.suppressions`` until it ends. Yet an address
that bounced, complained or unsubscribed must not be mailed again once its event has
landed: :class:`LandedSuppressions`, asked before every batch (a
:data:`~mailers.send_control.Blocker`), reads the events :class:`LandedFeedback` found in
the landing zone, ties each to its message's workspace, stream and recipient as ingestion
does (:func:`~mailers.ledger.attributed_events_sql`) and blocks its address for the scope
that ingestion's suppression would have (:data:`~mailers.suppression.SUPPRESSING_EVENTS`).
Only events new since the last call are tied, in one query.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailers.addresses import normalize
from mailers.feedback import LandedFeedback
from mailers.ledger import attributed_events_sql
from mailers.suppression import SUPPRESSING_EVENTS, SuppressionScope, SuppressionTarget
from mailers.warehouse import Warehouse


class LandedSuppressions:
    """Addresses the feedback landed during this send suppresses, and why."""

    def __init__(self, warehouse: Warehouse, feedback: LandedFeedback) -> None:
        self.warehouse = warehouse
        self.feedback = feedback
        self._tied = 0
        self._index: dict[str, list[tuple[SuppressionTarget, str]]] = {}

    def _refresh(self) -> dict[str, list[tuple[SuppressionTarget, str]]]:
        self.feedback.poll()
        table = self.feedback.table
        if table.num_rows == self._tied:
            return self._index
        new = table.slice(self._tied)
        self._tied = table.num_rows
        with self.warehouse.staged(new) as staged:
            rows = self.warehouse.query(
                "select event_id, event_type, bounce_class, recipient, workspace, stream, "
                f"provider_account from ({attributed_events_sql(self.warehouse, staged)}) as a "
                "where recipient is not null"
            ).to_pylist()
        for row in rows:
            rule = SUPPRESSING_EVENTS.get((row["event_type"], row["bounce_class"])) or (
                SUPPRESSING_EVENTS.get((row["event_type"], None))
            )
            if rule is None:
                continue
            source, scope = rule
            target = SuppressionTarget(
                scope,
                None if scope is SuppressionScope.GLOBAL else row["workspace"],
                row["stream"] if scope is SuppressionScope.STREAM else None,
            )
            why = (
                f"{source} landed during this send (event {row['event_id']} from "
                f"{row['provider_account']}), suppressed at {target}"
            )
            self._index.setdefault(normalize(row["recipient"]).lower(), []).append((target, why))
        return self._index

    def reasons(self, workspace: str, stream: str, addresses: Sequence[str]) -> dict[str, str]:
        """Each of ``addresses`` (as given) landed feedback suppresses for mail of
        ``workspace`` on ``stream``, with why."""
        index = self._refresh()
        if not index:
            return {}
        found: dict[str, str] = {}
        for address in addresses:
            for target, why in index.get(normalize(address).lower(), ()):
                if target.covers(workspace, stream):
                    found[address] = why
                    break
        return found
