"""What is kept of anything landed for an SMTP account: SMTP has no event feed.

Delivery failures after acceptance come back as DSN mail (RFC 3464) to the envelope
sender, which this adapter does not read; no webhook reaches an SMTP account (its spec
has none, so the receiver answers 404). Should anything land for one anyway, it is kept
as an ``unknown`` event with its raw payload.
"""

from __future__ import annotations

from adapters.providers.smtp.settings import KIND
from mailers.clock import utcnow
from mailers.events import CanonicalEvent, EventType, derive_event_id


def parse(payload: bytes, account: str) -> list[CanonicalEvent]:
    """SMTP has no event feed: anything landed for an SMTP account is kept as ``unknown``."""
    raw = payload.decode("utf-8", "replace").rstrip("\r\n")
    if not raw.strip():
        return []
    return [
        CanonicalEvent(
            event_id=derive_event_id(KIND, account, raw),
            event_type=EventType.UNKNOWN,
            occurred_at=utcnow(),
            provider=KIND,
            provider_account=account,
            raw_payload=raw,
            reason="smtp accounts have no event feed; bounces arrive as DSN mail (RFC 3464) "
            "to the envelope sender",
        )
    ]
