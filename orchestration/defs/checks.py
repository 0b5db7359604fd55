"""Asset checks on Mailers' own assets, evaluated in the step that materializes them.

On each campaign's sends, from the window's ledger (:mod:`mailers.outcomes`), so they
describe the window as recorded, earlier runs included:

* ``not_sent`` (ERROR): a message's latest status is ``not_sent``; a re-run of the window
  retries it.
* ``unknown`` (ERROR): a message is in doubt; never re-sent blindly, it waits for
  reconciliation or provider events.
* ``render_failed`` (WARN; ERROR when nothing in the window rendered): the template failed
  for a recipient, retryably (a NULL value) or for good (a variable the segment does not
  have, settled as skipped ``template_variable_missing``); names the variables.
* ``skipped_by_reason`` (WARN): counts skipped recipients per reason in its metadata, and
  fails only when every message of the window was skipped (nothing could be sent: usually a
  broken segment or suppression import, not a normal week).

On provider events: ``poll_errors`` fails (ERROR) when polling an account's events API
failed; the other accounts were still polled and landed files still ingested.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import dagster as dg

from mailers.ledger import LedgerStatus
from mailers.outcomes import WindowOutcome
from mailers.pauses import Pause

NOT_SENT = "not_sent"
UNKNOWN = "unknown"
RENDER_FAILED = "render_failed"
SKIPPED = "skipped_by_reason"
POLL_ERRORS = "poll_errors"

_SHOWN = 10
"""Distinct reasons listed in a check's metadata, most frequent first."""

_RENDERED = (
    LedgerStatus.DISPATCHING,
    LedgerStatus.ACCEPTED,
    LedgerStatus.REJECTED,
    LedgerStatus.NOT_SENT,
    LedgerStatus.UNKNOWN,
    LedgerStatus.DEFERRED,
)
"""Latest statuses only a message that rendered can have."""


def sends_check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    """The checks of one campaign's sends asset."""
    return [
        dg.AssetCheckSpec(
            NOT_SENT, asset=key, description="No message of the window is left not sent."
        ),
        dg.AssetCheckSpec(
            UNKNOWN, asset=key, description="No message of the window is in doubt (unknown)."
        ),
        dg.AssetCheckSpec(
            RENDER_FAILED,
            asset=key,
            description="The template rendered for every recipient (names failing variables).",
        ),
        dg.AssetCheckSpec(
            SKIPPED,
            asset=key,
            description="Skipped recipients by reason; fails when every recipient was skipped.",
        ),
    ]


def sends_check_results(key: dg.AssetKey, outcome: WindowOutcome) -> list[dg.AssetCheckResult]:
    """Evaluate the sends checks on a window's outcome."""
    return [
        _in_doubt_result(key, outcome, NOT_SENT, "re-run the window to retry them"),
        _in_doubt_result(
            key,
            outcome,
            UNKNOWN,
            "never re-sent blindly; reconciliation or provider events settle them",
        ),
        _render_result(key, outcome),
        _skipped_result(key, outcome),
    ]


def unfinished_failure(
    outcome: WindowOutcome,
    qualified: str,
    window: str,
    metadata: Mapping[str, str | int | bool],
    pauses: Mapping[str, Pause],
) -> dg.Failure | None:
    """The failure of a send run that left messages ``not_sent`` or ``paused`` (None when
    it left neither): a run that leaves work undone is not green."""
    parts = []
    left = outcome.count(LedgerStatus.NOT_SENT, this_run=True)
    if left:
        why = _summary(outcome.reasons(LedgerStatus.NOT_SENT, this_run=True))
        parts.append(
            f"{left} messages of {qualified} (window {window}) were not sent: {why}. Nothing "
            f"was handed over for them; re-run window {window} (run tag "
            f"mailers/send_window={window}) to retry them; nothing already accepted is sent "
            "again."
        )
    paused = outcome.count(LedgerStatus.PAUSED, this_run=True)
    if paused:
        held = "; ".join(p.describe() for _, p in sorted(pauses.items())) or "a pause"
        resume = " or ".join(f"`mailers resume {key} --reason ...`" for key in sorted(pauses))
        parts.append(
            f"{paused} messages of {qualified} (window {window}) are paused, not handed over: "
            f"{held}. Once resumed ({resume or 'mailers resume'}), the paused_resumed sensor "
            f"(or a re-run of window {window}) sends them; nothing already accepted is sent "
            "again."
        )
    if not parts:
        return None
    return dg.Failure(description=" ".join(parts), metadata=dict(metadata))


def provider_events_check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            POLL_ERRORS,
            asset=key,
            description="Every account with poll_events was polled without error.",
        )
    ]


def poll_errors_result(key: dg.AssetKey, errors: Mapping[str, str]) -> dg.AssetCheckResult:
    """Failed (ERROR) when any account's events API could not be polled."""
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=POLL_ERRORS,
        passed=not errors,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"polling failed for {', '.join(sorted(errors))}" if errors else "all accounts polled"
        ),
        metadata={"poll_errors": len(errors), **{f"error_{k}": v for k, v in errors.items()}},
    )


def _in_doubt_result(
    key: dg.AssetKey, outcome: WindowOutcome, status: str, what_next: str
) -> dg.AssetCheckResult:
    count = outcome.count(status)
    reasons = outcome.reasons(status)
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=status,
        passed=count == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{count} messages {status}: {_summary(reasons)}; {what_next}"
        if count
        else f"no message {status}",
        metadata={"messages": count, "reasons": _summary(reasons) or "-"},
    )


def _render_result(key: dg.AssetKey, outcome: WindowOutcome) -> dg.AssetCheckResult:
    failures = outcome.render_failures()
    rendered = outcome.count(*_RENDERED)
    variables = failures.retryable + failures.settled
    parts = []
    if failures.settled:
        parts.append(
            f"{sum(failures.settled.values())} skipped for good, the segment has no "
            f"{_names(failures.settled)}"
        )
    if failures.retryable:
        parts.append(
            f"{sum(failures.retryable.values())} retried by later runs, failing on "
            f"{_names(failures.retryable)}"
        )
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=RENDER_FAILED,
        passed=failures.messages == 0,
        # A template that renders for nobody is broken, not unlucky with some rows' data.
        severity=dg.AssetCheckSeverity.ERROR
        if failures.messages and not rendered
        else dg.AssetCheckSeverity.WARN,
        description="; ".join(parts) or "the template rendered for every recipient",
        metadata={
            "render_failed": sum(failures.retryable.values()),
            "template_variable_missing": sum(failures.settled.values()),
            "rendered": rendered,
            "variables": ", ".join(sorted(variables)) or "-",
        },
    )


def _skipped_result(key: dg.AssetKey, outcome: WindowOutcome) -> dg.AssetCheckResult:
    reasons = outcome.skip_reasons()
    skipped = sum(reasons.values())
    everyone = outcome.total > 0 and skipped == outcome.total
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=SKIPPED,
        passed=not everyone,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"every one of the window's {skipped} recipients was skipped: {_summary(reasons)}"
            if everyone
            else f"{skipped} of {outcome.total} recipients skipped"
        ),
        metadata={"skipped": skipped, "messages": outcome.total, **dict(reasons)},
    )


def _summary(counts: Counter[str]) -> str:
    shown = [f"{n} {reason}" for reason, n in counts.most_common(_SHOWN)]
    rest = len(counts) - _SHOWN
    return "; ".join(shown) + (f"; and {rest} other reasons" if rest > 0 else "")


def _names(counts: Counter[str]) -> str:
    return ", ".join(f"{name!r} ({n})" for name, n in counts.most_common(_SHOWN))
