"""Polling providers' events APIs into the landing zone, resumable from a stored cursor.

For accounts without a public webhook endpoint. Each poll lands what it fetched as one
file and only then stores the new cursor, so a crash in between re-fetches rather than
loses events (ingestion drops event ids it has already stored).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mailers.errors import MailersError, PollFailed
from mailers.landing import cursor_path, land, read_cursor, write_cursor

Fetch = Callable[[str | None], tuple[list[bytes], str | None]]
"""Given the stored cursor (or None), return new payloads and the cursor after them."""


@dataclass(frozen=True)
class PollTarget:
    """One provider account whose events API is polled."""

    kind: str
    account: str
    fetch: Fetch


def poll_into_landing(landing_dir: Path, target: PollTarget) -> int:
    """Fetch one page of new events for an account and land it; return how many.

    A fetch that fails from a stored cursor raises :class:`PollFailed` naming the cursor
    file: a cursor gone stale (expired, or pointing at a former ``base_url``) is fixed by
    deleting it, and only the file's path tells the operator which one.
    """
    cursor = read_cursor(landing_dir, target.kind, target.account)
    try:
        payloads, next_cursor = target.fetch(cursor)
    except MailersError as err:
        if cursor is None:
            raise
        path = cursor_path(landing_dir, target.kind, target.account)
        raise PollFailed(
            f"polling {target.kind} account {target.account!r} from the cursor stored in "
            f"{path} failed: {err}; if that cursor is stale, delete {path} to poll afresh"
        ) from err
    land(landing_dir, target.kind, target.account, payloads)
    if next_cursor is not None and next_cursor != cursor:
        write_cursor(landing_dir, target.kind, target.account, next_cursor)
    return len(payloads)
