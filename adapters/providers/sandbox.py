"""The sandbox provider: real messages, deterministic feedback, no network.

Sending writes every message as an RFC 5322 ``.eml`` file under
``<data_dir>/outbox/<account>/`` and lands the provider's events for the batch as one
JSON-lines file under ``<data_dir>/landing/sandbox/<account>/``, which the events asset
ingests through the same path as every other provider's events.

Outcomes follow a documented rule, by recipient domain (the ``.test`` TLD is reserved by
RFC 2606, so these can never reach a real mailbox):

=========================  ==================================================
``reject.mailers.test``    rejected at send time (no events)
``bounce.mailers.test``    ``bounce`` (hard)
``softbounce.mailers.test`` ``deferral``, then ``soft_bounce``
``complaint.mailers.test`` ``delivered``, then ``complaint``
anything else              ``delivered``; then, drawn from a hash of the message key
                           and ``seed``: ``open`` with probability ``open_rate``,
                           ``click`` with ``click_rate`` (clickers are openers), and
                           ``unsubscribe`` with ``unsubscribe_rate`` among openers
=========================  ==================================================

Settings ``fault: unavailable`` and ``fault: timeout`` make the account fail every batch
(the one provably, the other ambiguously), for routing and recovery drills;
``fault: throttled`` answers every message "not sent" (a rate limit outlasting the retries)
while the account stays up, as a provider's sustained 429s do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.mime import mime_bytes
from adapters.providers.base import Ambiguous, BatchProvider, Retryable, RetryPolicy
from mailers.clock import now
from mailers.config import ProviderAccountConfig
from mailers.config import Settings as MailersSettings
from mailers.events import BounceClass, CanonicalEvent, EventType
from mailers.keys import bucket
from mailers.landing import land, write_atomic
from mailers.messages import OutboundMessage, SendOutcome, SendResult

KIND = "sandbox"
MAX_BATCH_SIZE = 500

REJECT_DOMAIN = "reject.mailers.test"
HARD_BOUNCE_DOMAIN = "bounce.mailers.test"
SOFT_BOUNCE_DOMAIN = "softbounce.mailers.test"
COMPLAINT_DOMAIN = "complaint.mailers.test"

EVENT_TYPES: dict[str, tuple[EventType, BounceClass | None]] = {
    "delivered": (EventType.DELIVERED, None),
    "deferral": (EventType.DEFERRED, None),
    "bounce": (EventType.BOUNCED, BounceClass.HARD),
    "soft_bounce": (EventType.BOUNCED, BounceClass.SOFT),
    "complaint": (EventType.COMPLAINED, None),
    "open": (EventType.OPENED, None),
    "click": (EventType.CLICKED, None),
    "unsubscribe": (EventType.UNSUBSCRIBED, None),
}
"""Sandbox event name → canonical (type, bounce class); anything else maps to ``unknown``."""

EVENT_OFFSETS: dict[str, timedelta] = {
    "delivered": timedelta(seconds=1),
    "deferral": timedelta(seconds=1),
    "bounce": timedelta(seconds=2),
    "soft_bounce": timedelta(minutes=5),
    "complaint": timedelta(minutes=10),
    "open": timedelta(minutes=3),
    "click": timedelta(minutes=4),
    "unsubscribe": timedelta(minutes=6),
}
"""How long after acceptance each sandbox event happens (the simulator uses it too)."""


class Settings(BaseModel):
    """Settings of a sandbox account (``settings:`` in the config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    open_rate: float = Field(default=0.4, ge=0, le=1)
    click_rate: float = Field(default=0.1, ge=0, le=1)
    unsubscribe_rate: float = Field(default=0.02, ge=0, le=1)
    seed: str = "mailers"
    fault: Literal["none", "unavailable", "timeout", "throttled"] = "none"

    @model_validator(mode="after")
    def _clickers_open(self) -> Settings:
        if self.click_rate > self.open_rate:
            raise ValueError("click_rate cannot exceed open_rate (clickers are openers)")
        return self


def planned_events(message_key: str, recipient: str, settings: Settings) -> list[str]:
    """The sandbox event names a message accepted for ``recipient`` will produce, in order.

    ``None``-free and pure, so tests compute the expected marts from the same rule.
    """
    domain = recipient.rsplit("@", 1)[-1].lower()
    if domain == HARD_BOUNCE_DOMAIN:
        return ["bounce"]
    if domain == SOFT_BOUNCE_DOMAIN:
        return ["deferral", "soft_bounce"]
    if domain == COMPLAINT_DOMAIN:
        return ["delivered", "complaint"]
    events = ["delivered"]
    engagement = bucket(message_key, f"{settings.seed}:engage")
    if engagement < settings.open_rate:
        events.append("open")
        if engagement < settings.click_rate:
            events.append("click")
        if bucket(message_key, f"{settings.seed}:unsubscribe") < settings.unsubscribe_rate:
            events.append("unsubscribe")
    return events


def is_rejected(recipient: str) -> bool:
    """Whether the sandbox refuses this recipient at send time."""
    return recipient.rsplit("@", 1)[-1].lower() == REJECT_DOMAIN


class SandboxProvider(BatchProvider):
    """A sandbox account: writes ``.eml`` files and lands deterministic events."""

    kind = KIND

    def __init__(
        self,
        account: str,
        settings: Settings,
        *,
        outbox_dir: Path,
        landing_dir: Path,
        max_batch_size: int = MAX_BATCH_SIZE,
    ) -> None:
        # No retries: a sandbox fault is permanent, and a drill should not sleep.
        super().__init__(account, max_batch_size=max_batch_size, retry=RetryPolicy(attempts=1))
        self.settings = settings
        self.outbox = outbox_dir / account
        self.landing_dir = landing_dir

    def _send_request(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        if self.settings.fault == "unavailable":
            raise Retryable("sandbox fault: connection refused")
        if self.settings.fault == "timeout":
            raise Ambiguous("sandbox fault: timed out after sending")
        if self.settings.fault == "throttled":
            reason = "sandbox fault: rate limited (429), gave up after retrying"
            return [
                SendResult(m.message_key, False, reason=reason, outcome=SendOutcome.NOT_SENT)
                for m in messages
            ]
        self.outbox.mkdir(parents=True, exist_ok=True)
        accepted_at = now()
        results: list[SendResult] = []
        payloads: list[dict[str, Any]] = []
        files: dict[Path, bytes] = {}
        for message in messages:
            if is_rejected(message.recipient):
                results.append(
                    SendResult(
                        message.message_key,
                        accepted=False,
                        reason=f"sandbox rejects recipients at {REJECT_DOMAIN}",
                    )
                )
                continue
            message_id = self._message_id(message.message_key)
            files[self.outbox / f"{message.message_key}.eml"] = mime_bytes(
                message, message_id=message_id
            )
            results.append(SendResult(message.message_key, True, provider_message_id=message_id))
            payloads.extend(self._events_for(message, message_id, accepted_at))
        for path, data in files.items():
            write_atomic(path, data)
        land(
            self.landing_dir,
            KIND,
            self.account,
            [json.dumps(p, sort_keys=True).encode() for p in payloads],
        )
        return results

    def _message_id(self, message_key: str) -> str:
        digest = hashlib.sha256(f"{self.account}|{message_key}".encode()).hexdigest()[:32]
        return f"{digest}@sandbox.mailers.test"

    def _events_for(
        self, message: OutboundMessage, message_id: str, accepted_at: datetime
    ) -> list[dict[str, Any]]:
        payloads = []
        for name in planned_events(message.message_key, message.recipient, self.settings):
            payloads.append(
                {
                    "id": f"sbx-{hashlib.sha256(f'{message_id}|{name}'.encode()).hexdigest()[:32]}",
                    "event": name,
                    "timestamp": (accepted_at + EVENT_OFFSETS[name]).isoformat(),
                    "message_id": message_id,
                    "recipient": message.recipient,
                    "sending_domain": message.sending_domain,
                    "metadata": message.metadata,
                    "detail": _DETAILS.get(name),
                    "url": "https://example.test/landing" if name == "click" else None,
                }
            )
        return payloads


_DETAILS = {
    "bounce": "550 5.1.1 sandbox: mailbox does not exist",
    "soft_bounce": "452 4.2.2 sandbox: mailbox full, gave up after retries",
    "deferral": "421 4.7.0 sandbox: try again later",
    "complaint": "sandbox: recipient marked the message as spam",
}


def parse(payload: bytes, account: str) -> list[CanonicalEvent]:
    """Canonical events from one landed sandbox payload line."""
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    event_type, bounce_class = EVENT_TYPES.get(data.get("event", ""), (EventType.UNKNOWN, None))
    metadata = data.get("metadata") or {}
    occurred = datetime.fromisoformat(data["timestamp"])
    return [
        CanonicalEvent(
            event_id=str(data["id"]),
            event_type=event_type,
            bounce_class=bounce_class,
            occurred_at=occurred.astimezone(UTC).replace(tzinfo=None),
            provider=KIND,
            provider_account=account,
            provider_message_id=data.get("message_id"),
            message_key=metadata.get("mailers_message_key"),
            workspace=metadata.get("mailers_workspace"),
            stream=metadata.get("mailers_stream"),
            campaign=metadata.get("mailers_campaign"),
            recipient=data.get("recipient"),
            sending_domain=data.get("sending_domain"),
            reason=data.get("detail"),
            url=data.get("url"),
            raw_payload=payload.decode().rstrip("\n"),
        )
    ]


def build(
    account: str, config: ProviderAccountConfig, settings: Settings, app: MailersSettings
) -> SandboxProvider:
    """A sandbox account writing under the configured data directory."""
    return SandboxProvider(
        account,
        settings,
        outbox_dir=app.outbox_dir,
        landing_dir=app.landing_dir,
        max_batch_size=config.batch_size or MAX_BATCH_SIZE,
    )
