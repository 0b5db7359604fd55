"""What a running send asks before every batch and every provider call: may this still go?

Three things can stop messages of a send that is already running, each written by another
process while the send holds the warehouse:

* a pause (:mod:`mailers.pauses`) of the workspace, stream or campaign stops the whole
  send: the rest of the window is recorded ``paused``; a pause of an identity or a
  provider account holds only that identity's or account's messages;
* checks run before each batch, such as the automatic pause rules evaluated on the
  feedback landed so far (they may pause a scope, which the same batch then sees);
* blockers: suppressions that arrived during the send (a manual ``suppression add``, a
  bounce, complaint or unsubscribe landed but not loaded yet); a blocked recipient is
  recorded ``skipped`` (suppressed) instead of being handed over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from mailers.pauses import RUN_LEVELS, Pause, PauseBoard

BatchCheck = Callable[[], object]
"""Run before each batch (its result is ignored); may pause scopes on the board."""

Blocker = Callable[[str, str, Sequence[str]], Mapping[str, str]]
"""(workspace, stream, addresses) → the addresses that must not be mailed now, with why."""


@dataclass(frozen=True)
class SendControl:
    """The pause board and the late checks of one campaign window's send."""

    board: PauseBoard
    workspace: str
    stream: str
    campaign: str
    checks: Sequence[BatchCheck] = ()
    blockers: Sequence[Blocker] = ()

    def before_batch(self) -> Pause | None:
        """Run the checks, then return the pause that holds the whole window, if any."""
        for check in self.checks:
            check()
        return self.board.holding(self.workspace, self.stream, self.campaign, levels=RUN_LEVELS)

    def holding(self, account: str, identity: str) -> Pause | None:
        """The pause holding messages of ``identity`` through ``account`` now, if any."""
        return self.board.holding(self.workspace, self.stream, self.campaign, identity, account)

    def blocked(self, addresses: Sequence[str]) -> dict[str, str]:
        """Which of ``addresses`` a blocker refuses now, and why."""
        found: dict[str, str] = {}
        for blocker in self.blockers:
            found.update(blocker(self.workspace, self.stream, addresses))
        return found
