"""What the ledger says about one campaign window now: each message's latest status, and why.

One set-based query over the ledger groups the window's messages by latest status (and, for
the statuses that need explaining, by reason and provider account), marking those whose
latest row a given run wrote. The verdict of a send run and the checks on a campaign's sends
are read from it, so they describe what was recorded, whatever a run's own tallies said.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from mailers.ledger import LedgerStatus, LedgerWriter, SkipReason
from mailers.rendering import undefined_variable

EXPLAINED_STATUSES = frozenset(
    {
        LedgerStatus.SKIPPED,
        LedgerStatus.RENDER_FAILED,
        LedgerStatus.NOT_SENT,
        LedgerStatus.UNKNOWN,
        LedgerStatus.DEFERRED,
        LedgerStatus.PAUSED,
    }
)
"""Statuses whose reasons are kept apart; the others are counted only."""


@dataclass(frozen=True, slots=True)
class Tally:
    """Messages of the window sharing a latest status, reason, account and run."""

    status: str
    reason: str | None
    provider_account: str | None
    this_run: bool
    messages: int


@dataclass(frozen=True)
class WindowOutcome:
    """The latest status of every message of one campaign window."""

    tallies: tuple[Tally, ...]

    def count(self, *statuses: str, this_run: bool = False) -> int:
        """Messages whose latest status is one of ``statuses`` (left by this run only)."""
        return sum(
            t.messages
            for t in self.tallies
            if t.status in statuses and (t.this_run or not this_run)
        )

    @property
    def total(self) -> int:
        return sum(t.messages for t in self.tallies)

    def by_status(self) -> dict[str, int]:
        """Messages per latest status."""
        counts: Counter[str] = Counter()
        for t in self.tallies:
            counts[t.status] += t.messages
        return dict(counts)

    def reasons(self, status: str, *, this_run: bool = False) -> Counter[str]:
        """Messages per reason (naming the provider account, when there is one)."""
        counts: Counter[str] = Counter()
        for t in self.tallies:
            if t.status == status and (t.this_run or not this_run):
                reason = t.reason or "no reason recorded"
                if t.provider_account and t.provider_account not in reason:
                    reason = f"{t.provider_account}: {reason}"
                counts[reason] += t.messages
        return counts

    def skip_reasons(self) -> Counter[str]:
        """Skipped messages per skip reason (the reason's leading word)."""
        counts: Counter[str] = Counter()
        for t in self.tallies:
            if t.status == LedgerStatus.SKIPPED:
                counts[(t.reason or "unknown").split(":", 1)[0]] += t.messages
        return counts

    def render_failures(self) -> RenderFailures:
        """Messages the template failed for: retryable (data) and settled (variable missing)."""
        retryable: Counter[str] = Counter()
        settled: Counter[str] = Counter()
        for t in self.tallies:
            reason = t.reason or ""
            if t.status == LedgerStatus.RENDER_FAILED:
                retryable[undefined_variable(reason) or reason] += t.messages
            elif t.status == LedgerStatus.SKIPPED and reason.startswith(
                SkipReason.TEMPLATE_VARIABLE_MISSING
            ):
                settled[undefined_variable(reason) or reason] += t.messages
        return RenderFailures(retryable=retryable, settled=settled)


@dataclass(frozen=True)
class RenderFailures:
    """Render failures of a window by variable (or by reason, when no variable is named)."""

    retryable: Counter[str]
    """``render_failed``: a value was NULL or a filter failed on it; retried by later runs."""
    settled: Counter[str]
    """Skipped as ``template_variable_missing``: the segment has no such column."""

    @property
    def messages(self) -> int:
        return sum(self.retryable.values()) + sum(self.settled.values())


def window_outcome(ledger: LedgerWriter) -> WindowOutcome:
    """The outcome of the ledger's campaign window; ``this_run`` marks its run's rows."""
    explained = ", ".join(_literal(s) for s in sorted(EXPLAINED_STATUSES))
    in_doubt = ", ".join(_literal(s) for s in (LedgerStatus.NOT_SENT, LedgerStatus.UNKNOWN))
    rows = ledger.warehouse.query(
        f"""
        select status,
            case when status in ({explained}) then reason end as reason,
            case when status in ({in_doubt}) then provider_account end as provider_account,
            run_id = {_literal(ledger.context.run_id)} as this_run,
            count(*) as messages
        from ({ledger.latest_rows_sql()}) as latest
        group by 1, 2, 3, 4
        order by messages desc
        """
    ).to_pylist()
    return WindowOutcome(tuple(Tally(**row) for row in rows))


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
