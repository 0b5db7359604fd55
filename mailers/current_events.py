"""The current canonical events: ``mailers.events`` less the rows a replay replaced.

``mailers.events`` is append-only. A replay of stored payloads after a mapping fix
(:mod:`mailers.events_replay`) never edits a row: an event whose fields changed is
appended again under the same id, and an event whose id changed is appended under its new
id. Each replay also appends a row to ``mailers.event_replays`` per stored event it
replaced (``old_event_id`` → ``new_event_id``, the same id when only fields changed),
stamped ``replayed_at``, which is the ``ingested_at`` of the rows it appended and is later
than that of every row it replaced. So a stored row is current unless a replay of its id
happened after it was ingested: one join against the small replays table, no ranking over
the history of events.
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
    # A join on the id alone against each id's last replay: about three times cheaper in
    # DuckDB than a correlated ``not exists`` that also compares the times.
    return (
        f"(select {columns} from {events} as e "
        f"left join (select old_event_id, max(replayed_at) as last_replayed_at "
        f"from {replays} group by old_event_id) as replayed "
        f"on replayed.old_event_id = e.event_id "
        f"where ({where}) and (replayed.last_replayed_at is null "
        f"or replayed.last_replayed_at <= e.ingested_at))"
    )
