"""One-click unsubscribes in the landing zone: the line the unsubscribe page lands, and its
parser.

A valid unsubscribe lands one JSON line under a landing kind of its own,
``<landing>/unsubscribe/<workspace>/<name>.jsonl`` (:data:`UNSUBSCRIBE_KIND` is no provider
kind), so the page needs no warehouse. Ingestion and the mid-send checks
(:mod:`mailers.feedback`, :mod:`mailers.late_suppressions`) read it with :func:`parse`, as
they read a provider's payloads: it becomes an ``unsubscribed`` event carrying the message
key, workspace and stream, and the message's ledger rows supply the recipient
(:func:`~mailers.ledger.attributed_events_sql`), so the suppression rules
(:data:`~mailers.suppression.SUPPRESSING_EVENTS`) block that recipient on that stream.

The event id depends on the claim only (message, workspace, stream), so clicking a link
twice, or two links of one message, is one event.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from mailers import clock
from mailers.events import CanonicalEvent, EventType, derive_event_id
from mailers.unsubscribe import UnsubscribeClaim

UNSUBSCRIBE_KIND = "unsubscribe"
"""The landing kind of one-click unsubscribes; its account folder is the workspace."""

Via = Literal["one-click", "page"]
"""How the recipient unsubscribed: their mail client's RFC 8058 POST, or our page's form."""


def event_id(claim: UnsubscribeClaim) -> str:
    """The unsubscribe event's id: the same for every click on any link of one message."""
    return derive_event_id(UNSUBSCRIBE_KIND, claim.message_key, claim.workspace, claim.stream)


def landing_line(
    claim: UnsubscribeClaim,
    via: Via,
    expires_at: datetime | None = None,
    recipient: str | None = None,
) -> bytes:
    """The JSON line to land for a verified ``claim``, stamped with Mailers' clock.

    ``recipient`` is not in the token: null unless the caller knows it (ingestion takes it
    from the message's ledger rows).
    """
    record: dict[str, Any] = {
        "type": "unsubscribed",
        "event_id": event_id(claim),
        "message_key": claim.message_key,
        "workspace": claim.workspace,
        "stream": claim.stream,
        "recipient": recipient,
        "via": via,
        "at": clock.now().isoformat(),
        "token_expires_at": expires_at.isoformat() if expires_at else None,
    }
    return json.dumps(record, separators=(",", ":")).encode()


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"unsubscribe record: {name!r} is missing or not text")
    return value


def parse(payload: bytes, account: str) -> list[CanonicalEvent]:
    """The ``unsubscribed`` event of one landed line (``account`` is the workspace folder).

    A line that is not such a record raises ``ValueError`` (ingestion keeps it as an
    ``unknown`` event with its raw text).
    """
    data = json.loads(payload)
    if not isinstance(data, dict) or data.get("type") != "unsubscribed":
        raise ValueError("not an unsubscribe record")
    claim = UnsubscribeClaim(
        _text(data, "message_key"), _text(data, "workspace"), _text(data, "stream")
    )
    if claim.workspace != account:
        raise ValueError(
            f"unsubscribe record of workspace {claim.workspace!r} landed under {account!r}"
        )
    occurred = datetime.fromisoformat(_text(data, "at"))
    if occurred.tzinfo is None:
        raise ValueError("unsubscribe record: 'at' has no time zone")
    recipient = data.get("recipient")
    return [
        CanonicalEvent(
            event_id=event_id(claim),
            event_type=EventType.UNSUBSCRIBED,
            occurred_at=occurred.astimezone(UTC).replace(tzinfo=None),
            provider=UNSUBSCRIBE_KIND,
            provider_account=account,
            raw_payload=payload.decode().rstrip("\n"),
            message_key=claim.message_key,
            workspace=claim.workspace,
            stream=claim.stream,
            recipient=recipient if isinstance(recipient, str) and recipient else None,
            reason=f"one-click unsubscribe ({data.get('via') or 'unknown'})",
        )
    ]


class UnsubscribeParser:
    """:func:`parse` as an :class:`~mailers.providers.EventParser`."""

    def parse(self, payload: bytes, account: str) -> list[CanonicalEvent]:
        return parse(payload, account)


PARSER = UnsubscribeParser()
"""The parser ingestion uses for :data:`UNSUBSCRIBE_KIND` files."""
