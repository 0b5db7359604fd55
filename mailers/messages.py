"""Outbound messages and what providers answer about them: the values adapters exchange."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypedDict

MESSAGE_KEY_HEADER = "X-Mailers-Message-Key"
"""Every message carries its key in this header (and in the provider's metadata fields)."""

MESSAGE_KEY_FIELD = "mailers_message_key"
"""The metadata field (custom variable, custom arg, tag) carrying a message's key."""
WORKSPACE_FIELD = "mailers_workspace"
STREAM_FIELD = "mailers_stream"
CAMPAIGN_FIELD = "mailers_campaign"
DOMAIN_FIELD = "mailers_domain"
"""The sending domain, for providers whose events do not name the sender (Postmark)."""
METADATA_FIELDS = (MESSAGE_KEY_FIELD, WORKSPACE_FIELD, STREAM_FIELD, CAMPAIGN_FIELD)
"""Every message's metadata fields: provider events carry them back to find the message.
Each name is at most 20 characters (Postmark's limit for metadata keys)."""


class MessageRefFields(TypedDict):
    """:class:`MessageRef` as keyword arguments of :class:`~mailers.events.CanonicalEvent`."""

    message_key: str | None
    workspace: str | None
    stream: str | None
    campaign: str | None


@dataclass(frozen=True, slots=True)
class MessageRef:
    """Which of our messages a provider payload is about, read back from its metadata."""

    message_key: str | None = None
    workspace: str | None = None
    stream: str | None = None
    campaign: str | None = None

    @classmethod
    def from_metadata(cls, metadata: object) -> MessageRef:
        """Our fields from a provider's metadata map (custom args, user variables, tags).

        Anything that is not a mapping, and empty or non-text values, read as absent:
        payloads come from outside and are never trusted to have our shape.
        """
        if not isinstance(metadata, Mapping):
            return cls()
        return cls(*(_text(metadata.get(name)) for name in METADATA_FIELDS))

    def fields(self) -> MessageRefFields:
        """The reference as :class:`~mailers.events.CanonicalEvent` keyword arguments."""
        return MessageRefFields(
            message_key=self.message_key,
            workspace=self.workspace,
            stream=self.stream,
            campaign=self.campaign,
        )


def _text(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip() if isinstance(value, str | int) else ""
    return text or None


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
        values = (self.message_key, self.workspace, self.stream, self.campaign)
        return dict(zip(METADATA_FIELDS, values, strict=True))


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
    HELD = "held"
    """Never handed over: a pause holds its scope (:mod:`mailers.pauses`); a run after the
    resume sends it."""


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
    throttled: bool = False
    """``not_sent`` because of the provider's rate limit, not a failure of the account (a
    circuit breaker does not count it)."""
