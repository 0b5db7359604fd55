"""The identity change log: what changed in each live sending identity, between runs.

A send run compares a canonical :func:`snapshot` of the config's sending identities,
provider accounts and stream routes with the last one recorded, and appends one row per
changed field to ``mailers.identity_changes`` (and an ``identity_change`` audit record),
whether or not anyone announced the change. The first snapshot of a workspace is recorded
as its ``baseline``. Credentials appear only as the names of the environment variables
that hold them, never as values.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pyarrow as pa

from mailers.audit import AuditAction, AuditRecord, append_audit
from mailers.clock import utcnow
from mailers.config import MailersConfig, Settings
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

IDENTITY_CHANGES_TABLE = "identity_changes"


class SubjectKind(StrEnum):
    """What a snapshot record describes (the names match pause scope levels)."""

    IDENTITY = "identity"
    ACCOUNT = "account"
    STREAM = "stream"


class ChangeKind(StrEnum):
    BASELINE = "baseline"
    """The first recorded value of a field of a workspace seen for the first time."""
    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"


Subject = tuple[str, SubjectKind, str]
"""``(workspace, kind, name)``."""


@dataclass(frozen=True)
class IdentityChange:
    """One field of one subject whose value differs from the last recorded one."""

    workspace: str
    subject_kind: SubjectKind
    subject_name: str
    field: str
    change: ChangeKind
    before: str | None
    after: str | None

    @property
    def scope(self) -> str:
        """The subject as a pause scope key (``identity:acme.acme_news``)."""
        return f"{self.subject_kind}:{self.workspace}.{self.subject_name}"


IDENTITY_CHANGES_SCHEMA = pa.schema(
    [
        pa.field("change_id", pa.string(), nullable=False),
        pa.field("workspace", pa.string(), nullable=False),
        pa.field("subject_kind", pa.string(), nullable=False),
        pa.field("subject_name", pa.string(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("change", pa.string(), nullable=False),
        pa.field("before", pa.string()),
        pa.field("after", pa.string()),
        pa.field("config_hash", pa.string(), nullable=False),
        pa.field("detected_at", pa.timestamp("us"), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("actor", pa.string(), nullable=False),
        pa.field("generation", pa.int64(), nullable=False),
    ]
)
"""Columns of ``mailers.identity_changes``; ``before``/``after`` are JSON values as text
(null: the field did not exist before / no longer exists). ``generation`` numbers the
recordings 1, 2, ... so the latest value never depends on clock resolution."""


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def snapshot(config: MailersConfig) -> dict[Subject, dict[str, str]]:
    """Each workspace's identities, provider accounts and stream routes as field → JSON text.

    Covers what decides who a message is from and where it leaves through: from address,
    name, reply-to and sending domain; an identity's accounts; an account's provider kind,
    settings (endpoint, domain, message stream) and credential references (env var names);
    a stream's routing.
    """
    facts: dict[Subject, dict[str, str]] = {}
    for ws_name, ws in config.workspaces.items():
        for name, identity in ws.identities.items():
            facts[(ws_name, SubjectKind.IDENTITY, name)] = {
                "from_address": _text(identity.from_address),
                "from_name": _text(identity.from_name),
                "reply_to": _text(identity.reply_to),
                "sending_domain": _text(identity.sending_domain),
                "provider_accounts": _text(list(identity.provider_accounts)),
            }
        for name, account in ws.provider_accounts.items():
            fields = {"kind": _text(account.kind)}
            fields.update(
                {f"credential.{key}": _text(ref.env) for key, ref in account.credentials.items()}
            )
            fields.update({f"settings.{key}": _text(v) for key, v in account.settings.items()})
            facts[(ws_name, SubjectKind.ACCOUNT, name)] = fields
        for stream, stream_config in ws.streams.items():
            routing = stream_config.routing.model_dump(mode="json")
            facts[(ws_name, SubjectKind.STREAM, str(stream))] = {
                "routing": _text(routing),
            }
    return facts


@dataclass(frozen=True)
class RecordedSnapshot:
    """What the change log says the config was: its last generation, the workspaces with a
    baseline, and (workspace, kind, name, field) → latest value (``None``: removed)."""

    generation: int
    workspaces: set[str]
    values: dict[tuple[str, str, str, str], str | None]


def recorded_snapshot(warehouse: Warehouse) -> RecordedSnapshot:
    """The snapshot the change log adds up to; one query over the (small) change log."""
    rows = warehouse.query(
        f"""
        select workspace, subject_kind, subject_name, field, after, generation,
               max(generation) over () as last_generation
        from (
            select *, row_number() over (
                partition by workspace, subject_kind, subject_name, field
                order by generation desc
            ) as recency
            from {warehouse.relation(MAILERS_SCHEMA, IDENTITY_CHANGES_TABLE)}
        ) as latest
        where recency = 1
        """
    ).to_pylist()
    values = {
        (r["workspace"], r["subject_kind"], r["subject_name"], r["field"]): r["after"] for r in rows
    }
    return RecordedSnapshot(
        generation=rows[0]["last_generation"] if rows else 0,
        workspaces={r["workspace"] for r in rows},
        values=values,
    )


def diff(
    current: Mapping[Subject, Mapping[str, str]],
    known_workspaces: set[str],
    recorded: Mapping[tuple[str, str, str, str], str | None],
) -> list[IdentityChange]:
    """The changes from ``recorded`` to ``current``, in a stable order."""
    now: dict[tuple[str, str, str, str], str] = {
        (ws, str(kind), name, f): value
        for (ws, kind, name), fields in current.items()
        for f, value in fields.items()
    }
    changes = []
    for key in sorted(set(now) | {k for k, v in recorded.items() if v is not None}):
        ws, kind, name, f = key
        before, after = recorded.get(key), now.get(key)
        if before == after:
            continue
        if ws not in known_workspaces:
            change = ChangeKind.BASELINE
        elif before is None:
            change = ChangeKind.ADDED
        elif after is None:
            change = ChangeKind.REMOVED
        else:
            change = ChangeKind.CHANGED
        changes.append(IdentityChange(ws, SubjectKind(kind), name, f, change, before, after))
    return changes


def record_identity_changes(
    warehouse: Warehouse, settings: Settings, *, actor: str, run_id: str
) -> list[IdentityChange]:
    """Record how the config's identities differ from the last recorded snapshot.

    Appends the changes to ``mailers.identity_changes`` and one ``identity_change`` audit
    record per changed subject, in one transaction; returns the changes (empty when
    nothing changed). Call it at the start of every send run.
    """
    recorded = recorded_snapshot(warehouse)
    changes = diff(snapshot(settings.config), recorded.workspaces, recorded.values)
    if not changes:
        return []
    detected_at = utcnow()
    rows = [
        {
            "change_id": str(uuid.uuid4()),
            "workspace": c.workspace,
            "subject_kind": str(c.subject_kind),
            "subject_name": c.subject_name,
            "field": c.field,
            "change": str(c.change),
            "before": c.before,
            "after": c.after,
            "config_hash": settings.config_hash,
            "detected_at": detected_at,
            "run_id": run_id,
            "actor": actor,
            "generation": recorded.generation + 1,
        }
        for c in changes
    ]
    with warehouse.transaction():
        warehouse.append(
            MAILERS_SCHEMA,
            IDENTITY_CHANGES_TABLE,
            pa.Table.from_pylist(rows, IDENTITY_CHANGES_SCHEMA),
        )
        append_audit(warehouse, _audit(changes, settings.config_hash, actor, run_id))
    return changes


def _audit(
    changes: Sequence[IdentityChange], config_hash: str, actor: str, run_id: str
) -> list[AuditRecord]:
    by_subject: dict[str, list[IdentityChange]] = {}
    for change in changes:
        by_subject.setdefault(change.scope, []).append(change)
    records = []
    for scope, group in by_subject.items():
        first = group[0]
        records.append(
            AuditRecord(
                run_id=run_id,
                actor=actor,
                action=AuditAction.IDENTITY_CHANGE,
                config_hash=config_hash,
                counts={"fields_changed": len(group)},
                detail={"changes": {c.field: str(c.change) for c in group}},
                workspace=first.workspace,
                scope=scope,
                reason="detected in the config at the start of a send run",
                before={c.field: _value(c.before) for c in group},
                after={c.field: _value(c.after) for c in group},
            )
        )
    return records


def _value(text: str | None) -> Any:
    return None if text is None else json.loads(text)
