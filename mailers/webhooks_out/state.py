"""What the webhooks-out tables say now: each answer derives from their latest rows.

    mark             the subscriber's latest ``webhook_marks`` row (events after it are new)
    due              deliveries never attempted, or whose latest attempt is ``retrying`` with
                     ``next_attempt_at`` at or before now (and not dead-lettered)
    open             the same without the time condition (what disabling closes)
    control          the latest enable/disable audit record of the subscriber
    failure streak   attempts failed since the last success (and since the last enable)

Every query is set-based and reads only one subscriber's rows within :data:`HORIZON` of
now, so its cost does not grow with the history. A delivery's last retry falls at most
``give_up_after`` (30 days at most) after its first attempt and is then dead-lettered;
the horizon leaves ample room past that for a runner that was down a while.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mailers.audit import AUDIT_TABLE, AuditAction
from mailers.warehouse import MAILERS_SCHEMA, Warehouse
from mailers.webhooks_out.tables import (
    ATTEMPTS_TABLE,
    DEAD_LETTERS_TABLE,
    MARKS_TABLE,
    MESSAGES_TABLE,
)

HORIZON = timedelta(days=60)
"""How far back the open deliveries are looked for (twice the longest ``give_up_after``)."""


def scope(subscriber: str) -> str:
    """The audit ``scope`` of a subscriber's enable and disable records."""
    return f"webhook_subscriber:{subscriber}"


@dataclass(frozen=True, slots=True)
class Mark:
    """The highest ``ingested_at`` a subscriber was sent (with that event's id), and since
    when ``webhook_sent_events`` tracks what it was sent (None: an older mark, untracked)."""

    ingested_at: datetime
    event_id: str
    tracked_from: datetime | None = None


@dataclass(frozen=True, slots=True)
class Control:
    """The latest enable or disable of a subscriber: whether it is disabled, and since when."""

    disabled: bool
    at: datetime | None
    actor: str | None = None
    reason: str | None = None


def _rel(warehouse: Warehouse, table: str) -> str:
    return warehouse.relation(MAILERS_SCHEMA, table)


def mark(warehouse: Warehouse, workspace: str, subscriber: str) -> Mark | None:
    """The subscriber's high-water mark, or None before its first delivery."""
    rows = warehouse.query(
        f"select ingested_at, event_id, tracked_from from {_rel(warehouse, MARKS_TABLE)} "
        "where workspace = ? and subscriber = ? "
        "order by recorded_at desc, ingested_at desc, event_id desc limit 1",
        [workspace, subscriber],
    ).to_pylist()
    if not rows:
        return None
    row = rows[0]
    return Mark(row["ingested_at"], row["event_id"], row["tracked_from"])


def control(warehouse: Warehouse, workspace: str, subscriber: str) -> Control:
    """The subscriber's latest enable or disable record (enabled when there is none)."""
    rows = warehouse.query(
        f"select action, recorded_at, actor, reason from {_rel(warehouse, AUDIT_TABLE)} "
        "where workspace = ? and scope = ? and action in (?, ?) order by seq desc limit 1",
        [
            workspace,
            scope(subscriber),
            str(AuditAction.WEBHOOK_DISABLE),
            str(AuditAction.WEBHOOK_ENABLE),
        ],
    ).to_pylist()
    if not rows:
        return Control(False, None)
    row = rows[0]
    disabled = row["action"] == str(AuditAction.WEBHOOK_DISABLE)
    return Control(disabled, row["recorded_at"], row["actor"], row["reason"])


def _deliveries_sql(warehouse: Warehouse, due: bool) -> str:
    when = "and (l.delivery_id is null or l.next_attempt_at <= ?)" if due else ""
    return f"""
        with latest as (
            select delivery_id, attempt, status, first_attempted_at, next_attempt_at,
                   row_number() over (partition by delivery_id order by attempt desc) as recency
            from {_rel(warehouse, ATTEMPTS_TABLE)}
            where workspace = ? and subscriber = ? and attempted_at >= ?
        )
        select m.delivery_id, m.webhook_id, m.event_ids, m.event_count, m.body, m.replay,
               m.created_at, coalesce(l.attempt, 0) as attempts, l.first_attempted_at,
               l.next_attempt_at
        from {_rel(warehouse, MESSAGES_TABLE)} as m
        left join latest as l on l.delivery_id = m.delivery_id and l.recency = 1
        where m.workspace = ? and m.subscriber = ? and m.created_at >= ?
          and (l.delivery_id is null or l.status = 'retrying')
          and not exists (
              select 1 from {_rel(warehouse, DEAD_LETTERS_TABLE)} as d
              where d.delivery_id = m.delivery_id and d.workspace = m.workspace
                and d.subscriber = m.subscriber and d.dead_at >= ?
          )
          {when}
        order by coalesce(l.next_attempt_at, m.created_at), m.delivery_id
        limit ?
    """


def due(
    warehouse: Warehouse, workspace: str, subscriber: str, now: datetime, limit: int
) -> pa.Table:
    """Deliveries to send now, soonest due first (at most ``limit``)."""
    since = now - HORIZON
    params: list[Any] = [workspace, subscriber, since, workspace, subscriber, since, since, now]
    return warehouse.query(_deliveries_sql(warehouse, due=True), [*params, limit])


def open_deliveries(
    warehouse: Warehouse, workspace: str, subscriber: str, now: datetime, limit: int = 10**9
) -> pa.Table:
    """Deliveries neither delivered nor dead-lettered, whenever due."""
    since = now - HORIZON
    params: list[Any] = [workspace, subscriber, since, workspace, subscriber, since, since]
    return warehouse.query(_deliveries_sql(warehouse, due=False), [*params, limit])


def failure_streak(
    warehouse: Warehouse, workspace: str, subscriber: str, since: datetime
) -> tuple[datetime | None, int]:
    """``(failing_since, failures)``: attempts failed after the last success at or after
    ``since`` (the start of the window judged), and when the first of them was made."""
    rows = warehouse.query(
        f"""
        with recent as (
            select status, attempted_at from {_rel(warehouse, ATTEMPTS_TABLE)}
            where workspace = ? and subscriber = ? and attempted_at >= ?
        ),
        ok as (select max(attempted_at) as last_ok from recent where status = 'delivered')
        select min(r.attempted_at) as failing_since, count(*) as failures
        from recent as r cross join ok
        where r.status <> 'delivered' and (ok.last_ok is null or r.attempted_at > ok.last_ok)
        """,
        [workspace, subscriber, since],
    ).to_pylist()
    return rows[0]["failing_since"], int(rows[0]["failures"])


def summary(warehouse: Warehouse, workspace: str, subscriber: str, now: datetime) -> dict[str, Any]:
    """What ``mailers webhooks status`` shows: pending retries, never-tried deliveries,
    dead letters and the last attempt (its error text holds no header or secret)."""
    since = now - HORIZON
    waiting = open_deliveries(warehouse, workspace, subscriber, now).column("attempts")
    attempts = pc.sum(pc.greater(waiting, 0)).as_py() or 0
    dead = warehouse.query(
        f"select count(*) as n from {_rel(warehouse, DEAD_LETTERS_TABLE)} "
        "where workspace = ? and subscriber = ? and dead_at >= ?",
        [workspace, subscriber, since],
    ).to_pylist()[0]["n"]
    last = warehouse.query(
        f"select attempted_at, status, response_code, error, latency_ms "
        f"from {_rel(warehouse, ATTEMPTS_TABLE)} "
        "where workspace = ? and subscriber = ? and attempted_at >= ? "
        "order by attempted_at desc, attempt desc limit 1",
        [workspace, subscriber, since],
    ).to_pylist()
    return {
        "pending_retries": int(attempts),
        "not_yet_sent": len(waiting) - int(attempts),
        "dead_letters": int(dead),
        "last_attempt": last[0] if last else None,
    }
