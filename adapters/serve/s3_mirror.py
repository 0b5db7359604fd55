"""Mirror S3 landing into the local landing dir, so ingestion reads it like any landing.

:func:`mirror_landing` copies each object ``<prefix>/<kind>/<account>/<name>.jsonl`` to
``<landing>/<kind>/<account>/<name>.jsonl``, atomically (a hidden ``.<name>.partial``,
fsync'd, renamed, the directory fsync'd). The load manifest stays the one record of what
is loaded: a file mirrored again (after a crash between placing it and noting it) keeps
its name, and ingestion skips a name it loaded before.

Listing never walks the whole prefix: object names start with their upload's stamp
(:mod:`adapters.serve.s3_store`), so each account's folder is listed with ``StartAfter``
set ``mirror_overlap_seconds`` before the newest name mirrored there. The names mirrored
within that window are kept in ``<landing>/<kind>/<account>/.s3-mirror.json`` (so the
overlap is not fetched again, and the file stays as small as the window). The folders
themselves are found by delimiter listings (one per provider kind). Each page's new
objects are fetched :data:`MIRROR_THREADS` at a time. One mirror runs at a time per
landing dir (an ``flock`` on ``<landing>/.s3-mirror.lock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.serve.s3_store import STAMP_FORMAT, object_key, s3_client
from adapters.serve.segments import fsync_dir, write_all
from mailers.config import Settings
from mailers.serve_config import LandingStoreConfig

log = logging.getLogger(__name__)

MIRROR_STATE = ".s3-mirror.json"
MIRROR_LOCK = ".s3-mirror.lock"
MIRROR_THREADS = 8
"""Objects fetched at once (botocore's default pool holds 10 connections)."""

_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NAME = re.compile(r"^(\d{8}T\d{12})-[A-Za-z0-9][A-Za-z0-9_.-]*\.jsonl$")


def mirror_landing(
    settings: Settings, client: Any | None = None, *, max_objects: int | None = None
) -> int:
    """Copy the S3 objects not mirrored yet into the landing dir; how many were placed.

    Does nothing (0) unless ``serve.landing.kind`` is ``s3``. ``max_objects`` bounds one
    call (the sensor's); the next call goes on where it stopped. An object whose key is
    not of the landing layout is left alone with a warning naming it. Raises botocore's
    errors when S3 cannot be read: nothing is lost, the next call lists again.
    """
    config = settings.config.serve.landing
    if config.kind != "s3":
        return 0
    client = client or s3_client(config)
    landing = settings.landing_dir
    landing.mkdir(parents=True, exist_ok=True)
    placed = 0
    with _locked(landing / MIRROR_LOCK):
        for kind in _children(client, config, object_key(config, "", "", "")):
            for account in _children(client, config, object_key(config, kind, "", "")):
                budget = None if max_objects is None else max_objects - placed
                if budget is not None and budget <= 0:
                    return placed
                placed += _mirror_folder(client, config, landing, kind, account, budget)
    return placed


def _children(client: Any, config: LandingStoreConfig, parent: str) -> Iterator[str]:
    """The folder names directly under ``parent`` (a delimiter listing: no objects read)."""
    prefix = f"{parent}/" if parent else ""
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=config.bucket, Prefix=prefix, Delimiter="/"
    )
    for page in pages:
        for common in page.get("CommonPrefixes", []):
            name = common["Prefix"][len(prefix) :].rstrip("/")
            if _PART.match(name):
                yield name
            else:  # never a path outside the landing dir, never a hidden name
                log.warning("ignoring S3 folder %r: not a kind or account", common["Prefix"])


def _mirror_folder(
    client: Any,
    config: LandingStoreConfig,
    landing: Path,
    kind: str,
    account: str,
    budget: int | None,
) -> int:
    folder = landing / kind / account
    base = object_key(config, kind, account, "") + "/"
    recent = _read_state(folder)
    listing: dict[str, Any] = {"Bucket": config.bucket, "Prefix": base}
    if recent:
        newest = _stamp(max(recent)) - timedelta(seconds=config.mirror_overlap_seconds)
        listing["StartAfter"] = f"{base}{newest:{STAMP_FORMAT}}"
    placed = 0
    noted = len(recent)
    try:
        for page in client.get_paginator("list_objects_v2").paginate(**listing):
            fresh: list[str] = []
            for entry in page.get("Contents", []):
                name = entry["Key"][len(base) :]
                if name in recent:
                    continue
                if not _NAME.match(name):
                    log.warning("ignoring S3 object %r: not a landing segment name", entry["Key"])
                    continue
                fresh.append(name)
            if budget is not None:
                fresh = fresh[: budget - placed]
            placed += _place_all(client, config, base, folder, fresh, recent)
            if budget is not None and placed >= budget:
                break
    finally:
        if len(recent) != noted:
            _write_state(folder, recent, config.mirror_overlap_seconds)
    return placed


def _place_all(
    client: Any,
    config: LandingStoreConfig,
    base: str,
    folder: Path,
    names: list[str],
    recent: set[str],
) -> int:
    """Fetch and place ``names`` (concurrently: a GET is mostly waiting) and note each one
    placed, or found placed by a mirror that crashed before noting it; how many were
    fetched. Raises the first failure once the others are placed and noted."""
    missing = [name for name in names if not (folder / name).exists()]
    recent.update(set(names) - set(missing))
    if not missing:
        return 0
    with ThreadPoolExecutor(max_workers=min(MIRROR_THREADS, len(missing))) as pool:
        fetches = {
            name: pool.submit(_place, client, config, base + name, folder / name)
            for name in missing
        }
    failures = [error for f in fetches.values() if (error := f.exception()) is not None]
    placed = [name for name, f in fetches.items() if f.exception() is None]
    recent.update(placed)
    if failures:
        raise failures[0]
    return len(placed)


def _place(client: Any, config: LandingStoreConfig, key: str, target: Path) -> None:
    body = client.get_object(Bucket=config.bucket, Key=key)["Body"].read()
    _write_durably(target, body)


def _write_durably(target: Path, data: bytes) -> None:
    """Write ``data`` to ``.<name>.partial``, fsync, rename to ``target``, fsync the dir."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, target)
    fsync_dir(target.parent)


def _stamp(name: str) -> datetime:
    return datetime.strptime(name[:21], STAMP_FORMAT)


def _read_state(folder: Path) -> set[str]:
    path = folder / MIRROR_STATE
    if not path.exists():
        return set()
    try:
        names = json.loads(path.read_text())["recent"]
    except (ValueError, KeyError, TypeError) as err:
        # Listing the folder from its start again loses nothing: names seen are skipped.
        log.warning("ignoring unreadable S3 mirror state %s: %s", path, err)
        return set()
    return {name for name in names if isinstance(name, str) and _NAME.match(name)}


def _write_state(folder: Path, recent: set[str], overlap_seconds: float) -> None:
    """Keep the names the next listing can return again (within the overlap window)."""
    if not recent:
        return
    oldest = _stamp(max(recent)) - timedelta(seconds=overlap_seconds)
    recent.intersection_update({name for name in recent if _stamp(name) >= oldest})
    document = json.dumps({"recent": sorted(recent)}, separators=(",", ":"))
    _write_durably(folder / MIRROR_STATE, document.encode())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
