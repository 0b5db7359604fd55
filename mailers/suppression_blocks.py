"""Suppressions a running send must honour before they reach the warehouse.

A send holds the DuckDB warehouse for its whole run, so an operator's ``suppression add``
during it waits in the control journal (:mod:`mailers.control`). The sender asks
:class:`PendingBlocks` before every batch which of the batch's addresses those pending
records block. Pending removals unblock nothing during a run: a removal takes effect when it
is loaded, which is the safe side.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailers.addresses import normalize
from mailers.control import ControlJournal, ControlKind, ControlRecord
from mailers.suppression import SuppressionTarget, target_of


class PendingBlocks:
    """Which addresses the pending ``suppression add`` records of a journal block.

    Cheap to call before every batch: :meth:`ControlJournal.pending` reads only new files,
    and the index is rebuilt only when the set of pending records changes.
    """

    def __init__(self, journal: ControlJournal) -> None:
        self.journal = journal
        self._ids: tuple[str, ...] = ()
        self._index: dict[str, list[tuple[SuppressionTarget, ControlRecord]]] = {}

    def _refresh(self) -> dict[str, list[tuple[SuppressionTarget, ControlRecord]]]:
        records = [r for r in self.journal.pending() if r.kind is ControlKind.SUPPRESSION_ADD]
        ids = tuple(r.control_id for r in records)
        if ids != self._ids:
            index: dict[str, list[tuple[SuppressionTarget, ControlRecord]]] = {}
            for record in records:
                index.setdefault(record.body["address"], []).append((target_of(record), record))
            self._ids, self._index = ids, index
        return self._index

    def blocked(self, workspace: str, stream: str, addresses: Sequence[str]) -> set[str]:
        """The ``addresses`` (as given) a pending add blocks for mail of ``workspace`` on
        ``stream``; addresses are compared as the list stores them (trimmed, lower-cased)."""
        return set(self.reasons(workspace, stream, addresses))

    def reasons(self, workspace: str, stream: str, addresses: Sequence[str]) -> dict[str, str]:
        """:meth:`blocked` with why, as a :data:`mailers.send_control.Blocker`: each blocked
        address (as given) → ``suppressed at SCOPE by ACTOR (pending control record ID)``."""
        index = self._refresh()
        if not index:
            return {}
        found: dict[str, str] = {}
        for address in addresses:
            for target, record in index.get(normalize(address).lower(), ()):
                if target.covers(workspace, stream):
                    found[address] = (
                        f"suppressed at {target} by {record.actor} "
                        f"(pending control record {record.control_id})"
                    )
                    break
        return found
