"""Landing in S3 (``serve.landing.kind: s3``): local segments first, then whole objects.

The service answers only after the local fsync, as with local landing: group commits go
to :class:`~adapters.serve.segments.LocalSegments` in the spool directory
(``serve.landing.spool_dir``). Each closed segment is uploaded whole, by one
``PutObject`` (an object is visible complete or not at all, never in part), as
``<prefix>/<kind>/<account>/<stamp>-<segment name>``, where the stamp is the upload's
start (so keys sort by upload time within a folder: what the mirror's ``StartAfter``
relies on, :mod:`adapters.serve.s3_mirror`). The local copy is removed only after the PUT
returned; a failed upload leaves it for the next pass (every ``retry_seconds``, or the
next close). An upload that returned more than half of ``mirror_overlap_seconds`` after
its stamp is redone under a fresh key, so a slow upload can never fall behind a mirror's
listing window (the late copy is a duplicate ingestion drops by event id).

Uploads run on a thread of their own, so a slow or unreachable S3 never holds up
acknowledgements. Several processes may share a spool: an upload holds an ``flock`` on
its segment. boto3 is imported only here and in the mirror, when first used.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from adapters.serve.segments import Key, LocalSegments, fsync_dir
from mailers.clock import now
from mailers.config import Settings
from mailers.serve_config import LandingStoreConfig, ServeConfig

log = logging.getLogger(__name__)

STAMP_FORMAT = "%Y%m%dT%H%M%S%f"
"""An object name's leading stamp (UTC, 21 characters: ``20260504T100000000000``), sortable as
text."""


def s3_client(config: LandingStoreConfig) -> Any:
    """A boto3 S3 client: explicit timeouts, bounded retries, credentials from the environment.

    boto3's own chain finds the credentials (``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance role); the config holds none.
    """
    try:
        import boto3
        from botocore.config import Config
    except ImportError as err:  # pragma: no cover - boto3 ships with the project
        raise RuntimeError("S3 landing needs boto3: pip install 'mailers[ses]'") from err
    settings = Config(
        region_name=config.region,
        connect_timeout=config.connect_timeout_seconds,
        read_timeout=config.read_timeout_seconds,
        retries={"mode": "standard", "total_max_attempts": config.max_attempts},
        user_agent_extra="mailers-landing",
    )
    return boto3.session.Session().client("s3", endpoint_url=config.endpoint_url, config=settings)


def spool_dir(settings: Settings, config: LandingStoreConfig | None = None) -> Path:
    """Where the service's segments wait for their upload."""
    return settings.data_dir / (config or settings.config.serve.landing).spool_dir


def object_key(config: LandingStoreConfig, kind: str, account: str, name: str) -> str:
    """The key of one object: ``<prefix>/<kind>/<account>/<name>``."""
    return "/".join(p for p in (config.prefix.strip("/"), kind, account, name) if p)


class S3Segments:
    """Group commits fsync'd in a local spool; closed segments uploaded, then removed."""

    def __init__(
        self,
        config: LandingStoreConfig,
        spool: Path,
        serve: ServeConfig | None = None,
        *,
        client: Any | None = None,
        background: bool = True,
    ) -> None:
        if config.bucket is None:
            raise ValueError("serve.landing.kind: s3 needs serve.landing.bucket")
        serve = serve or ServeConfig()
        self.config = config
        self.bucket = config.bucket
        self.spool = spool
        self.local = LocalSegments(
            spool,
            max_bytes=serve.segment_max_bytes,
            max_lines=serve.segment_max_lines,
            max_age_seconds=serve.segment_max_age_seconds,
            on_close=self._wake_uploader,
        )
        self._client = client or s3_client(config)
        self.fsyncs = 0
        """fsync calls of the local spool (the durability point of an acknowledgement)."""
        self.uploaded = 0
        """Segments uploaded and removed from the spool."""
        self.upload_failures = 0
        self._redo_after = config.mirror_overlap_seconds / 2
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="mailers-s3-upload", daemon=True)
            self._thread.start()

    def commit(self, groups: Mapping[Key, Sequence[bytes]]) -> dict[Key, Exception]:
        """Append and fsync locally (:meth:`LocalSegments.commit`): durable on return."""
        failed = self.local.commit(groups)
        self.fsyncs = self.local.fsyncs
        return failed

    def rotate_due(self) -> int:
        closed = self.local.rotate_due()
        self.fsyncs = self.local.fsyncs
        return closed

    def recover(self) -> int:
        """Close dead processes' spool segments; the uploader then sends them."""
        recovered = self.local.recover()
        self._wake_uploader()
        return recovered

    def check_writable(self) -> None:
        """The spool must take a file: S3 being down only delays uploads."""
        self.local.check_writable()

    def close(self) -> None:
        """Close the open segments, stop the uploader, then try one last upload pass."""
        self.local.close()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.upload_closed()

    def pending(self) -> list[Path]:
        """Closed segments in the spool not uploaded yet, oldest name first."""
        if not self.spool.is_dir():
            return []
        return sorted(self.spool.glob("*/*/*.jsonl"), key=lambda p: p.name)

    def upload_closed(self) -> int:
        """Upload every closed segment of the spool and remove it; how many.

        Stops at the first failure (S3 is likely unreachable for the rest too) and leaves
        that segment and the later ones in place for the next pass.
        """
        uploaded = 0
        with self._lock:
            for path in self.pending():
                try:
                    uploaded += self._upload(path)
                except Exception as err:  # botocore's errors: the segment stays in the spool
                    self.upload_failures += 1
                    log.warning("could not upload landing segment %s to S3: %s", path, err)
                    break
        self.uploaded += uploaded
        return uploaded

    def _upload(self, path: Path) -> int:
        kind, account = path.parent.parent.name, path.parent.name
        with _claimed(path) as fd:
            if fd is None:
                return 0  # uploaded by another process meanwhile, or uploading there now
            with open(fd, "rb", closefd=False) as handle:
                body = handle.read()
            started = now()
            key = object_key(self.config, kind, account, f"{started:{STAMP_FORMAT}}-{path.name}")
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/x-ndjson"
            )
            took = (now() - started).total_seconds()
            if took > self._redo_after:
                log.warning("upload of %s took %.0f s: uploading it again", key, took)
                self._wake_uploader()
                return 0
            path.unlink()
        fsync_dir(path.parent)
        return 1

    def _wake_uploader(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.retry_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.upload_closed()


@contextlib.contextmanager
def _claimed(path: Path) -> Iterator[int | None]:
    """An open descriptor of ``path`` holding its ``flock``; None when it is gone or held."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EAGAIN, errno.EACCES):
                yield None
                return
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        yield fd if same else None
    finally:
        os.close(fd)


def open_s3_store(settings: Settings, serve: ServeConfig) -> S3Segments:
    """The S3 store of ``mailers serve``, with its uploader thread running."""
    return S3Segments(serve.landing, spool_dir(settings, serve.landing), serve)
