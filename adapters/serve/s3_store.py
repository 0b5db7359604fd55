"""Landing in S3 (``serve.landing.kind: s3``), and mirroring it into the local landing dir.

S3 objects cannot be appended to, so each group commit of one (kind, account) is one
closed segment: the object ``<prefix>/<kind>/<account>/<name>.jsonl``, durable when its
PUT returns. :func:`mirror_landing` copies closed objects into
``<landing>/<kind>/<account>/<name>.jsonl`` for ingestion, each object exactly once (a
hard link from a private temporary file claims the name atomically, so concurrent
mirrors never both place it). boto3 is imported only here, when first used.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adapters.serve.segments import Key, fsync_dir, segment_name, write_all
from mailers.config import Settings
from mailers.serve_config import LandingStoreConfig

_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def s3_client(config: LandingStoreConfig) -> Any:
    """A boto3 S3 client for the configured bucket (credentials from the environment)."""
    try:
        import boto3
    except ImportError as err:  # pragma: no cover - boto3 ships with the project
        raise RuntimeError("S3 landing needs boto3: pip install 'mailers[ses]'") from err
    return boto3.client("s3", region_name=config.region, endpoint_url=config.endpoint_url)


class S3Segments:
    """Group commits as S3 objects, one per (kind, account) per commit."""

    def __init__(self, config: LandingStoreConfig, client: Any | None = None) -> None:
        assert config.bucket is not None
        self.bucket = config.bucket
        self.prefix = config.prefix.strip("/")
        self._client = client or s3_client(config)
        self.fsyncs = 0
        """PUTs made: one per (kind, account) per group commit."""

    def key_for(self, kind: str, account: str, name: str) -> str:
        return "/".join(p for p in (self.prefix, kind, account, name) if p)

    def commit(self, groups: Mapping[Key, Sequence[bytes]]) -> dict[Key, Exception]:
        failed: dict[Key, Exception] = {}
        for (kind, account), lines in groups.items():
            try:
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=self.key_for(kind, account, segment_name()),
                    Body=b"".join(lines),
                    ContentType="application/x-ndjson",
                )
                self.fsyncs += 1
            except Exception as err:  # botocore's errors: the group is not durable
                failed[(kind, account)] = err
        return failed

    def rotate_due(self) -> int:
        return 0  # every object is a closed segment

    def recover(self) -> int:
        return 0  # a PUT that did not return wrote nothing we acknowledged

    def check_writable(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as err:
            raise OSError(f"S3 bucket {self.bucket!r} is not reachable: {err}") from err

    def close(self) -> None:
        pass


def mirror_landing(settings: Settings, client: Any | None = None) -> int:
    """Copy closed S3 segments not yet in the local landing dir there; how many were new.

    Call before ingestion when ``serve.landing.kind`` is ``s3`` (it does nothing, and
    returns 0, for local landing). Each object appears atomically under its own name;
    an object mirrored before is not fetched again.
    """
    config = settings.config.serve.landing
    if config.kind != "s3":
        return 0
    store = S3Segments(config, client)
    landing = settings.landing_dir
    prefix = f"{store.prefix}/" if store.prefix else ""
    placed = 0
    pages = store._client.get_paginator("list_objects_v2").paginate(
        Bucket=store.bucket, Prefix=prefix
    )
    for page in pages:
        for entry in page.get("Contents", []):
            parts = entry["Key"][len(prefix) :].split("/")
            if len(parts) != 3 or not parts[2].endswith(".jsonl"):
                continue
            if not all(_PART.match(part) for part in parts):
                continue  # never a path outside the landing dir, never a hidden name
            target = landing.joinpath(*parts)
            if target.exists():
                continue
            placed += _place(store, entry["Key"], target)
    return placed


def _place(store: S3Segments, key: str, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    body = store._client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, target)
    except FileExistsError:
        return 0  # another mirror placed it first
    finally:
        temporary.unlink()
    fsync_dir(target.parent)
    return 1
