"""What an SMTP server's replies mean for one message, and how they are worded back.

Besides a :class:`~mailers.messages.SendResult`, one attempt at a message ends in
:class:`NotHandedOver` (nothing was accepted, for a reason about the server) or
:class:`InDoubt` (the whole message was written, its answer never came); the sender turns
them into the flow's ``Retryable`` and ``Ambiguous``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

SERVICE_CLOSING = 421
"""RFC 5321 §3.8 / §4.2.3: "may be a reply to any command if the service knows it must shut
down"; the server closes the channel after it."""

AUTH_REQUIRED = 530
"""RFC 4954 §6: "530 5.7.0 Authentication required" (here: in answer to ``MAIL FROM``)."""

RCPT_ACCEPTED = frozenset({250, 251})
"""RFC 5321 §3.6.1 / §4.2.2: 251 "user not local; will forward" also accepts the recipient."""

RETRY_HINT = re.compile(
    r"(?:retry|try\s+again)\s+(?:after|in)\s+(\d+(?:\.\d+)?)\s*(?:s|secs?|seconds?)\b",
    re.IGNORECASE,
)
"""A wait hint in a 4xx reply's text ("try again in 30 seconds"). SMTP has no Retry-After:
this is a convention of some relays; without it the base class's backoff applies."""

RATE_LIMITED = re.compile(
    r"throttl|rate.limit|sending rate|too many (?:messages|mails|emails|connections)",
    re.IGNORECASE,
)
"""A 4xx reply about the server whose text says it is a rate limit (SES: "454 Throttling
failure: Maximum sending rate exceeded"; many relays: "421 4.7.0 ... rate limited",
"451 ... too many messages"). SMTP has no code of its own for it, so the text decides,
and a reply that does not say so stays an ordinary transient failure."""

DEFERRED = "deferred: "
"""Prefix of the reason of a message not accepted for a transient cause (a later run retries
it)."""

MAX_REASON = 500
"""Characters of a server reply kept in a reason."""


class NotHandedOver(Exception):
    """Nothing of this message was accepted, for a reason about the server (not the message)."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        connection_lost: bool = False,
        throttled: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.connection_lost = connection_lost
        self.throttled = throttled
        """The server said it is a rate limit (:data:`RATE_LIMITED`)."""


class InDoubt(Exception):
    """The whole message was written but its answer never came (RFC 1047)."""


def rate_limited(text: str) -> bool:
    """Whether a transient reply's text says it is a rate limit (:data:`RATE_LIMITED`)."""
    return RATE_LIMITED.search(text) is not None


def retry_hint(text: str) -> float | None:
    """The seconds a reply's text asks to wait, if it says (:data:`RETRY_HINT`)."""
    match = RETRY_HINT.search(text)
    return float(match.group(1)) if match else None


class Mask:
    """Replies and errors as text with the account's credential values masked.

    A server may echo what it was sent (a user name in "account x is suspended"), and
    ``smtplib`` errors may carry it too; nothing worded here shows a credential.
    """

    def __init__(self, secrets: Iterable[str | None]) -> None:
        self.secrets = [secret for secret in secrets if secret]

    def reply(self, reply: bytes | str) -> str:
        """A server reply as one line of text, at most :data:`MAX_REASON` characters."""
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
        return self.text(" ".join(text.split()))[:MAX_REASON]

    def text(self, text: str) -> str:
        """``text`` with every credential value replaced by ``***``."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text
