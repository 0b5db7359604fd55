"""Deterministic message keys, and the hash buckets routing draws from them.

A message key identifies one message of one campaign to one recipient in one send window.
The warehouse computes the same key in SQL (see :func:`mailers.audience.message_key_sql`),
so the two must agree: ``md5`` of the parts joined by ``|``. Workspace and campaign names
cannot contain ``|`` and the window is last-but-one-free, so the join is unambiguous.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from mailers.addresses import WHITESPACE

KEY_SEPARATOR = "|"


def message_key(workspace: str, campaign: str, recipient: str, send_window: str) -> str:
    """The key of the message to ``recipient`` (case-insensitive) for one campaign window."""
    parts = (workspace, campaign, recipient.strip(WHITESPACE).lower(), send_window)
    return hashlib.md5(KEY_SEPARATOR.join(parts).encode()).hexdigest()


def bucket(key: str, salt: str = "") -> float:
    """A uniform number in [0, 1) drawn from a key; the same key always draws the same.

    ``salt`` gives independent draws from one key (routing, identity pool, sandbox events).
    """
    digest = hashlib.blake2b(f"{salt}{KEY_SEPARATOR}{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def draw(names: Sequence[str], key: str, salt: str) -> str:
    """One of ``names``, drawn uniformly from a key (the same key always draws the same)."""
    return names[int(bucket(key, salt) * len(names))]
