"""Append-only segment files in the local landing zone, fsync'd per group commit.

One open segment per (provider kind, account) per process, under a hidden name
``<landing>/<kind>/<account>/.<name>.jsonl.partial``; each group commit appends whole
lines and fsyncs once, and a segment is closed by renaming it to ``<name>.jsonl`` (then
fsyncing the directory) when it reaches a size, a line count or an age. Ingestion reads
only closed segments, so it sees the landing-zone contract of :mod:`mailers.landing`.

The owning process holds an ``flock`` on each open segment. :func:`recover` closes the
segments of processes that died (``kill -9``): a partial nobody holds is cut back to its
last whole line and renamed. Several live processes never take each other's segments.
A segment is created under ``.<name>.jsonl.partial.new``, locked, then renamed to its
partial name, so a partial is never visible unlocked while its owner lives.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mailers.clock import epoch, now

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(provider kind, account)."""

_SEGMENT = re.compile(r"^\.(\d{8}T\d{12}-s\d+-\d+-[0-9a-f]{8}\.jsonl)\.partial(\.new)?$")
_sequence = itertools.count()


def segment_name() -> str:
    """A new segment's file name: sortable by time, unique across processes."""
    return f"{now():%Y%m%dT%H%M%S%f}-s{os.getpid()}-{next(_sequence)}-{secrets.token_hex(4)}.jsonl"


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new name in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Segment:
    fd: int
    folder: Path
    name: str
    opened_at: float
    size: int = 0
    lines: int = 0

    @property
    def partial(self) -> Path:
        return self.folder / f".{self.name}.partial"


class LocalSegments:
    """The open segments of one process in ``landing_dir`` (used by one writer thread)."""

    def __init__(
        self,
        landing_dir: Path,
        *,
        max_bytes: int = 16 << 20,
        max_lines: int = 50_000,
        max_age_seconds: float = 5.0,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.landing_dir = landing_dir
        self.max_bytes = max_bytes
        self.max_lines = max_lines
        self.max_age_seconds = max_age_seconds
        self.on_close = on_close
        """Called after a segment was closed (the S3 store wakes its uploader)."""
        self._open: dict[Key, _Segment] = {}
        self.fsyncs = 0
        """fsync calls made for commits (files and directories): group commit keeps it low."""

    def commit(self, groups: Mapping[Key, Sequence[bytes]]) -> dict[Key, Exception]:
        """Append each group's lines to its segment and fsync; the failures by key.

        Lines of a key that did not fail are durable on return (and, with
        ``max_age_seconds`` 0, in a closed segment). A failed key's segment is cut back to
        what was durable before, closed, and a new one is opened next time.
        """
        failed: dict[Key, Exception] = {}
        written: list[tuple[Key, _Segment]] = []
        for key, lines in groups.items():
            segment = self._open.get(key)
            try:
                if segment is None:
                    segment = self._open[key] = self._create(key)
                write_all(segment.fd, b"".join(lines))
                written.append((key, segment))
            except OSError as err:
                failed[key] = err
                if segment is not None:
                    self._abandon(key, segment)
        for key, segment in written:
            try:
                os.fsync(segment.fd)
                self.fsyncs += 1
            except OSError as err:
                failed[key] = err
                self._abandon(key, segment)
                continue
            segment.size = os.lseek(segment.fd, 0, os.SEEK_END)
            segment.lines += len(groups[key])
            # Age 0 closes here, before the caller acknowledges: what was acknowledged is
            # then already visible to ingestion (closing on the next tick raced the answer).
            full = segment.size >= self.max_bytes or segment.lines >= self.max_lines
            if full or self.max_age_seconds == 0:
                self._close(key)
        return failed

    def rotate_due(self) -> int:
        """Close the segments at least ``max_age_seconds`` old; how many were closed."""
        moment = epoch()
        due = [k for k, s in self._open.items() if moment - s.opened_at >= self.max_age_seconds]
        for key in due:
            self._close(key)
        return len(due)

    def close(self) -> None:
        """Close every open segment (at shutdown)."""
        for key in list(self._open):
            self._close(key)

    def recover(self) -> int:
        """Close the segments dead processes left (:func:`recover`)."""
        return recover(self.landing_dir) if self.landing_dir.is_dir() else 0

    def check_writable(self) -> None:
        """Raise ``OSError`` unless a file can be created, fsync'd and removed here."""
        self.landing_dir.mkdir(parents=True, exist_ok=True)
        probe = self.landing_dir / f".ready-{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)

    def _create(self, key: Key) -> _Segment:
        kind, account = key
        folder = self.landing_dir / kind / account
        folder.mkdir(parents=True, exist_ok=True)
        name = segment_name()
        staging = folder / f".{name}.partial.new"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            segment = _Segment(fd=fd, folder=folder, name=name, opened_at=epoch())
            os.rename(staging, segment.partial)
            # The new name must survive a crash before the first acknowledgement does.
            fsync_dir(folder)
            self.fsyncs += 1
        except OSError:
            os.close(fd)
            staging.unlink(missing_ok=True)
            raise
        return segment

    def _close(self, key: Key) -> None:
        segment = self._open.pop(key)
        try:
            if segment.lines:
                os.rename(segment.partial, segment.folder / segment.name)
            else:
                segment.partial.unlink()
            fsync_dir(segment.folder)
        except OSError as err:  # left for recover(): its lines are durable in the partial
            log.warning("could not close segment %s: %s", segment.partial, err)
        else:
            if segment.lines and self.on_close is not None:
                self.on_close()
        finally:
            os.close(segment.fd)

    def _abandon(self, key: Key, segment: _Segment) -> None:
        """After a failed write or fsync: drop what was not durable, close the rest."""
        # If this fails too, recover() cuts a torn last line; whole lines are kept.
        with contextlib.suppress(OSError):
            os.ftruncate(segment.fd, segment.size)
        if self._open.get(key) is segment:
            self._close(key)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def recover(landing_dir: Path) -> int:
    """Close the segments of dead processes: cut a torn last line, rename; how many.

    A segment whose owner still holds its lock is left alone.
    """
    recovered = 0
    for path in sorted(landing_dir.glob("*/*/.*.partial*")):
        match = _SEGMENT.match(path.name)
        if match is None:
            continue
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # closed by its owner meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in (errno.EAGAIN, errno.EACCES):
                    continue  # a live process owns it
                raise
            if not os.path.exists(path):
                continue  # renamed by its owner between our open and lock
            if match.group(2):  # never renamed to its partial name: nothing was acknowledged
                path.unlink()
                continue
            data = os.pread(fd, os.fstat(fd).st_size, 0)
            keep = data.rfind(b"\n") + 1
            if keep:
                os.ftruncate(fd, keep)
                os.fsync(fd)
                os.rename(path, path.with_name(match.group(1)))
                recovered += 1
                log.info("recovered segment %s (%d bytes)", path.with_name(match.group(1)), keep)
            else:
                path.unlink()
            fsync_dir(path.parent)
        finally:
            os.close(fd)
    return recovered
