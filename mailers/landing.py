"""The landing zone: provider payloads written as whole files before anything parses them.

Layout ``<landing>/<provider kind>/<account>/<name>.jsonl``, one payload per line. Files
appear atomically (written under a hidden name, then renamed), so the ingestion step and
the sensor only ever see complete files. Webhook receivers, pollers and the sandbox all
land here; only ingestion reads it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from mailers.clock import now


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a hidden temporary name and rename, so readers see whole files or none."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def land(landing_dir: Path, kind: str, account: str, payloads: Sequence[bytes]) -> Path | None:
    """Land payloads (one JSON document each, no newlines inside) as one new file."""
    if not payloads:
        return None
    folder = landing_dir / kind / account
    folder.mkdir(parents=True, exist_ok=True)
    for payload in payloads:
        if b"\n" in payload.rstrip(b"\n"):
            raise ValueError("a landed payload must be a single line of JSON")
    name = f"{now():%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.jsonl"
    path = folder / name
    write_atomic(path, b"".join(p.rstrip(b"\n") + b"\n" for p in payloads))
    return path


def cursor_path(landing_dir: Path, kind: str, account: str) -> Path:
    """Where the events-API cursor of one account is stored."""
    return landing_dir / kind / account / ".poll-cursor"


def read_cursor(landing_dir: Path, kind: str, account: str) -> str | None:
    """The events-API cursor a poller stored for one account, if any."""
    path = cursor_path(landing_dir, kind, account)
    return path.read_text() if path.exists() else None


def write_cursor(landing_dir: Path, kind: str, account: str, cursor: str) -> None:
    """Store the cursor after the payloads it covers have landed (re-polling is harmless:
    ingestion drops event ids it has seen)."""
    path = cursor_path(landing_dir, kind, account)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, cursor.encode())
