"""The central suppression list: who must not be mailed, in which scope, why, and since when.

One append-only table, ``mailers.suppressions``, holds every entry and every removal. An
entry (``action = 'add'``) comes from provider feedback, which ingestion derives from
landed events (:data:`SUPPRESSING_EVENTS`), from an operator (``manual``) or from a bulk
``import`` (a CSV file or a warehouse relation). Each row says who or what added it
(``actor``; for feedback also the event id and ``provider_account``; for an import the file
or relation in ``origin``) and when (``created_at``). Default scopes:

* a hard bounce or a complaint blocks the address in its whole workspace (every stream);
* an unsubscribe blocks it for the stream it came from, so a lifecycle unsubscribe (one-click
  links included: they arrive as ``unsubscribed`` events) never blocks a password reset on
  the transactional stream.

Operators may add entries at any scope, ``global`` included.

A removal (``action = 'remove'``) is a row too: actor, reason, time, scope. It lifts the
entries of exactly its address and scope recorded before it; a complaint entry only when
the removal says ``override_complaint``. An entry is *active* when no later removal lifts
it (:func:`active_sql`), so a bounce after a removal suppresses again.

Operator adds and removals are control records (:mod:`mailers.control`) first, so they
work while a send holds the warehouse; their loader, registered here, turns them into rows
and audit records. Addresses are stored and compared lower-cased.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pyarrow as pa

from mailers.audit import AuditAction, AuditRecord
from mailers.config import MailersConfig
from mailers.control import ControlKind, ControlRecord, Loaded, not_loaded, register_loader
from mailers.errors import MailersError
from mailers.events import BounceClass, EventType
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

SUPPRESSIONS_TABLE = "suppressions"


class SuppressionError(MailersError):
    """A suppression request that cannot be done as asked (names address, scope or row)."""


class SuppressionScope(StrEnum):
    """How far a suppression reaches."""

    GLOBAL = "global"
    WORKSPACE = "workspace"
    STREAM = "stream"


class SuppressionSource(StrEnum):
    """Where a suppression came from."""

    MANUAL = "manual"
    IMPORT = "import"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"


class SuppressionAction(StrEnum):
    """What a row of ``mailers.suppressions`` does."""

    ADD = "add"
    REMOVE = "remove"


EventClass = tuple[EventType, BounceClass | None]

SUPPRESSING_EVENTS: dict[EventClass, tuple[SuppressionSource, SuppressionScope]] = {
    (EventType.BOUNCED, BounceClass.HARD): (SuppressionSource.BOUNCE, SuppressionScope.WORKSPACE),
    (EventType.COMPLAINED, None): (SuppressionSource.COMPLAINT, SuppressionScope.WORKSPACE),
    (EventType.UNSUBSCRIBED, None): (SuppressionSource.UNSUBSCRIBE, SuppressionScope.STREAM),
}
"""Canonical (event type, bounce class) → (source, scope) of the suppression it creates."""


@dataclass(frozen=True, order=True)
class SuppressionTarget:
    """One scope an entry applies to: ``global``, a workspace, or a stream of a workspace."""

    scope: SuppressionScope
    workspace: str | None = None
    stream: str | None = None

    @property
    def key(self) -> str:
        """``global``, ``workspace:W`` or ``stream:W.S``, as the CLI takes it."""
        if self.scope is SuppressionScope.GLOBAL:
            return "global"
        if self.scope is SuppressionScope.WORKSPACE:
            return f"workspace:{self.workspace}"
        return f"stream:{self.workspace}.{self.stream}"

    def __str__(self) -> str:
        return self.key

    def covers(self, workspace: str, stream: str) -> bool:
        """Whether an entry of this scope blocks mail of ``workspace`` on ``stream``."""
        if self.scope is SuppressionScope.GLOBAL:
            return True
        if self.workspace != workspace:
            return False
        return self.scope is SuppressionScope.WORKSPACE or self.stream == stream

    @classmethod
    def parse(cls, text: str, config: MailersConfig | None = None) -> SuppressionTarget:
        """Read ``global``, ``workspace:W`` or ``stream:W.S``; with ``config``, check that
        the workspace and stream exist."""
        level, _, rest = text.strip().partition(":")
        try:
            scope = SuppressionScope(level)
        except ValueError:
            raise SuppressionError(
                f"scope {text!r}: unknown level {level!r} (global, workspace:W or stream:W.S)"
            ) from None
        workspace, _, stream = rest.partition(".")
        if scope is SuppressionScope.GLOBAL:
            if rest:
                raise SuppressionError(f"scope {text!r}: global takes no workspace")
            return cls(scope)
        if not workspace or (scope is SuppressionScope.STREAM) != bool(stream):
            form = "workspace:W" if scope is SuppressionScope.WORKSPACE else "stream:W.S"
            raise SuppressionError(f"scope {text!r}: write it as {form}")
        if config is not None:
            ws = config.workspaces.get(workspace)
            if ws is None:
                raise SuppressionError(
                    f"scope {text!r}: no workspace {workspace!r} "
                    f"(configured: {', '.join(config.workspaces)})"
                )
            streams = [str(s) for s in ws.streams]
            if stream and stream not in streams:
                raise SuppressionError(
                    f"scope {text!r}: workspace {workspace} has no stream {stream!r} "
                    f"(configured: {', '.join(streams)})"
                )
        return cls(scope, workspace, stream or None)


SUPPRESSIONS_SCHEMA = pa.schema(
    [
        pa.field("suppression_id", pa.string(), nullable=False),
        pa.field("address", pa.string(), nullable=False),
        pa.field("scope", pa.string(), nullable=False),
        pa.field("workspace", pa.string()),
        pa.field("stream", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("event_id", pa.string()),
        pa.field("created_at", pa.timestamp("us"), nullable=False),
        pa.field("action", pa.string()),
        pa.field("actor", pa.string()),
        pa.field("provider_account", pa.string()),
        pa.field("origin", pa.string()),
        pa.field("override_complaint", pa.bool_()),
        pa.field("control_id", pa.string()),
    ]
)
"""Columns of ``mailers.suppressions``: append-only; one address may appear many times.

``action`` is ``add`` (null in rows written before removals existed) or ``remove``;
``actor`` who or what wrote the row (a user, ``ingest``); ``origin`` what it came from
(``event:<id>``, ``file:<path>:<line>``, ``relation:<schema.table>``, ``control:<id>``);
``control_id`` the control record it was loaded from, if any."""


def active_sql(warehouse: Warehouse) -> str:
    """A query of the active entries: ``add`` rows no later removal of their scope lifts.

    A removal lifts a complaint entry only with ``override_complaint``. Only the latest
    removal of a scope matters (it lifts everything recorded before it), so removals are
    aggregated per scope and joined on equality: a hash join, whatever the history.
    """
    table = warehouse.relation(MAILERS_SCHEMA, SUPPRESSIONS_TABLE)
    lifted_at = (
        f"case when e.source = '{SuppressionSource.COMPLAINT}' "
        "then r.override_removed_at else r.removed_at end"
    )
    return f"""
with removals as (
    select address, scope, coalesce(workspace, '') as workspace, coalesce(stream, '') as stream,
        max(created_at) as removed_at,
        max(case when override_complaint then created_at end) as override_removed_at
    from {table}
    where action = '{SuppressionAction.REMOVE}'
    group by address, scope, coalesce(workspace, ''), coalesce(stream, '')
)
select e.* from {table} as e
left join removals as r
  on r.address = e.address and r.scope = e.scope
 and r.workspace = coalesce(e.workspace, '') and r.stream = coalesce(e.stream, '')
where coalesce(e.action, '{SuppressionAction.ADD}') = '{SuppressionAction.ADD}'
  and ({lifted_at} is null or {lifted_at} <= e.created_at)
"""


def target_of(record: ControlRecord) -> SuppressionTarget:
    """The scope a suppression control record applies to."""
    return SuppressionTarget.parse(record.body["scope"])


def _row(record: ControlRecord) -> dict[str, Any]:
    target = target_of(record)
    remove = record.kind is ControlKind.SUPPRESSION_REMOVE
    return {
        "suppression_id": record.control_id,
        "address": record.body["address"],
        "scope": str(target.scope),
        "workspace": target.workspace,
        "stream": target.stream,
        "source": str(SuppressionSource.MANUAL),
        "reason": record.reason,
        "event_id": None,
        "created_at": record.recorded_at,
        "action": str(SuppressionAction.REMOVE if remove else SuppressionAction.ADD),
        "actor": record.actor,
        "provider_account": None,
        "origin": f"control:{record.control_id}",
        "override_complaint": bool(record.body.get("override_complaint")) if remove else None,
        "control_id": record.control_id,
    }


def _audit(record: ControlRecord) -> AuditRecord:
    target = target_of(record)
    remove = record.kind is ControlKind.SUPPRESSION_REMOVE
    detail: dict[str, Any] = {"control_id": record.control_id, "address": record.body["address"]}
    if remove:
        detail["override_complaint"] = bool(record.body.get("override_complaint"))
    return AuditRecord(
        run_id=f"control:{record.control_id}",
        actor=record.actor,
        action=AuditAction.SUPPRESSION_REMOVE if remove else AuditAction.SUPPRESSION_ADD,
        config_hash=str(record.body.get("config_hash") or ""),
        counts={"addresses": 1},
        detail=detail,
        workspace=target.workspace,
        stream=target.stream,
        scope=target.key,
        reason=record.reason,
        before={"suppressed": remove},
        after={"suppressed": not remove},
    )


def _load(warehouse: Warehouse, records: Sequence[ControlRecord]) -> Loaded:
    fresh = not_loaded(warehouse, SUPPRESSIONS_TABLE, records)
    return Loaded(
        table=SUPPRESSIONS_TABLE,
        rows=pa.Table.from_pylist([_row(r) for r in fresh], schema=SUPPRESSIONS_SCHEMA),
        audit=[_audit(r) for r in fresh],
    )


register_loader(ControlKind.SUPPRESSION_ADD, _load)
register_loader(ControlKind.SUPPRESSION_REMOVE, _load)
