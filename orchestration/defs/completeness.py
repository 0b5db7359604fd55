"""The ``overdue_feedback`` asset check on ``marts/fct_message_completeness``.

Fails (WARN) when a message accepted (or in doubt) has no final event past the
configured deadline, and lists the overdue messages per provider account and day. WARN,
not ERROR: the sends themselves succeeded and nothing downstream is wrong to run; missing
feedback means deliverability figures and suppressions lag behind, which the poller's
backfill or a replay of the receiver's landing zone fixes, not a stopped pipeline.
"""

from __future__ import annotations

import dagster as dg

from mailers.completeness import MART, MART_SCHEMA, Completeness, read_completeness
from orchestration.defs.resources import WAREHOUSE_POOL, MailersResource

COMPLETENESS_KEY = dg.AssetKey([MART_SCHEMA, MART])
OVERDUE_FEEDBACK = "overdue_feedback"

_SHOWN = 20
"""Overdue account-days listed in the check's metadata."""


def overdue_feedback_result(completeness: Completeness) -> dg.AssetCheckResult:
    """Passed when no message is overdue; else failed (WARN), naming the account-days."""
    overdue = completeness.overdue_count
    listed = {
        f"overdue_{day.provider_account}_{day.day:%Y-%m-%d}": day.overdue
        for day in completeness.overdue[:_SHOWN]
    }
    return dg.AssetCheckResult(
        asset_key=COMPLETENESS_KEY,
        check_name=OVERDUE_FEEDBACK,
        passed=overdue == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=completeness.describe(),
        metadata={
            "messages": completeness.messages,
            "with_final_event": completeness.with_final_event,
            "settled_unknown": completeness.settled_unknown,
            "pending": completeness.pending,
            "overdue": overdue,
            **listed,
        },
    )


@dg.asset_check(
    asset=COMPLETENESS_KEY,
    name=OVERDUE_FEEDBACK,
    description="Every accepted (or unknown) message has a final event within the deadline.",
    pool=WAREHOUSE_POOL,
)
def overdue_feedback(mailers: MailersResource) -> dg.AssetCheckResult:
    settings = mailers.settings()
    with mailers.warehouse(settings) as warehouse:
        return overdue_feedback_result(read_completeness(warehouse))
