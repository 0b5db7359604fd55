"""Which send windows hold deferred messages, and when the first of them becomes eligible.

The ledger is the record (``deferred`` rows with ``eligible_at``). After each send, the
window's earliest ``eligible_at`` is also written as a small note in the data directory
(``<data_dir>/deferred/<workspace>__<campaign>__<window>.json``, replaced atomically,
removed when nothing is deferred), so a Dagster sensor can launch the run that sends them
without opening the warehouse, which a running send holds (DuckDB has one writer).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mailers.ledger import LedgerStatus, LedgerWriter, sql_text
from mailers.warehouse import Warehouse
from mailers.window_notes import WindowNotes


@dataclass(frozen=True)
class DeferredWindow:
    """A campaign window with deferred messages; ``eligible_at`` is naive UTC."""

    workspace: str
    campaign: str
    send_window: str
    eligible_at: datetime
    messages: int

    @property
    def qualified_campaign(self) -> str:
        return f"{self.workspace}.{self.campaign}"


def deferred_in_window(warehouse: Warehouse, ledger: LedgerWriter) -> DeferredWindow | None:
    """The window of ``ledger`` if any message's latest status is ``deferred``."""
    rows = warehouse.query(
        f"select min(eligible_at) as eligible_at, count(*) as n "
        f"from ({ledger.latest_rows_sql()}) as latest "
        f"where status = {sql_text(LedgerStatus.DEFERRED)}"
    ).to_pylist()
    if not rows or not rows[0]["n"]:
        return None
    ctx = ledger.context
    return DeferredWindow(
        ctx.workspace, ctx.campaign, ctx.send_window, rows[0]["eligible_at"], int(rows[0]["n"])
    )


class DeferralNotes:
    """The notes of windows holding deferred messages, under ``<data_dir>/deferred``."""

    def __init__(self, data_dir: Path) -> None:
        self.notes = WindowNotes(data_dir / "deferred")

    def update(
        self, workspace: str, campaign: str, window: str, deferred: DeferredWindow | None
    ) -> None:
        """Write the window's note, or remove it when nothing of it is deferred."""
        note = None
        if deferred is not None:
            note = {
                "workspace": workspace,
                "campaign": campaign,
                "send_window": window,
                "eligible_at": deferred.eligible_at.isoformat(),
                "messages": deferred.messages,
            }
        self.notes.write(workspace, campaign, window, note)

    def all(self) -> list[DeferredWindow]:
        """Every note, earliest eligible first; unreadable notes are skipped (rewritten by
        the next send of their window)."""
        found = self.notes.read(
            lambda note: DeferredWindow(
                note["workspace"],
                note["campaign"],
                note["send_window"],
                datetime.fromisoformat(note["eligible_at"]),
                int(note["messages"]),
            )
        )
        return sorted(found, key=lambda d: d.eligible_at)

    def due(self, now: datetime) -> list[DeferredWindow]:
        """Notes whose first deferred message is eligible at ``now`` (naive UTC)."""
        return [d for d in self.all() if d.eligible_at <= now]
