"""The delivery run: canonical events from ``mailers.events`` to each webhook subscriber.

For each enabled subscriber, in order::

    1. read   events it was not sent, ingested after its mark less
              :data:`LATE_COMMIT_WINDOW` (set-based SQL: its workspace, event types,
              streams; at most ``max_events_per_run``), in (ingested_at, event_id) order
    2. record the messages they make (``batch_size`` events each) and the new mark, in one
              transaction: a message is stored before it is ever sent, so every retry sends
              the same bytes under the same ``webhook-id``
    3. send   every due delivery (never tried, or a retry whose time has come), signed at
              send time; each attempt is recorded (status, latency, response, error, next
              attempt); a failure past the schedule's last retry is dead-lettered
    4. judge  a subscriber failing without a success for ``disable.after_hours`` and
              ``disable.min_failures`` attempts is disabled: an audit record, its open
              deliveries dead-lettered (``mailers webhooks replay`` re-sends them), an alert

A disabled subscriber (latest enable/disable audit record, or ``enabled: false`` in the
config) is skipped until :func:`enable`. A run stops sending to a subscriber after
:data:`STOP_AFTER_FAILURES` failures in a row; what it did not send stays due.

Delivery is at least once: a crash between a send and its attempt record sends that
message again, with the same ``webhook-id``, which receivers dedupe on.
All I/O goes through the :class:`~mailers.webhooks_out.transport.Transport` and the
:class:`~mailers.warehouse.Warehouse`; time comes from :mod:`mailers.clock`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from mailers.alerts import Alerter
from mailers.audit import AuditAction, AuditRecord, append_audit
from mailers.clock import epoch, stamp, utcnow
from mailers.config import Settings
from mailers.errors import ConfigError, MailersError
from mailers.events import EVENTS_TABLE
from mailers.subscribers_config import SubscriberConfig
from mailers.warehouse import MAILERS_SCHEMA, Warehouse
from mailers.webhooks_out import payload, schedule, signing, state
from mailers.webhooks_out.tables import (
    ATTEMPTS_SCHEMA,
    ATTEMPTS_TABLE,
    DEAD_LETTERS_SCHEMA,
    DEAD_LETTERS_TABLE,
    MARKS_SCHEMA,
    MARKS_TABLE,
    MESSAGES_SCHEMA,
    MESSAGES_TABLE,
    SENT_EVENTS_SCHEMA,
    SENT_EVENTS_TABLE,
)
from mailers.webhooks_out.transport import PostResult, Transport

log = logging.getLogger(__name__)

LATE_COMMIT_WINDOW = timedelta(hours=1)
"""How long after stamping an event's ``ingested_at`` its ingestion may still commit.

``ingested_at`` is stamped when a batch is parsed, before its transaction commits, so with
several writers (or a replay beside the sensor) an event can become visible after one
stamped later that a delivery run already sent. A mark alone would skip it forever; so
each run reads back this far behind its mark and leaves out what ``webhook_sent_events``
says was sent. One batch parses and commits in seconds; an hour is ample."""

TRACKED_SINCE_THE_START = datetime(1970, 1, 1)
"""``tracked_from`` of a subscriber whose every delivery was tracked."""

ACTOR = "rule:webhooks_out"
"""Who an automatic disable is recorded as made by."""

STOP_AFTER_FAILURES = 5
"""Failures in a row after which a run stops sending to a subscriber (the rest stay due)."""

RECORD_EVERY = 200
"""Attempts recorded per bulk append while sending."""

Alert = Callable[[int, str, Mapping[str, Any]], object]
"""An alert hook (:class:`mailers.alerts.Alerter`): level, one-line message, payload."""


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One configured subscriber of one workspace."""

    workspace: str
    name: str
    config: SubscriberConfig

    @property
    def label(self) -> str:
        """How errors and reports name it: ``workspace/subscriber``."""
        return f"{self.workspace}/{self.name}"


@dataclass
class SubscriberRun:
    """What one run did for one subscriber."""

    workspace: str
    subscriber: str
    created: int = 0
    events: int = 0
    delivered: int = 0
    retrying: int = 0
    dead_lettered: int = 0
    disabled: bool = False
    skipped: str | None = None
    error: str | None = None


@dataclass
class DeliveryReport:
    """What one delivery (or replay) run did, per subscriber."""

    run_id: str
    subscribers: list[SubscriberRun] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [f"{s.workspace}/{s.subscriber}: {s.error}" for s in self.subscribers if s.error]


def subscribers(settings: Settings, only: str | None = None) -> list[Subscriber]:
    """Every configured subscriber (``only``: the one named ``NAME`` or ``WORKSPACE/NAME``).

    Raises :class:`ConfigError` naming ``only`` when no subscriber matches it."""
    found = [
        Subscriber(ws_name, name, config)
        for ws_name, workspace in settings.config.workspaces.items()
        for name, config in workspace.webhook_subscribers.items()
    ]
    if only is None:
        return found
    chosen = [s for s in found if only in (s.name, s.label)]
    if not chosen:
        known = ", ".join(s.label for s in found) or "none configured"
        raise ConfigError(f"no webhook subscriber {only!r} (subscribers: {known})")
    if len(chosen) > 1:
        raise ConfigError(
            f"webhook subscriber {only!r} is in several workspaces: name it as "
            + " or ".join(s.label for s in chosen)
        )
    return chosen


def signing_keys(subscriber: Subscriber, environ: Mapping[str, str] | None = None) -> list[bytes]:
    """The HMAC keys of the subscriber's secrets (current first); errors name the config
    path and variable, never a value."""
    keys = []
    for index, ref in enumerate(subscriber.config.secrets):
        where = (
            f"workspaces.{subscriber.workspace}.webhook_subscribers.{subscriber.name}"
            f".secrets[{index}] ({ref.env})"
        )
        keys.append(signing.secret_key(ref.resolve(where, environ), where))
    return keys


def deliver(
    warehouse: Warehouse,
    settings: Settings,
    transport: Transport,
    run_id: str,
    *,
    only: str | None = None,
    alert_for: Callable[[str], Alert] | None = None,
    environ: Mapping[str, str] | None = None,
) -> DeliveryReport:
    """One delivery run over every subscriber (or ``only`` one); see the module docstring.

    A subscriber whose secrets cannot be read is reported with the error and skipped; the
    others are delivered. ``alert_for(workspace)``: the alert hook (default: an
    :class:`Alerter` with the workspace's ``pause_rules.alert_webhook``)."""
    report = DeliveryReport(run_id)
    for subscriber in subscribers(settings, only):
        outcome = SubscriberRun(subscriber.workspace, subscriber.name)
        report.subscribers.append(outcome)
        skipped = _why_skipped(warehouse, subscriber)
        if skipped:
            outcome.skipped = skipped
            continue
        try:
            keys = signing_keys(subscriber, environ)
        except MailersError as err:
            outcome.error = str(err)
            continue
        now = utcnow()
        mark = state.mark(warehouse, subscriber.workspace, subscriber.name)
        batch = _new_events(warehouse, subscriber, mark)
        outcome.events = batch.num_rows
        outcome.created = _record_messages(
            warehouse, subscriber, batch, now, replay_of=None, mark=mark
        )
        _send_due(warehouse, subscriber, keys, transport, run_id, outcome)
        alert = alert_for(subscriber.workspace) if alert_for else _alerter(settings, subscriber)
        outcome.disabled = _judge(warehouse, settings, subscriber, run_id, alert)
    return report


def replay(
    warehouse: Warehouse,
    settings: Settings,
    transport: Transport,
    run_id: str,
    subscriber_name: str,
    since: datetime,
    until: datetime,
    *,
    environ: Mapping[str, str] | None = None,
) -> DeliveryReport:
    """Deliver again the subscriber's events that occurred in ``[since, until)`` (UTC), as
    new deliveries marked ``replay`` (same bodies' ``webhook-id`` for the same events, so
    a receiver that kept them dedupes). The mark does not move. Failed replays are retried
    by later delivery runs like any delivery; this run also sends the subscriber's other
    due deliveries."""
    (subscriber,) = subscribers(settings, subscriber_name)
    if until <= since:
        raise ConfigError(f"{subscriber.label}: replay window ends before it starts")
    skipped = _why_skipped(warehouse, subscriber)
    if skipped:
        raise ConfigError(f"{subscriber.label}: {skipped}; enable it before replaying")
    keys = signing_keys(subscriber, environ)
    outcome = SubscriberRun(subscriber.workspace, subscriber.name)
    where, params = _filters(subscriber)
    sql = (
        f"select * from {warehouse.relation(MAILERS_SCHEMA, EVENTS_TABLE)} "
        f"where {where} and occurred_at >= ? and occurred_at < ? order by ingested_at, event_id"
    )
    # Recorded chunk by chunk, then sent page by page: memory stays bounded by the chunk.
    size = subscriber.config.batch_size
    chunk = size * max(1, subscriber.config.max_events_per_run // size)
    made = utcnow()
    for part in warehouse.stream(sql, [*params, _naive(since), _naive(until)], chunk):
        rows = pa.Table.from_batches([part])
        outcome.events += rows.num_rows
        outcome.created += _record_messages(warehouse, subscriber, rows, made, replay_of=run_id)
    _send_due(warehouse, subscriber, keys, transport, run_id, outcome)
    return DeliveryReport(run_id, [outcome])


def enable(
    warehouse: Warehouse, settings: Settings, subscriber_name: str, actor: str, run_id: str
) -> bool:
    """Enable a disabled subscriber (audited); False when it was not disabled.

    It then continues from its mark: the events of while it was disabled are delivered by
    the next run; the deliveries dead-lettered when it was disabled need a replay."""
    (subscriber,) = subscribers(settings, subscriber_name)
    current = state.control(warehouse, subscriber.workspace, subscriber.name)
    if not current.disabled:
        return False
    append_audit(
        warehouse,
        [
            AuditRecord(
                run_id=run_id,
                actor=actor,
                action=AuditAction.WEBHOOK_ENABLE,
                config_hash=settings.config_hash,
                workspace=subscriber.workspace,
                scope=state.scope(subscriber.name),
                reason="enabled by an operator",
                before={"enabled": False, "disabled_at": current.at},
                after={"enabled": True},
            )
        ],
    )
    return True


def _why_skipped(warehouse: Warehouse, subscriber: Subscriber) -> str | None:
    if not subscriber.config.enabled:
        return "disabled in the config (enabled: false)"
    current = state.control(warehouse, subscriber.workspace, subscriber.name)
    if current.disabled:
        return f"disabled since {current.at:%Y-%m-%d %H:%M:%S} UTC ({current.reason})"
    return None


def _filters(subscriber: Subscriber) -> tuple[str, list[Any]]:
    clauses, params = ["workspace = ?"], [subscriber.workspace]
    for column, values in (
        ("event_type", [str(t) for t in subscriber.config.event_types]),
        ("stream", list(subscriber.config.streams)),
    ):
        if values:
            clauses.append(f"{column} in ({', '.join('?' for _ in values)})")
            params.extend(values)
    return " and ".join(clauses), params


def _new_events(warehouse: Warehouse, subscriber: Subscriber, mark: state.Mark | None) -> pa.Table:
    where, params = _filters(subscriber)
    if mark is not None and mark.tracked_from is None:
        # A mark from before webhook_sent_events: nothing to anti-join, so strictly after.
        where += " and (ingested_at > ? or (ingested_at = ? and event_id > ?))"
        params += [mark.ingested_at, mark.ingested_at, mark.event_id]
    elif mark is not None and mark.tracked_from is not None:
        # A row is sent once: matched by id *and* ingested_at, since a replay's corrected
        # row of an event keeps its id under a later ingested_at, and goes out too.
        low = max(mark.ingested_at - LATE_COMMIT_WINDOW, mark.tracked_from)
        sent = warehouse.relation(MAILERS_SCHEMA, SENT_EVENTS_TABLE)
        where += (
            " and ingested_at > ? and not exists (select 1 from "
            f"{sent} s where s.workspace = ? and s.subscriber = ? and s.ingested_at > ? "
            "and s.event_id = e.event_id and s.ingested_at = e.ingested_at)"
        )
        params += [low, subscriber.workspace, subscriber.name, low]
    return warehouse.query(
        f"select * from {warehouse.relation(MAILERS_SCHEMA, EVENTS_TABLE)} e where {where} "
        "order by ingested_at, event_id limit ?",
        [*params, subscriber.config.max_events_per_run],
    )


def _record_messages(
    warehouse: Warehouse,
    subscriber: Subscriber,
    events: pa.Table,
    now: datetime,
    replay_of: str | None,
    mark: state.Mark | None = None,
) -> int:
    """Store the messages ``events`` make (and, unless replaying, which events they carry
    and the new mark, moved on from ``mark``) at once."""
    if events.num_rows == 0:
        return 0
    size = subscriber.config.batch_size
    rows = events.to_pylist()
    messages = []
    carried = []
    for start in range(0, len(rows), size):
        group = rows[start : start + size]
        ids = [e["event_id"] for e in group]
        hook_id = payload.webhook_id(subscriber.workspace, subscriber.name, ids)
        delivery_id = _delivery_id(hook_id, replay_of)
        carried += [
            {
                "workspace": subscriber.workspace,
                "subscriber": subscriber.name,
                "event_id": e["event_id"],
                "ingested_at": e["ingested_at"],
                "delivery_id": delivery_id,
                "recorded_at": now,
            }
            for e in group
        ]
        messages.append(
            {
                "delivery_id": delivery_id,
                "webhook_id": hook_id,
                "workspace": subscriber.workspace,
                "subscriber": subscriber.name,
                "event_ids": json.dumps(ids),
                "event_count": len(ids),
                "body": payload.body(group, now, batched=size > 1).decode(),
                "replay": replay_of is not None,
                # Strictly increasing, so first attempts go out in the events' order.
                "created_at": stamp(),
            }
        )
    with warehouse.transaction():
        warehouse.append(
            MAILERS_SCHEMA, MESSAGES_TABLE, pa.Table.from_pylist(messages, MESSAGES_SCHEMA)
        )
        if replay_of is None:
            warehouse.append(
                MAILERS_SCHEMA,
                SENT_EVENTS_TABLE,
                pa.Table.from_pylist(carried, SENT_EVENTS_SCHEMA),
            )
            last = rows[-1]
            moved = {
                "workspace": subscriber.workspace,
                "subscriber": subscriber.name,
                "ingested_at": last["ingested_at"],
                "event_id": last["event_id"],
                "recorded_at": now,
                # From here on every sent event is tracked; an untracked older mark is
                # where the tracking began (what it covered was read strictly after it).
                "tracked_from": TRACKED_SINCE_THE_START,
            }
            if mark is not None:
                if mark.ingested_at > last["ingested_at"]:  # late events only: keep the mark
                    moved.update(ingested_at=mark.ingested_at, event_id=mark.event_id)
                moved["tracked_from"] = mark.tracked_from or mark.ingested_at
            warehouse.append(
                MAILERS_SCHEMA, MARKS_TABLE, pa.Table.from_pylist([moved], MARKS_SCHEMA)
            )
    return len(messages)


def _delivery_id(hook_id: str, replay_of: str | None) -> str:
    """A live delivery is its message (events are read past the mark once); a replay is a
    delivery of its own, whose attempts never mix with the original's."""
    if replay_of is None:
        return "dlv_" + hook_id.removeprefix("msg_")
    digest = hashlib.sha256(f"{replay_of}\x1f{hook_id}".encode()).hexdigest()[:32]
    return "rpl_" + digest


def _send_due(
    warehouse: Warehouse,
    subscriber: Subscriber,
    keys: Sequence[bytes],
    transport: Transport,
    run_id: str,
    outcome: SubscriberRun,
) -> None:
    """Send every due delivery, soonest due first, until none is left or the subscriber
    failed :data:`STOP_AFTER_FAILURES` times in a row."""
    config = subscriber.config
    page = max(1, config.max_events_per_run // config.batch_size)
    in_a_row = 0
    while in_a_row < STOP_AFTER_FAILURES:
        due = state.due(warehouse, subscriber.workspace, subscriber.name, utcnow(), page)
        if due.num_rows == 0:
            return
        attempts: list[dict[str, Any]] = []
        dead: list[dict[str, Any]] = []
        for delivery in due.to_pylist():
            if in_a_row >= STOP_AFTER_FAILURES:
                break
            body = delivery["body"].encode()
            headers = signing.headers(keys, delivery["webhook_id"], int(epoch()), body)
            result = transport.post(config.url, headers, body, config.timeout_seconds)
            row = _attempt(subscriber, delivery, result, run_id)
            attempts.append(row)
            in_a_row = 0 if result.delivered else in_a_row + 1
            if row["status"] == "delivered":
                outcome.delivered += 1
            elif row["status"] == "retrying":
                outcome.retrying += 1
            else:
                outcome.dead_lettered += 1
                dead.append(_dead_letter(subscriber, delivery, row, row["attempted_at"]))
            if len(attempts) >= RECORD_EVERY:
                _record_attempts(warehouse, attempts, dead)
                attempts, dead = [], []
        # Recorded before the next page is read: an attempted delivery is no longer due.
        _record_attempts(warehouse, attempts, dead)


def _attempt(
    subscriber: Subscriber, delivery: Mapping[str, Any], result: PostResult, run_id: str
) -> dict[str, Any]:
    now = utcnow()
    number = int(delivery["attempts"]) + 1
    first = delivery["first_attempted_at"] or now
    status, retry_at = "delivered", None
    if not result.delivered:
        decision = schedule.after_failure(
            subscriber.config.retry, number, first, now, seed=delivery["delivery_id"]
        )
        retry_at = decision.retry_at
        status = "dead_lettered" if decision.give_up else "retrying"
    return {
        **_key(subscriber, delivery),
        "attempt": number,
        "status": status,
        "latency_ms": result.latency_ms,
        "response_code": result.status_code,
        "error": result.error,
        "first_attempted_at": first,
        "attempted_at": now,
        "next_attempt_at": retry_at,
        "run_id": run_id,
    }


def _key(subscriber: Subscriber, delivery: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "delivery_id": delivery["delivery_id"],
        "webhook_id": delivery["webhook_id"],
        "workspace": subscriber.workspace,
        "subscriber": subscriber.name,
        "event_ids": delivery["event_ids"],
    }


def _dead_letter(
    subscriber: Subscriber,
    delivery: Mapping[str, Any],
    last: Mapping[str, Any] | None,
    at: datetime,
) -> dict[str, Any]:
    """The dead letter of ``delivery``; ``last`` is its final attempt (None when it is
    closed by a disable, its latest attempt being the one ``delivery`` carries)."""
    return {
        **_key(subscriber, delivery),
        "attempts": last["attempt"] if last else int(delivery["attempts"]),
        "last_response_code": last["response_code"] if last else None,
        "last_error": last["error"] if last else "subscriber disabled",
        "first_attempted_at": delivery["first_attempted_at"]
        or (last or {}).get("first_attempted_at", at),
        "dead_at": at,
    }


def _record_attempts(
    warehouse: Warehouse, attempts: Iterable[dict[str, Any]], dead: Iterable[dict[str, Any]]
) -> None:
    attempts, dead = list(attempts), list(dead)
    if not attempts and not dead:
        return
    with warehouse.transaction():
        warehouse.append(
            MAILERS_SCHEMA, ATTEMPTS_TABLE, pa.Table.from_pylist(attempts, ATTEMPTS_SCHEMA)
        )
        warehouse.append(
            MAILERS_SCHEMA, DEAD_LETTERS_TABLE, pa.Table.from_pylist(dead, DEAD_LETTERS_SCHEMA)
        )


def _alerter(settings: Settings, subscriber: Subscriber) -> Alert:
    return Alerter(settings.config.workspaces[subscriber.workspace].pause_rules.alert_webhook)


def _judge(
    warehouse: Warehouse, settings: Settings, subscriber: Subscriber, run_id: str, alert: Alert
) -> bool:
    """Disable the subscriber when it has failed long and often enough; True when it did."""
    now = utcnow()
    rule = subscriber.config.disable
    # Twice the rule's period: a streak longer than that still reads as long enough.
    window = now - timedelta(hours=2 * rule.after_hours)
    enabled_at = state.control(warehouse, subscriber.workspace, subscriber.name).at
    since = max(window, enabled_at) if enabled_at else window
    failing_since, failures = state.failure_streak(
        warehouse, subscriber.workspace, subscriber.name, since
    )
    if not schedule.should_disable(rule, failing_since, failures, now):
        return False
    assert failing_since is not None
    still_open = state.open_deliveries(warehouse, subscriber.workspace, subscriber.name, now)
    closed = [_dead_letter(subscriber, d, None, now) for d in still_open.to_pylist()]
    reason = (
        f"failed {failures} attempts without a success since "
        f"{failing_since:%Y-%m-%d %H:%M:%S} UTC (rule: {rule.after_hours:g} h and "
        f"{rule.min_failures} failures)"
    )
    with warehouse.transaction():
        warehouse.append(
            MAILERS_SCHEMA, DEAD_LETTERS_TABLE, pa.Table.from_pylist(closed, DEAD_LETTERS_SCHEMA)
        )
        append_audit(
            warehouse,
            [
                AuditRecord(
                    run_id=run_id,
                    actor=ACTOR,
                    action=AuditAction.WEBHOOK_DISABLE,
                    config_hash=settings.config_hash,
                    counts={"failures": failures, "dead_lettered": len(closed)},
                    detail={"url": subscriber.config.url, "failing_since": failing_since},
                    workspace=subscriber.workspace,
                    scope=state.scope(subscriber.name),
                    reason=reason,
                    before={"enabled": True},
                    after={"enabled": False},
                )
            ],
        )
    line = f"webhook subscriber {subscriber.label} disabled: {reason}"
    alert(
        logging.ERROR,
        line,
        {
            "severity": "disable",
            "workspace": subscriber.workspace,
            "scope": state.scope(subscriber.name),
            "subscriber": subscriber.name,
            "failures": failures,
            "failing_since": failing_since.isoformat(),
            "dead_lettered": len(closed),
        },
    )
    return True


def _naive(moment: datetime) -> datetime:
    """A UTC instant as the warehouse holds it (naive UTC); a naive one is taken as UTC."""
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)
