"""Which send windows hold messages a pause stopped, so they are sent once it is lifted.

The ledger is the record (``paused`` rows). After each send, a window with paused
messages also gets a small note in the data directory
(``<data_dir>/paused/<workspace>__<campaign>__<window>.json``, replaced atomically, removed
when nothing of the window is paused any more) naming the pauses that held them, so a
Dagster sensor can launch the send that finishes the window as soon as every one of those
pauses is resumed, without opening the warehouse a running send holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mailers.clock import utcnow
from mailers.pauses import PauseBoard
from mailers.window_notes import WindowNotes


@dataclass(frozen=True)
class PausedWindow:
    """A campaign window with paused messages, and the pauses (scope keys) that held them."""

    workspace: str
    campaign: str
    send_window: str
    messages: int
    scopes: tuple[str, ...]
    noted_at: datetime

    @property
    def qualified_campaign(self) -> str:
        return f"{self.workspace}.{self.campaign}"


class PausedNotes:
    """The notes of windows holding paused messages, under ``<data_dir>/paused``."""

    def __init__(self, data_dir: Path) -> None:
        self.notes = WindowNotes(data_dir / "paused")

    def update(
        self, workspace: str, campaign: str, window: str, messages: int, scopes: Iterable[str]
    ) -> None:
        """Write the window's note, or remove it when no message of it is paused."""
        note = None
        if messages:
            note = {
                "workspace": workspace,
                "campaign": campaign,
                "send_window": window,
                "messages": messages,
                "scopes": sorted(set(scopes)),
                "noted_at": utcnow().isoformat(),
            }
        self.notes.write(workspace, campaign, window, note)

    def all(self) -> list[PausedWindow]:
        """Every note, oldest first; unreadable ones are skipped (the next send of their
        window rewrites them)."""
        found = self.notes.read(
            lambda note: PausedWindow(
                note["workspace"],
                note["campaign"],
                note["send_window"],
                int(note["messages"]),
                tuple(note["scopes"]),
                datetime.fromisoformat(note["noted_at"]),
            )
        )
        return sorted(found, key=lambda w: w.noted_at)

    def resumable(self, board: PauseBoard) -> list[PausedWindow]:
        """Windows none of whose holding pauses is still active."""
        active = board.active()
        return [w for w in self.all() if not any(scope in active for scope in w.scopes)]
