"""Small JSON notes about campaign windows, one file per window, that sensors read.

A running send holds the DuckDB warehouse, so a Dagster sensor that must decide whether to
launch a window's next run (deferred messages now eligible, paused messages now resumed)
reads a note the last send of the window left in the data directory instead. Each note is
replaced atomically; an unreadable one is skipped (the next send of its window rewrites it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from mailers.landing import write_atomic

T = TypeVar("T")


class WindowNotes:
    """The notes in one folder: ``<workspace>__<campaign>__<window>.json``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, workspace: str, campaign: str, window: str) -> Path:
        safe = window.replace(":", "")
        return self.folder / f"{workspace}__{campaign}__{safe}.json"

    def write(
        self, workspace: str, campaign: str, window: str, note: Mapping[str, Any] | None
    ) -> None:
        """Replace the window's note with ``note``, or remove it (``None``)."""
        path = self.path(workspace, campaign, window)
        if note is None:
            path.unlink(missing_ok=True)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(dict(note), sort_keys=True).encode())

    def read(self, parse: Callable[[dict[str, Any]], T]) -> list[T]:
        """Every note that reads and parses, in file name order."""
        found = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            try:
                found.append(parse(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found
