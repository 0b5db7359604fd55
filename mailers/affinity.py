"""Recipient affinity: which provider account and identity first sent to a recipient.

Sticky routing keeps a recipient on the account that first sent to them on a stream, and
an outbound mailbox pool keeps them with the mailbox that first wrote to them. Both read
``mailers.recipient_affinity``: one row appended the first time a message to a recipient
is accepted on a stream of a workspace. Its size grows with distinct recipients, not with
sends, so the audience step joins it at a cost independent of history. When two sends
record the same new recipient at once, the earliest row wins on every read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from mailers.clock import utcnow
from mailers.ledger import sql_text
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

AFFINITY_TABLE = "recipient_affinity"

AFFINITY_SCHEMA = pa.schema(
    [
        pa.field("workspace", pa.string(), nullable=False),
        pa.field("stream", pa.string(), nullable=False),
        pa.field("recipient", pa.string(), nullable=False),
        pa.field("provider_account", pa.string(), nullable=False),
        pa.field("identity", pa.string()),
        pa.field("message_key", pa.string(), nullable=False),
        pa.field("recorded_at", pa.timestamp("us"), nullable=False),
    ]
)
"""Columns of ``mailers.recipient_affinity``; ``recipient`` is lower-cased."""


@dataclass(frozen=True, slots=True)
class FirstSend:
    """A recipient's first accepted message on a stream."""

    recipient: str
    provider_account: str
    identity: str | None
    message_key: str


def affinity_sql(warehouse: Warehouse, workspace: str, stream: str) -> str:
    """A query of (recipient, provider_account, identity): each recipient's first send."""
    table = warehouse.relation(MAILERS_SCHEMA, AFFINITY_TABLE)
    return f"""
        select recipient, provider_account, identity from (
            select recipient, provider_account, identity, row_number() over (
                partition by recipient order by recorded_at, message_key
            ) as rank
            from {table}
            where workspace = {sql_text(workspace)} and stream = {sql_text(stream)}
        ) as firsts
        where rank = 1"""


def record_first_sends(
    warehouse: Warehouse, workspace: str, stream: str, sends: Iterable[FirstSend]
) -> int:
    """Append the first sends of recipients (one bulk append); returns how many."""
    rows = [
        {
            "workspace": workspace,
            "stream": stream,
            "recipient": s.recipient.lower(),
            "provider_account": s.provider_account,
            "identity": s.identity,
            "message_key": s.message_key,
            "recorded_at": utcnow(),
        }
        for s in sends
    ]
    if rows:
        warehouse.append(
            MAILERS_SCHEMA, AFFINITY_TABLE, pa.Table.from_pylist(rows, schema=AFFINITY_SCHEMA)
        )
    return len(rows)
