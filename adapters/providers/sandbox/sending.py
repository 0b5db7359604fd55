"""Sending to the sandbox: ``.eml`` files and landed events, no network.

Every accepted message is written as an RFC 5322 ``.eml`` file under
``<data_dir>/outbox/<account>/``, and the events of a call's accepted messages land as one
JSON-lines file under ``<data_dir>/landing/sandbox/<account>/``, which the events asset
ingests through the same path as every other provider's events. Recipients at
``reject.mailers.test`` are rejected at send time (no events).

Settings ``fault: unavailable`` and ``fault: timeout`` make the account fail every call
(the one provably, the other ambiguously), for routing and recovery drills;
``fault: throttled`` answers every message "not sent" (a rate limit outlasting the retries)
while the account stays up, as a provider's sustained 429s do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.mime import mime_bytes
from adapters.providers.base import BatchProvider
from adapters.providers.hooks import Ambiguous, Retryable, RetryPolicy
from adapters.providers.sandbox.events import event_payloads
from adapters.providers.sandbox.settings import KIND, MAX_BATCH_SIZE, SandboxSettings
from mailers.clock import now
from mailers.config import ProviderAccountConfig, Settings
from mailers.landing import land, write_atomic
from mailers.messages import OutboundMessage, SendOutcome, SendResult

REJECT_DOMAIN = "reject.mailers.test"


def is_rejected(recipient: str) -> bool:
    """Whether the sandbox refuses this recipient at send time."""
    return recipient.rsplit("@", 1)[-1].lower() == REJECT_DOMAIN


class SandboxProvider(BatchProvider):
    """A sandbox account: writes ``.eml`` files and lands deterministic events."""

    kind = KIND

    def __init__(
        self,
        account: str,
        settings: SandboxSettings,
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
            payloads.extend(event_payloads(message, message_id, accepted_at, self.settings))
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


def build(
    account: str, config: ProviderAccountConfig, settings: SandboxSettings, app: Settings
) -> SandboxProvider:
    """A sandbox account writing under the configured data directory."""
    return SandboxProvider(
        account,
        settings,
        outbox_dir=app.outbox_dir,
        landing_dir=app.landing_dir,
        max_batch_size=config.batch_size or MAX_BATCH_SIZE,
    )
