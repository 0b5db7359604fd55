"""The current canonical events: ``mailers.events`` less the rows a replay replaced.

``mailers.events`` is append-only. A replay of stored payloads after a mapping fix
(:mod:`mailers.events_replay`) never edits a row: an event whose fields changed is
appended again under the same id, and an event whose id changed is appended under its new
id. Each replay also appends a row to ``mailers.event_replays`` per stored event it
replaced (``old_event_id`` → ``new_event_id``, the same id when only fields changed),
stamped ``replayed_at``, which is the ``ingested_at`` of the rows it appended and is later
than that of every row it replaced. So a stored row is current unless a replay of its id
happened after it was ingested: one anti-join against the small replays table, no ranking
over the history of events.
"""

from __future__ import annotations

import pyarrow as pa

from mailers.events import EVENTS_SCHEMA, EVENTS_TABLE
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

EVENT_REPLAYS_TABLE = "event_replays"
EVENT_REPLAYS_SCHEMA = pa.schema(
    [
        pa.field("replay_id", pa.string(), nullable=False),
        pa.field("old_event_id", pa.string(), nullable=False),
        pa.field("new_event_id", pa.string(), nullable=False),
        pa.field("replayed_at", pa.timestamp("us"), nullable=False),
    ]
)
"""Columns of ``mailers.event_replays``: append-only, one row per stored event a replay
replaced by a re-normalized one (``new_event_id`` equals ``old_event_id`` when only its
fields changed)."""


def current_events_sql(warehouse: Warehouse, where: str = "true") -> str:
    """A parenthesized query of the current rows of ``mailers.events`` matching ``where``
    (a condition on events' columns), with the columns of
    :data:`~mailers.events.EVENTS_SCHEMA`: one row per event id, superseded ids left out.

    A warehouse without the replays table (never replayed, opened read-only before
    :func:`~mailers.tables.ensure_tables` created it) has every stored row current.
    """
    events = warehouse.relation(MAILERS_SCHEMA, EVENTS_TABLE)
    columns = ", ".join(f"e.{name}" for name in EVENTS_SCHEMA.names)
    if warehouse.columns(MAILERS_SCHEMA, EVENT_REPLAYS_TABLE) is None:
        return f"(select {columns} from {events} as e where ({where}))"
    replays = warehouse.relation(MAILERS_SCHEMA, EVENT_REPLAYS_TABLE)
    return (
        f"(select {columns} from {events} as e where ({where}) and not exists ("
        f"select 1 from {replays} as r "
        f"where r.old_event_id = e.event_id and r.replayed_at > e.ingested_at))"
    )
