"""Pausing sending for a scope: who paused what, when and why, and what it holds.

A pause holds every message of its scope (a workspace, a stream, a campaign, an identity or
a provider account) before the next provider call: a running send checks before every
batch and every call, records held messages ``paused`` (retried by a later run once the
scope is resumed) and stops handing anything of the scope over. A pause never reroutes a
message to another account.

Every pause and resume is a control record (:mod:`mailers.control`), so it works while a
send holds the warehouse, and lands in ``mailers.pauses`` (append-only) and the audit log.
The current state (the active pause of each scope) is kept beside the records in
``control/pauses.json``, rewritten atomically under the journal's lock by each pause and
resume, so a running send reads one small file (only when it changed) before each call.

An automatic pause (a tripped deliverability rule, :mod:`mailers.pause_rules`) is resumed
only by a person, with a reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pyarrow as pa

from mailers.audit import AuditAction, AuditRecord
from mailers.clock import utcnow
from mailers.config import MailersConfig
from mailers.control import (
    ControlJournal,
    ControlKind,
    ControlRecord,
    Loaded,
    not_loaded,
    register_loader,
    write_durably,
)
from mailers.errors import MailersError
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

PAUSES_TABLE = "pauses"
STATE_FILE = "pauses.json"


class PauseLevel(StrEnum):
    """What kind of scope a pause holds, widest first."""

    WORKSPACE = "workspace"
    STREAM = "stream"
    CAMPAIGN = "campaign"
    IDENTITY = "identity"
    ACCOUNT = "account"


RUN_LEVELS = frozenset({PauseLevel.WORKSPACE, PauseLevel.STREAM, PauseLevel.CAMPAIGN})
"""Levels that hold a whole campaign window at once: a send under one stops."""


class PauseError(MailersError):
    """A pause or resume that cannot be done as asked (unknown scope, not paused, ...)."""


@dataclass(frozen=True, order=True)
class PauseScope:
    """One pausable scope: the workspace itself, or a named stream, campaign, identity or
    provider account of it."""

    workspace: str
    level: PauseLevel
    name: str | None = None

    @property
    def key(self) -> str:
        """``level:workspace[.name]``, as the CLI takes it and the state file stores it."""
        return f"{self.level}:{self.workspace}" + (f".{self.name}" if self.name else "")

    def __str__(self) -> str:
        return f"{self.level} {self.workspace}" + (f".{self.name}" if self.name else "")

    def covers(
        self,
        workspace: str,
        stream: str | None = None,
        campaign: str | None = None,
        identity: str | None = None,
        account: str | None = None,
    ) -> bool:
        """Whether a message with these attributes is in this scope."""
        if workspace != self.workspace:
            return False
        value = {
            PauseLevel.WORKSPACE: self.name,
            PauseLevel.STREAM: stream,
            PauseLevel.CAMPAIGN: campaign,
            PauseLevel.IDENTITY: identity,
            PauseLevel.ACCOUNT: account,
        }[self.level]
        return value == self.name

    @classmethod
    def parse(cls, text: str, config: MailersConfig) -> PauseScope:
        """Read ``WORKSPACE`` or ``LEVEL:WORKSPACE[.NAME]`` (e.g. ``stream:acme.marketing``)
        and check that the scope exists in ``config``."""
        level_text, _, rest = text.rpartition(":")
        try:
            level = PauseLevel(level_text or "workspace")
        except ValueError:
            levels = ", ".join(str(lv) for lv in PauseLevel)
            raise PauseError(
                f"scope {text!r}: unknown level {level_text!r} (one of {levels})"
            ) from None
        workspace_name, _, name = rest.partition(".")
        workspace = config.workspaces.get(workspace_name)
        if workspace is None:
            raise PauseError(
                f"scope {text!r}: no workspace {workspace_name!r} "
                f"(configured: {', '.join(config.workspaces)})"
            )
        if level is PauseLevel.WORKSPACE:
            if name:
                raise PauseError(f"scope {text!r}: a workspace scope has no name after the dot")
            return cls(workspace_name, level)
        names: Iterable[str] = {
            PauseLevel.STREAM: [str(s) for s in workspace.streams],
            PauseLevel.CAMPAIGN: workspace.campaigns,
            PauseLevel.IDENTITY: workspace.identities,
            PauseLevel.ACCOUNT: workspace.provider_accounts,
        }[level]
        if name not in names:
            raise PauseError(
                f"scope {text!r}: workspace {workspace_name} has no {level} {name!r} "
                f"(configured: {', '.join(names) or 'none'})"
            )
        return cls(workspace_name, level, name)

    @classmethod
    def from_key(cls, key: str) -> PauseScope:
        level, _, rest = key.partition(":")
        workspace, _, name = rest.partition(".")
        return cls(workspace, PauseLevel(level), name or None)


@dataclass(frozen=True)
class Pause:
    """An active pause of one scope."""

    scope: PauseScope
    control_id: str
    paused_at: datetime
    actor: str
    reason: str
    automatic: bool = False
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """``stream acme.marketing paused by alice at 2026-12-02 10:00:00 UTC: reason``."""
        how = "automatically paused" if self.automatic else "paused"
        return (
            f"{self.scope} {how} by {self.actor} at {self.paused_at:%Y-%m-%d %H:%M:%S} UTC: "
            f"{self.reason}"
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "control_id": self.control_id,
            "paused_at": self.paused_at.isoformat(),
            "actor": self.actor,
            "reason": self.reason,
            "automatic": self.automatic,
            "evidence": dict(self.evidence),
        }

    @classmethod
    def from_state(cls, key: str, raw: Mapping[str, Any]) -> Pause:
        return cls(
            scope=PauseScope.from_key(key),
            control_id=raw["control_id"],
            paused_at=datetime.fromisoformat(raw["paused_at"]),
            actor=raw["actor"],
            reason=raw["reason"],
            automatic=bool(raw.get("automatic")),
            evidence=raw.get("evidence") or {},
        )


class PauseBoard:
    """The pause state of one data directory: read it, pause, resume."""

    def __init__(self, data_dir: Path, journal: ControlJournal | None = None) -> None:
        self.journal = journal or ControlJournal(data_dir)
        self.path = self.journal.root / STATE_FILE
        self._stat: tuple[int, int, int] | None = None
        self._active: dict[str, Pause] = {}

    def active(self) -> dict[str, Pause]:
        """Active pauses by scope key; re-reads the state file only when it changed."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stat, self._active = None, {}
            return {}
        stat = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stat != self._stat:
            raw = json.loads(self.path.read_bytes())
            self._active = {key: Pause.from_state(key, value) for key, value in raw.items()}
            self._stat = stat
        return self._active

    def holding(
        self,
        workspace: str,
        stream: str | None = None,
        campaign: str | None = None,
        identity: str | None = None,
        account: str | None = None,
        *,
        levels: Iterable[PauseLevel] = tuple(PauseLevel),
    ) -> Pause | None:
        """The widest active pause (of ``levels``) that holds such a message, if any."""
        wanted = set(levels)
        found = [
            p
            for p in self.active().values()
            if p.scope.level in wanted
            and p.scope.covers(workspace, stream, campaign, identity, account)
        ]
        return min(
            found, key=lambda p: (list(PauseLevel).index(p.scope.level), p.paused_at), default=None
        )

    def pause(
        self,
        scope: PauseScope,
        *,
        actor: str,
        reason: str,
        config_hash: str,
        automatic: bool = False,
        evidence: Mapping[str, Any] | None = None,
    ) -> tuple[Pause, bool]:
        """Pause ``scope``; return the pause and whether it is new (an already paused scope
        keeps its first pause and nothing is recorded)."""
        if not reason.strip():
            raise PauseError(f"pausing {scope} needs a reason")
        with self.journal.locked():
            state = self._read_locked()
            if scope.key in state:
                return state[scope.key], False
            record = ControlRecord(
                kind=ControlKind.PAUSE,
                workspace=scope.workspace,
                actor=actor,
                reason=reason,
                body={
                    "scope": scope.key,
                    "automatic": automatic,
                    "evidence": dict(evidence or {}),
                    "config_hash": config_hash,
                },
            )
            self.journal.append(record)
            pause = Pause(
                scope=scope,
                control_id=record.control_id,
                paused_at=record.recorded_at,
                actor=actor,
                reason=reason,
                automatic=automatic,
                evidence=dict(evidence or {}),
            )
            state[scope.key] = pause
            self._write_locked(state)
            return pause, True

    def resume(
        self, scope: PauseScope, *, actor: str, reason: str, config_hash: str, by_person: bool
    ) -> Pause:
        """Lift the pause of ``scope`` and return it.

        Refused without a reason, for a scope that is not paused, and for an automatic
        pause unless ``by_person`` (a person, not a sensor or schedule, asked for it).
        """
        if not reason.strip():
            raise PauseError(f"resuming {scope} needs a reason")
        with self.journal.locked():
            state = self._read_locked()
            pause = state.get(scope.key)
            if pause is None:
                paused = ", ".join(sorted(state)) or "none"
                raise PauseError(f"{scope} is not paused (paused scopes: {paused})")
            if pause.automatic and not by_person:
                raise PauseError(
                    f"{pause.describe()}; an automatic pause is resumed only by a person, "
                    "with a reason (mailers resume ... --reason ...)"
                )
            self.journal.append(
                ControlRecord(
                    kind=ControlKind.RESUME,
                    workspace=scope.workspace,
                    actor=actor,
                    reason=reason,
                    body={
                        "scope": scope.key,
                        "resumes": pause.control_id,
                        "automatic": pause.automatic,
                        "config_hash": config_hash,
                    },
                )
            )
            del state[scope.key]
            self._write_locked(state)
            return pause

    def restore(self, warehouse: Warehouse) -> None:
        """Rebuild a lost state file from ``mailers.pauses`` (and the pending records).

        The state file is a cache of what the records say; when it is missing (a new data
        directory beside a warehouse that has pauses) the warehouse's history decides.
        """
        if self.path.exists():
            return
        table = warehouse.relation(MAILERS_SCHEMA, PAUSES_TABLE)
        rows = warehouse.query(
            f"select * from {table} order by recorded_at, control_id"
        ).to_pylist()
        with self.journal.locked():
            if self.path.exists():
                return
            state: dict[str, Pause] = {}
            events = [(r["recorded_at"], r["action"], r["scope"], r) for r in rows] + [
                (rec.recorded_at, str(rec.kind), rec.body["scope"], _row(rec))
                for rec in self.journal.pending()
                if rec.kind in (ControlKind.PAUSE, ControlKind.RESUME)
            ]
            for _, action, key, row in sorted(events, key=lambda e: (e[0], e[3]["control_id"])):
                if action == ControlKind.RESUME:
                    state.pop(key, None)
                elif key not in state:
                    state[key] = Pause(
                        scope=PauseScope.from_key(key),
                        control_id=row["control_id"],
                        paused_at=row["recorded_at"],
                        actor=row["actor"],
                        reason=row["reason"],
                        automatic=bool(row["automatic"]),
                        evidence=json.loads(row["evidence"] or "{}"),
                    )
            if state:
                self._write_locked(state)

    def _read_locked(self) -> dict[str, Pause]:
        self._stat = None  # always re-read under the lock
        return dict(self.active())

    def _write_locked(self, state: Mapping[str, Pause]) -> None:
        self.journal.root.mkdir(parents=True, exist_ok=True)
        data = {key: pause.to_state() for key, pause in sorted(state.items())}
        write_durably(self.path, json.dumps(data, indent=2, sort_keys=True).encode())


PAUSES_SCHEMA = pa.schema(
    [
        pa.field("control_id", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("workspace", pa.string(), nullable=False),
        pa.field("scope", pa.string(), nullable=False),
        pa.field("scope_level", pa.string(), nullable=False),
        pa.field("scope_name", pa.string()),
        pa.field("actor", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("automatic", pa.bool_(), nullable=False),
        pa.field("evidence", pa.string()),
        pa.field("resumes", pa.string()),
        pa.field("recorded_at", pa.timestamp("us"), nullable=False),
        pa.field("loaded_at", pa.timestamp("us"), nullable=False),
    ]
)
"""Columns of ``mailers.pauses``: one row per pause or resume, appended, never updated;
``evidence`` is JSON text (a tripped rule's numbers and query), ``resumes`` the
``control_id`` of the pause a resume lifted."""


def _row(record: ControlRecord) -> dict[str, Any]:
    scope = PauseScope.from_key(record.body["scope"])
    return {
        "control_id": record.control_id,
        "action": str(record.kind),
        "workspace": record.workspace,
        "scope": scope.key,
        "scope_level": str(scope.level),
        "scope_name": scope.name,
        "actor": record.actor,
        "reason": record.reason,
        "automatic": bool(record.body.get("automatic")),
        "evidence": json.dumps(record.body.get("evidence") or {}, sort_keys=True, default=str),
        "resumes": record.body.get("resumes"),
        "recorded_at": record.recorded_at,
        "loaded_at": utcnow(),
    }


def _audit(record: ControlRecord) -> AuditRecord:
    scope = PauseScope.from_key(record.body["scope"])
    automatic = bool(record.body.get("automatic"))
    if record.kind is ControlKind.PAUSE:
        action = AuditAction.AUTO_PAUSE if automatic else AuditAction.PAUSE
        before, after = {"paused": False}, {"paused": True}
    else:
        action = AuditAction.RESUME
        before, after = {"paused": True, "automatic": automatic}, {"paused": False}
    return AuditRecord(
        run_id=f"control:{record.control_id}",
        actor=record.actor,
        action=action,
        config_hash=str(record.body.get("config_hash") or ""),
        detail={"control_id": record.control_id, "evidence": record.body.get("evidence") or {}},
        workspace=record.workspace,
        stream=scope.name if scope.level is PauseLevel.STREAM else None,
        campaign=scope.name if scope.level is PauseLevel.CAMPAIGN else None,
        scope=str(scope),
        reason=record.reason,
        before=before,
        after=after,
    )


def _load(warehouse: Warehouse, records: Sequence[ControlRecord]) -> Loaded:
    fresh = not_loaded(warehouse, PAUSES_TABLE, records)
    return Loaded(
        table=PAUSES_TABLE,
        rows=pa.Table.from_pylist([_row(r) for r in fresh], schema=PAUSES_SCHEMA),
        audit=[_audit(r) for r in fresh],
    )


register_loader(ControlKind.PAUSE, _load)
register_loader(ControlKind.RESUME, _load)
