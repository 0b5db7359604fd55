"""The exceptions Mailers raises, in one tree.

    MailersError
    ├── ConfigError              the config file is wrong (names file, key path, problem)
    ├── SecretMissing            a credential's env var is not set (names the var, never a value)
    ├── SegmentError             a segment model is missing or has the wrong shape
    ├── WarehouseError           the warehouse refused a statement
    ├── WebhookRejected          a provider webhook failed verification (nothing is stored)
    ├── PollFailed               polling an events API from a stored cursor failed (names its file)
    └── ProviderError            a provider account failed a whole batch
        ├── ProviderUnavailable  nothing was handed over: safe to fail over or retry
        │   └── ProviderAuthError  credentials or account config refused: stop using it
        └── ProviderOutcomeUnknown  the request may have been accepted: never retried blindly

Errors keep their cause (``raise X from err``) so the original traceback survives.
"""

from __future__ import annotations


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


class WebhookRejected(MailersError):
    """A webhook request failed verification: forged, stale, replayed or malformed."""


class PollFailed(MailersError):
    """Polling an account's events API from its stored cursor failed; names the cursor file."""


class ProviderError(MailersError):
    """A provider account failed a whole batch."""

    def __init__(self, account: str, message: str) -> None:
        super().__init__(f"provider account {account!r}: {message}")
        self.account = account
        self.detail = message


class ProviderUnavailable(ProviderError):
    """The provider did not accept the batch and provably processed none of it.

    Connection refused, authentication failure, throttling before acceptance: the batch may
    be sent again, through this account later or through a fallback account now.
    """


class ProviderAuthError(ProviderUnavailable):
    """The provider refused the account's credentials or configuration (401/403, bad key).

    Nothing was sent; retrying will not help. The account is taken out of the run and its
    traffic fails over; the message says which account and which setting to check.
    """


class ProviderOutcomeUnknown(ProviderError):
    """The request reached the provider but no answer came back (a timeout, a cut socket).

    Some or all messages may have been accepted. They are recorded as ``unknown`` and never
    re-sent automatically; provider events carrying the message key settle them later.
    """
