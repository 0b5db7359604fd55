"""An account's persistent SMTP sessions: each session, the pool of idle ones, and the lane
one message is sent over."""

from __future__ import annotations

import logging
import smtplib
import threading
import time
from collections.abc import Callable
from types import TracebackType

logger = logging.getLogger(__name__)

NOOP_AFTER_IDLE_SECONDS = 10.0
"""A pooled connection idle this long is checked with NOOP (RFC 5321 §4.1.1.9) before use;
a connection that went stale anyway is noticed at ``MAIL FROM`` and replaced once."""


class Connection:
    """One SMTP session (after EHLO, STARTTLS and AUTH) and its bookkeeping."""

    def __init__(self, smtp: smtplib.SMTP) -> None:
        self.smtp = smtp
        self.last_used = time.monotonic()
        self.broken = False

    def idle_seconds(self) -> float:
        return time.monotonic() - self.last_used

    def alive(self) -> bool:
        """Whether the server still answers NOOP with 250."""
        try:
            code, _ = self.smtp.noop()
        except (smtplib.SMTPException, OSError):
            return False
        return code == 250

    def reset(self) -> None:
        """Abort the transaction with RSET (RFC 5321 §4.1.1.5); broken if that fails."""
        try:
            code, _ = self.smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.broken = True
            return
        if code != 250:
            self.broken = True

    def close(self) -> None:
        """QUIT when the session is healthy (RFC 5321 §4.1.1.10), then close the socket."""
        try:
            if not self.broken and self.smtp.sock is not None:
                self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            self.smtp.close()
            self.broken = True

    def discard(self) -> None:
        """Close without QUIT: the session is out of step or gone."""
        self.broken = True
        self.close()


class Pool:
    """Idle connections of one account, reused most-recent first."""

    def __init__(self, opener: Callable[[], Connection], size: int, account: str) -> None:
        self.open = opener
        self._size = size
        self._account = account
        self._idle: list[Connection] = []
        self._lock = threading.Lock()

    def acquire(self) -> tuple[Connection, bool]:
        """A connection and whether it was reused (it may have gone stale meanwhile).

        One idle longer than :data:`NOOP_AFTER_IDLE_SECONDS` must answer NOOP, or a new
        one takes its place.
        """
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            return self.open(), False
        if conn.idle_seconds() > NOOP_AFTER_IDLE_SECONDS and not conn.alive():
            logger.debug("smtp account %r: idle session failed NOOP", self._account)
            conn.discard()
            return self.open(), False
        return conn, True

    def release(self, conn: Connection) -> None:
        if conn.broken:
            conn.close()
            return
        with self._lock:
            if len(self._idle) < self._size:
                conn.last_used = time.monotonic()
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class Lane:
    """The connection one message is sent over, back to the pool when done with.

    Entering takes a pooled connection (or opens one); :meth:`replace` puts a new one in
    place of a connection the server had closed.
    """

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self.conn: Connection | None = None
        self.reused = False

    def __enter__(self) -> Connection:
        self.conn, self.reused = self._pool.acquire()
        return self.conn

    def replace(self) -> Connection:
        """A new session instead of the current one, which is discarded."""
        if self.conn is not None:
            self.conn.discard()
            self.conn = None
        self.conn, self.reused = self._pool.open(), False
        return self.conn

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.conn is not None:
            self._pool.release(self.conn)
            self.conn = None
