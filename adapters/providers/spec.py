"""What a provider package declares about itself: its :class:`ProviderSpec`.

The registry (:mod:`adapters.providers.registry`) holds one spec per provider kind, and
everything that needs a provider (building senders, checking config, verifying and
parsing webhooks, polling, reconciling) reads the capability from the spec: a provider
without webhooks has ``verify_webhook=None``, one without an events API ``poll=None``.

A spec is cheap to import: a package's ``__init__`` imports its settings, parser and
verifier, and reaches the modules that need an SDK (boto3 for SES) only inside
``build``/``poll``/``lookup``, so receiving SES webhooks never imports boto3.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from mailers.config import ProviderAccountConfig, Settings
from mailers.events import CanonicalEvent
from mailers.pacing import ProviderQuota
from mailers.providers import Provider
from mailers.reconcile import MessageLookup
from mailers.webhooks import ReplayGuard, WebhookRequest

SettingsT = TypeVar("SettingsT", bound=BaseModel)
SettingsIn = TypeVar("SettingsIn", bound=BaseModel, contravariant=True)

Parse = Callable[[bytes, str], list[CanonicalEvent]]
"""``parse(payload, account)``: canonical events from one landed payload."""


class Builder(Protocol[SettingsIn]):
    """Builds one account's sender from its config."""

    def __call__(
        self, account: str, config: ProviderAccountConfig, settings: SettingsIn, app: Settings
    ) -> Provider: ...


class WebhookVerifier(Protocol):
    """Refuses (``WebhookRejected``) a forged, stale or replayed webhook request.

    It may also answer a provider's handshake before returning (SES confirms an SNS
    subscription to an allow-listed topic).
    """

    def __call__(
        self, request: WebhookRequest, config: ProviderAccountConfig, guard: ReplayGuard
    ) -> None: ...


class Poller(Protocol[SettingsIn]):
    """New event payloads of one account since ``cursor``, and the cursor after them."""

    def __call__(
        self,
        account: str,
        config: ProviderAccountConfig,
        settings: SettingsIn,
        cursor: str | None,
    ) -> tuple[list[bytes], str | None]: ...


class Backfiller(Protocol[SettingsIn]):
    """Every event payload of one account whose event time is in ``[start, end]`` (naive
    UTC), from the provider's events API: what a receiver that was down missed.

    ``open_message_ids`` are the provider message ids of the span's messages still without
    a final event: a provider whose API answers per message (Postmark's deliveries) asks
    about those only; one with a time-ranged events API (Mailgun) ignores them.
    """

    def __call__(
        self,
        account: str,
        config: ProviderAccountConfig,
        settings: SettingsIn,
        start: datetime,
        end: datetime,
        open_message_ids: Sequence[str],
    ) -> list[bytes]: ...


class LookupFactory(Protocol[SettingsIn]):
    """The provider's searchable record of accepted messages, for one account."""

    def __call__(
        self, account: str, config: ProviderAccountConfig, settings: SettingsIn
    ) -> MessageLookup: ...


class QuotaReader(Protocol[SettingsIn]):
    """The account's sending limits as the provider publishes them (SES ``GetSendQuota``).

    Raises :class:`~mailers.errors.ProviderUnavailable` (or its ``ProviderAuthError``) when
    they cannot be read.
    """

    def __call__(
        self, account: str, config: ProviderAccountConfig, settings: SettingsIn
    ) -> ProviderQuota: ...


@dataclass(frozen=True)
class Credentials:
    """The ``credentials:`` keys an account of this kind reads (env var references)."""

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    @property
    def known(self) -> frozenset[str]:
        """Every key the provider reads."""
        return frozenset(self.required + self.optional)


@dataclass(frozen=True)
class ProviderSpec(Generic[SettingsT]):
    """One provider kind's capabilities, declared by its package."""

    kind: str
    max_batch_size: int
    """The most messages one ``send_batch`` takes (the provider's batch API limit)."""
    settings: type[SettingsT]
    """The ``settings:`` model, named ``<Kind>Settings`` (``extra="forbid"``)."""
    credentials: Credentials
    build: Builder[SettingsT]
    parse: Parse
    verify_webhook: WebhookVerifier | None = None
    poll: Poller[SettingsT] | None = None
    lookup: LookupFactory[SettingsT] | None = None
    """Search of the provider's records by our message key. Providers without one
    (SendGrid without its paid activity feed, SES, SMTP) have their doubt settled by
    landed events only (:mod:`mailers.reconcile`)."""
    idempotent: bool = False
    """The provider deduplicates a request by an idempotency key we send, so a call
    without a usable answer is made again safely (see :mod:`adapters.providers.base`)."""
    quota: QuotaReader[SettingsT] | None = None
    """Reads the account's published sending limits, for ``pacing.quota_from_provider``.
    Providers that publish none (all but SES) leave pacing to the config."""
    backfill: Backfiller[SettingsT] | None = None
    """Fetches a past time window's events (:mod:`mailers.backfill`). Providers whose
    events API cannot be asked for a window (SES has none) leave missing feedback to the
    overdue check."""
    events_sql: str | None = None
    """The set-based form of ``parse`` (``events.sql`` in the provider package, see
    :mod:`adapters.bulk_events`); providers without one are parsed line by line."""

    def settings_of(self, config: ProviderAccountConfig) -> SettingsT:
        """The account's validated settings (raises ``ValidationError``)."""
        return self.settings.model_validate(config.settings)

    def problems(self, config: ProviderAccountConfig) -> list[str]:
        """What is wrong with an account of this kind (empty when nothing is)."""
        found = [
            f"credentials.{key}: unknown key (provider kind {self.kind!r} reads "
            f"{', '.join(sorted(self.credentials.known)) or 'no credentials'})"
            for key in sorted(set(config.credentials) - self.credentials.known)
        ]
        if config.poll_events and self.poll is None:
            found.append(f"poll_events: provider kind {self.kind!r} has no events API to poll")
        if config.pacing.quota_from_provider and self.quota is None:
            found.append(
                f"pacing.quota_from_provider: provider kind {self.kind!r} publishes no "
                "sending quota; set pacing.messages_per_second and daily_cap instead"
            )
        try:
            self.settings_of(config)
        except ValidationError as err:
            found += [_settings_error(e) for e in err.errors()]
        return found

    def poll_events(
        self, account: str, config: ProviderAccountConfig, cursor: str | None
    ) -> tuple[list[bytes], str | None]:
        """Poll one account (a ``ValueError`` for a kind without an events API)."""
        if self.poll is None:
            raise ValueError(f"provider kind {self.kind!r} has no events API to poll")
        return self.poll(account, config, self.settings_of(config), cursor)

    def backfill_events(
        self,
        account: str,
        config: ProviderAccountConfig,
        start: datetime,
        end: datetime,
        open_message_ids: Sequence[str] = (),
    ) -> list[bytes]:
        """One account's events of ``[start, end]`` and of its open messages (a
        ``ValueError`` for a kind without an events API)."""
        if self.backfill is None:
            raise ValueError(f"provider kind {self.kind!r} has no events API to backfill from")
        settings = self.settings_of(config)
        return self.backfill(account, config, settings, start, end, open_message_ids)

    def provider_quota(self, account: str, config: ProviderAccountConfig) -> ProviderQuota | None:
        """The account's published limits when its config asks for them and the provider
        has them (``None`` otherwise); raises ``ProviderUnavailable`` when reading fails."""
        if self.quota is None or not config.pacing.quota_from_provider:
            return None
        return self.quota(account, config, self.settings_of(config))

    def message_lookup(self, account: str, config: ProviderAccountConfig) -> MessageLookup | None:
        """The account's lookup for reconciliation, if the provider keeps searchable records."""
        if self.lookup is None:
            return None
        return self.lookup(account, config, self.settings_of(config))


def _settings_error(error: ErrorDetails) -> str:
    where = ".".join(["settings", *(str(part) for part in error["loc"])])
    what = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
    return f"{where}: {what.removeprefix('Value error, ')}"
