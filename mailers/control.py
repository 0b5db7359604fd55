"""Control records: operator and automatic actions written where a running send sees them.

On DuckDB a running send holds the warehouse file's only write lock, yet ``pause``,
``resume`` and ``suppression add`` must take effect during that send. So every control
action is first a small JSON file in ``<data_dir>/control/pending/``, written atomically
and fsync'd (a record that was acknowledged survives a crash), which any process can write
and a running send reads before every batch. Whoever holds the warehouse next loads the
pending records into the warehouse tables (:func:`load_control`), exactly once by
``control_id``, then moves the files to ``control/loaded/<date>/``, so reading what is
pending never costs more as history grows.

Writers that must see each other (a pause and a resume of one scope) serialize on
:meth:`ControlJournal.locked`, an advisory lock on ``control/.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pyarrow as pa

from mailers.audit import AuditRecord, append_audit
from mailers.clock import stamp
from mailers.errors import MailersError
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

CONTROL_DIR = "control"


class ControlKind(StrEnum):
    """What a control record asks for."""

    PAUSE = "pause"
    RESUME = "resume"
    SUPPRESSION_ADD = "suppression_add"
    SUPPRESSION_REMOVE = "suppression_remove"


@dataclass(frozen=True)
class ControlRecord:
    """One control action: who asked for what, when, why; ``body`` holds the kind's fields."""

    kind: ControlKind
    workspace: str
    actor: str
    reason: str
    body: Mapping[str, Any] = field(default_factory=dict)
    control_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    recorded_at: datetime = field(default_factory=stamp)
    """UTC (naive), strictly increasing within a process."""

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "control_id": self.control_id,
                "kind": str(self.kind),
                "workspace": self.workspace,
                "actor": self.actor,
                "reason": self.reason,
                "recorded_at": self.recorded_at.isoformat(),
                "body": self.body,
            },
            sort_keys=True,
            default=str,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, source: Path) -> ControlRecord:
        try:
            raw = json.loads(data)
            return cls(
                kind=ControlKind(raw["kind"]),
                workspace=raw["workspace"],
                actor=raw["actor"],
                reason=raw["reason"],
                body=raw.get("body") or {},
                control_id=raw["control_id"],
                recorded_at=datetime.fromisoformat(raw["recorded_at"]),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise MailersError(f"control record {source} cannot be read: {err}") from err


class ControlJournal:
    """The control records of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / CONTROL_DIR
        self.pending_dir = self.root / "pending"
        self.loaded_dir = self.root / "loaded"
        self._seen: dict[str, ControlRecord] = {}

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the journal's advisory lock (between writers that read state first)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def append(self, record: ControlRecord) -> Path:
        """Write ``record`` durably (fsync'd file and directory) and return its path."""
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        name = f"{record.recorded_at:%Y%m%dT%H%M%S%f}-{record.control_id}.json"
        path = self.pending_dir / name
        write_durably(path, record.to_json())
        return path

    def pending(self) -> list[ControlRecord]:
        """Records not loaded into the warehouse yet, oldest first.

        Files read once are remembered by name, so calling this before every batch costs a
        directory listing of the (few) pending records.
        """
        if not self.pending_dir.is_dir():
            return []
        names = sorted(p.name for p in self.pending_dir.iterdir() if p.suffix == ".json")
        for name in names:
            if name not in self._seen:
                path = self.pending_dir / name
                try:
                    data = path.read_bytes()
                except FileNotFoundError:  # loaded and moved away meanwhile
                    continue
                self._seen[name] = ControlRecord.from_json(data, path)
        return [self._seen[name] for name in names if name in self._seen]

    def archive(self, records: Sequence[ControlRecord]) -> None:
        """Move loaded records out of ``pending``, into ``loaded/<date>/``."""
        for record in records:
            name = f"{record.recorded_at:%Y%m%dT%H%M%S%f}-{record.control_id}.json"
            source = self.pending_dir / name
            target = self.loaded_dir / f"{record.recorded_at:%Y-%m-%d}" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):  # another loader moved it already
                os.replace(source, target)
            self._seen.pop(name, None)


def write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that it is whole or absent, and on disk on return."""
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@dataclass(frozen=True)
class Loaded:
    """What loading some control records adds: rows for one owned table, and audit records."""

    table: str
    rows: pa.Table
    audit: Sequence[AuditRecord] = ()


ControlLoader = Callable[[Warehouse, Sequence[ControlRecord]], Loaded]
"""Turns the pending records of one kind into warehouse rows (those not loaded yet)."""

_LOADERS: dict[ControlKind, ControlLoader] = {}

LOADER_MODULES = ("mailers.pauses",)
"""Modules that register the loaders of the control kinds (imported before loading)."""


def register_loader(kind: ControlKind, loader: ControlLoader) -> None:
    """Say how records of ``kind`` land in the warehouse (modules owning a kind call this)."""
    _LOADERS[kind] = loader


def load_control(warehouse: Warehouse, journal: ControlJournal) -> int:
    """Load every pending control record into the warehouse, once; return how many.

    All of them land in one transaction (their rows and audit records), then the files
    are archived. A crash between the two leaves files whose ids are already in the
    warehouse: each loader leaves out ids it finds there, so they are not loaded twice.
    """
    records = journal.pending()
    if not records:
        return 0
    for module in LOADER_MODULES:
        importlib.import_module(module)
    by_kind: dict[ControlKind, list[ControlRecord]] = {}
    for record in records:
        by_kind.setdefault(record.kind, []).append(record)
    missing = sorted(str(kind) for kind in by_kind if kind not in _LOADERS)
    if missing:
        raise MailersError(
            f"no loader for control records of kind {', '.join(missing)} (in {journal.pending_dir})"
        )
    with warehouse.transaction():
        audit: list[AuditRecord] = []
        for kind, group in by_kind.items():
            loaded = _LOADERS[kind](warehouse, group)
            if loaded.rows.num_rows:
                warehouse.append(MAILERS_SCHEMA, loaded.table, loaded.rows)
            audit.extend(loaded.audit)
        append_audit(warehouse, audit)
    journal.archive(records)
    return len(records)


def not_loaded(
    warehouse: Warehouse, table: str, records: Sequence[ControlRecord]
) -> list[ControlRecord]:
    """The ``records`` whose ``control_id`` is not in ``table`` yet (looked up by id only)."""
    if not records:
        return []
    ids = pa.table({"control_id": [r.control_id for r in records]})
    with warehouse.staged(ids) as staged:
        found = warehouse.query(
            f"select control_id from {warehouse.relation(MAILERS_SCHEMA, table)} "
            f"where control_id in (select control_id from {staged})"
        )
    present = set(found["control_id"].to_pylist())
    return [r for r in records if r.control_id not in present]
