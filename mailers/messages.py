"""Outbound messages and what providers answer about them: the values adapters exchange."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

MESSAGE_KEY_HEADER = "X-Mailers-Message-Key"
"""Every message carries its key in this header (and in the provider's metadata fields)."""

MESSAGE_KEY_FIELD = "mailers_message_key"
"""The metadata field (custom variable, custom arg, tag) carrying a message's key."""


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One rendered message, ready for a provider."""

    message_key: str
    workspace: str
    stream: str
    campaign: str
    send_window: str
    identity: str
    recipient: str
    from_address: str
    sending_domain: str
    subject: str
    html: str
    text: str
    from_name: str | None = None
    reply_to: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def metadata(self) -> dict[str, str]:
        """What providers carry as custom variables/tags so events find their message."""
        return {
            MESSAGE_KEY_FIELD: self.message_key,
            "mailers_workspace": self.workspace,
            "mailers_stream": self.stream,
            "mailers_campaign": self.campaign,
        }


class SendOutcome(StrEnum):
    """For a message the provider did not accept: was it handed over at all?"""

    ANSWERED = "answered"
    """The provider answered for it (accepted, or refused it: ``rejected``)."""
    NOT_SENT = "not_sent"
    """Provably not accepted (never handed over, or refused before processing, e.g. 429):
    another account or a later run may send it."""
    UNKNOWN = "unknown"
    """Handed over but no usable answer came back: recorded unknown, never re-sent blindly;
    reconciliation against the provider's records settles it."""


@dataclass(frozen=True, slots=True)
class SendResult:
    """A provider's answer for one message of a batch it accepted for processing."""

    message_key: str
    accepted: bool
    provider_message_id: str | None = None
    reason: str | None = None
    outcome: SendOutcome = SendOutcome.ANSWERED
    account_unavailable: bool = False
    """``not_sent`` because the account failed (refused, or retries exhausted): another
    account may take the message now."""
