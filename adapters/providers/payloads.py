"""Reading provider payloads, which come from outside and may have any shape.

Event parsers never raise on content (an unexpected shape reads as absent and the event
becomes ``unknown`` with its raw payload kept), so every field goes through these.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any


def json_object(payload: bytes) -> dict[str, Any]:
    """A payload that must be one JSON object; ``ValueError`` otherwise."""
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


def verbatim(payload: bytes) -> str:
    """A landed payload as stored in ``raw_payload``: its text, without surrounding ASCII
    whitespace (the same text the set-based mappings store)."""
    return payload.strip().decode("utf-8")


def mapping(value: object) -> dict[str, Any]:
    """An object field, or ``{}`` (providers send ``[]`` or nothing for an empty one)."""
    return value if isinstance(value, dict) else {}


def listed(value: object) -> list[Any]:
    """A list field, or ``[]``."""
    return value if isinstance(value, list) else []


def mappings(value: object) -> list[dict[str, Any]]:
    """The objects of a list field (anything else in it is skipped)."""
    return [item for item in listed(value) if isinstance(item, dict)]


def text(value: object) -> str | None:
    """A scalar field as text; ``None`` when absent, empty, or not a scalar."""
    if value is None or isinstance(value, dict | list):
        return None
    return str(value) or None


def address(value: object) -> str | None:
    """The bare address of ``"Name <a@b>"`` or ``a@b``; ``None`` if there is none."""
    found = parseaddr(str(value))[1] if value else ""
    return found or None


def domain_of(value: object) -> str | None:
    """The lower-cased domain of an address field; ``None`` if it holds no address."""
    found = address(value) if isinstance(value, str) else None
    if not found or "@" not in found:
        return None
    return found.rsplit("@", 1)[1].strip().lower() or None


def naive_utc(moment: datetime) -> datetime:
    """An aware moment as naive UTC, the way events store ``occurred_at``."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def compact_json(data: object) -> str:
    """``data`` as canonical JSON (sorted keys, no spaces), for hashing and stable ids."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
