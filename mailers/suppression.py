"""The central suppression list: who must not be mailed, in which scope, and why.

One table, ``mailers.suppressions``, holds operator entries (``manual``, ``import``) and the
entries event ingestion derives from provider feedback. Which feedback suppresses, and at
which scope, is decided here once (:data:`SUPPRESSING_EVENTS`):

* a hard bounce suppresses the address everywhere (``global``): the mailbox does not exist;
* a complaint suppresses it for the workspace (brand) complained about;
* an unsubscribe suppresses it for the stream it came from, so a lifecycle unsubscribe
  never blocks a password reset on the transactional stream.

Addresses are stored and compared lower-cased.
"""

from __future__ import annotations

from enum import StrEnum

import pyarrow as pa

from mailers.events import BounceClass, EventType

SUPPRESSIONS_TABLE = "suppressions"


class SuppressionScope(StrEnum):
    """How far a suppression reaches."""

    GLOBAL = "global"
    WORKSPACE = "workspace"
    STREAM = "stream"


class SuppressionSource(StrEnum):
    """Where a suppression came from."""

    MANUAL = "manual"
    IMPORT = "import"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"


EventClass = tuple[EventType, BounceClass | None]

SUPPRESSING_EVENTS: dict[EventClass, tuple[SuppressionSource, SuppressionScope]] = {
    (EventType.BOUNCED, BounceClass.HARD): (SuppressionSource.BOUNCE, SuppressionScope.GLOBAL),
    (EventType.COMPLAINED, None): (SuppressionSource.COMPLAINT, SuppressionScope.WORKSPACE),
    (EventType.UNSUBSCRIBED, None): (SuppressionSource.UNSUBSCRIBE, SuppressionScope.STREAM),
}
"""Canonical (event type, bounce class) → (source, scope) of the suppression it creates."""


SUPPRESSIONS_SCHEMA = pa.schema(
    [
        pa.field("suppression_id", pa.string(), nullable=False),
        pa.field("address", pa.string(), nullable=False),
        pa.field("scope", pa.string(), nullable=False),
        pa.field("workspace", pa.string()),
        pa.field("stream", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("event_id", pa.string()),
        pa.field("created_at", pa.timestamp("us"), nullable=False),
    ]
)
"""Columns of ``mailers.suppressions``: append-only; one address may appear many times."""
