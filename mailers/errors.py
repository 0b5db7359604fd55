"""The exceptions Mailers raises, in one tree.

    MailersError
    ├── ConfigError              the config file is wrong (names file, key path, problem)
    ├── SecretMissing            a credential's env var is not set (names the var, never a value)
    ├── SegmentError             a segment model is missing or has the wrong shape
    ├── WarehouseError           the warehouse refused a statement
    ├── WindowError              a send window that is not one of the campaign's, or a
    │                            backfill not asked for (names campaign, value, nearest ticks)
    ├── ScopeError               a policy scope the config does not have (names the unknown
    │                            part and what exists)
    ├── WebhookRejected          a provider webhook failed verification (nothing is stored)
    │   └── WebhookMalformed     its body cannot be parsed (from a verified sender, or one
    │                            whose signature is inside the body): HTTP 400, not 401
    ├── UnsubscribeTokenError    an unsubscribe link's token is refused (also a ValueError)
    │   ├── TokenMalformed       not a token of ours: truncated, mangled, wrong shape
    │   ├── TokenTampered        well-formed, but the signature does not match
    │   └── TokenExpired         genuine, but past its expiry
    ├── ClaimError               the one-sender-per-window claim (mailers.claims)
    │   ├── WindowClaimed        another run holds the window (names it, when its lease ends)
    │   └── ClaimLost            this run no longer holds its window: it stops sending
    ├── PollFailed               polling an events API from a stored cursor failed (names its file)
    └── ProviderError            a provider account's read API failed (events polling)
        └── ProviderUnavailable  the provider could not answer now: try again later
            └── ProviderAuthError  credentials or account config refused: fix the account

Sending raises none of these: ``Provider.send_batch`` reports an outcome per message
(accepted, rejected, not sent, in doubt; see :mod:`mailers.providers`).

Errors keep their cause (``raise X from err``) so the original traceback survives.
"""

from __future__ import annotations

from datetime import datetime


class MailersError(Exception):
    """Base class of every error Mailers raises on purpose."""


class ConfigError(MailersError):
    """The configuration file is invalid; the message names file, key path and problem."""


class SecretMissing(MailersError):
    """A secret reference points at an environment variable that is not set."""


class SegmentError(MailersError):
    """A campaign's segment model does not exist or does not yield an ``email`` column."""


class WarehouseError(MailersError):
    """The warehouse rejected a statement or a table is missing."""


class WarehouseBusy(WarehouseError):
    """Another process holds the warehouse (DuckDB: its one writer lock)."""


class WindowError(MailersError):
    """A send window was refused before anything was read or sent.

    The value is not a window of the campaign (not ``once`` for a one-off campaign, not a
    tick of a recurring one's schedule, a tick not begun yet), or it is a past window and no
    backfill was asked for. The message names the campaign, the value and the nearest ticks.
    """


class ScopeError(MailersError):
    """A policy scope (``WORKSPACE[.STREAM[.CAMPAIGN]]``) names something the config lacks.

    The message names the unknown part and lists what the config has in its place.
    """


class WebhookRejected(MailersError):
    """A webhook request failed verification: forged, stale, replayed or malformed."""


class WebhookMalformed(WebhookRejected):
    """A webhook body that cannot be parsed: the sender was verified (its body is not
    JSON), or the provider signs inside the body (Mailgun, SNS) and there is no body to
    verify. Receivers answer 400 rather than 401; nothing is stored either way."""


class UnsubscribeTokenError(MailersError, ValueError):
    """An unsubscribe token that must not unsubscribe anyone; ``problem`` says why in a word."""

    problem = "invalid"


class TokenMalformed(UnsubscribeTokenError):
    """The token does not have the shape of one Mailers signs (truncated or mangled link)."""

    problem = "malformed"


class TokenTampered(UnsubscribeTokenError):
    """The token is well-formed but its signature does not match: altered, or signed with
    another key."""

    problem = "tampered"


class TokenExpired(UnsubscribeTokenError):
    """The token is genuine but past its expiry; ``expired_at`` says when it ran out."""

    problem = "expired"

    def __init__(self, message: str, expired_at: datetime) -> None:
        super().__init__(message)
        self.expired_at = expired_at


class ClaimError(MailersError):
    """The claim that lets one run at a time send a campaign window."""


class WindowClaimed(ClaimError):
    """Another run holds the window; the message names it and when its lease expires."""

    def __init__(self, message: str, *, holder_run_id: str, expires_at: datetime) -> None:
        super().__init__(message)
        self.holder_run_id = holder_run_id
        self.expires_at = expires_at


class ClaimLost(ClaimError):
    """This run's claim was taken over or may have lapsed: it must not hand anything over."""


class PollFailed(MailersError):
    """Polling an account's events API from its stored cursor failed; names the cursor file."""


class ProviderError(MailersError):
    """A provider account's API failed a read (an events page, a queue, a search)."""

    def __init__(self, account: str, message: str) -> None:
        super().__init__(f"provider account {account!r}: {message}")
        self.account = account
        self.detail = message


class ProviderUnavailable(ProviderError):
    """The provider could not answer the read now (refused, throttled, timed out, garbled).

    Reads are safe to repeat: the poller reports it for this account and tries again on
    its next run.
    """


class ProviderAuthError(ProviderUnavailable):
    """The provider refused the account's credentials or configuration (401/403, bad key).

    Retrying will not help; the message says which account and which setting to check.
    """
