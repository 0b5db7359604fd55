"""Every provider kind Mailers has: one :class:`~adapters.providers.spec.ProviderSpec` each.

Adding a provider adds its package and one line to :data:`SPECS`. Everything else reads
capabilities from the spec: building senders, checking an account's config, verifying
and parsing webhooks, polling events APIs, reconciling against provider records and
reading published sending quotas.

Every sender it builds is paced (:class:`~mailers.pacing.Pacer`) by its account's
``pacing:`` config, at the tighter of ``messages_per_second`` and, with
``quota_from_provider``, the provider's published rate, with a burst of one wave of calls;
``pacing.concurrency`` replaces the provider's default calls in flight. Daily caps are not
enforced here: :func:`account_quotas` tells the sender what each account may still send.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from adapters.bulk_events import DuckDBBulkParser
from adapters.providers import mailgun, postmark, resend, sandbox, sendgrid, ses, smtp
from adapters.providers.base import BatchProvider
from adapters.providers.spec import ProviderSpec
from mailers.backfill import BackfillTarget
from mailers.config import ProviderAccountConfig, Settings
from mailers.errors import ConfigError, ProviderUnavailable
from mailers.pacing import Pacer, ProviderQuota, daily_limit, pace_limit
from mailers.polling import PollTarget
from mailers.providers import EventParser, Provider
from mailers.reconcile import MessageLookup
from mailers.unsubscribe_landing import PARSER as UNSUBSCRIBE_PARSER
from mailers.unsubscribe_landing import UNSUBSCRIBE_KIND

SPECS: Mapping[str, ProviderSpec[Any]] = {
    spec.kind: spec
    for spec in (
        mailgun.SPEC,
        postmark.SPEC,
        resend.SPEC,
        sandbox.SPEC,
        sendgrid.SPEC,
        ses.SPEC,
        smtp.SPEC,
    )
}
"""Provider kind → its spec."""

log = logging.getLogger(__name__)


def provider_spec(kind: str) -> ProviderSpec[Any]:
    """The spec of a provider kind; a ConfigError names the kinds there are."""
    spec = SPECS.get(kind)
    if spec is None:
        known = ", ".join(sorted(SPECS))
        raise ConfigError(f"unknown provider kind {kind!r} (available: {known})")
    return spec


def check_account(account: ProviderAccountConfig) -> list[str]:
    """Problems with one account's kind, credentials and settings (empty when it is fine)."""
    try:
        spec = provider_spec(account.kind)
    except ConfigError as err:
        return [f"kind: {err}"]
    return spec.problems(account)


def build_providers(settings: Settings, workspace: str) -> Mapping[str, Provider]:
    """Every provider account of a workspace, ready to send."""
    accounts = settings.config.workspaces[workspace].provider_accounts
    return {name: build_provider(name, account, settings) for name, account in accounts.items()}


def build_provider(name: str, account: ProviderAccountConfig, settings: Settings) -> Provider:
    """One provider account, paced and ready to send; a missing SDK is a ConfigError naming
    the extra."""
    spec = provider_spec(account.kind)
    try:
        provider = spec.build(name, account, spec.settings_of(account), settings)
    except ImportError as err:
        raise ConfigError(
            f"provider kind {account.kind!r} needs an optional dependency: {err.name} "
            f"(pip install 'mailers[{account.kind}]')"
        ) from err
    if isinstance(provider, BatchProvider):
        concurrency = account.pacing.concurrency or provider.concurrency
        pacer = Pacer.of(
            account.pacing,
            largest_wave=provider.request_size * concurrency,
            quota=_quota(spec, name, account),
        )
        provider.pace(pacer, concurrency=account.pacing.concurrency)
    return provider


def account_quotas(settings: Settings, workspace: str) -> dict[str, ProviderQuota]:
    """Every account's limits: the tighter of its ``pacing:`` config and, with
    ``quota_from_provider``, what the provider publishes (with what it says was sent in the
    last 24 hours). ``None`` fields are unlimited (or unknown)."""
    accounts = settings.config.workspaces[workspace].provider_accounts
    found: dict[str, ProviderQuota] = {}
    for name, account in accounts.items():
        published = _quota(provider_spec(account.kind), name, account)
        found[name] = ProviderQuota(
            max_send_rate=pace_limit(account.pacing, published),
            max_24_hour_send=daily_limit(account.pacing, published),
            sent_last_24_hours=published.sent_last_24_hours if published else None,
        )
    return found


def _quota(
    spec: ProviderSpec[Any], name: str, account: ProviderAccountConfig
) -> ProviderQuota | None:
    """The provider's published quota when asked for; unreadable, the config alone paces."""
    try:
        return spec.provider_quota(name, account)
    except ProviderUnavailable as err:
        log.warning("account %s: sending quota not read, pacing by the config alone: %s", name, err)
        return None


def event_parser(kind: str) -> EventParser:
    """The parser for events landed under ``kind``: a provider's spec (``spec.parse``), or
    for one-click unsubscribes (:data:`~mailers.unsubscribe_landing.UNSUBSCRIBE_KIND`, no
    provider) their own."""
    if kind == UNSUBSCRIBE_KIND:
        return UNSUBSCRIBE_PARSER
    return provider_spec(kind)


def bulk_event_parser(*, threads: int | None = None) -> DuckDBBulkParser:
    """A set-based parser with every provider's SQL mapping (``spec.events_sql``); files of
    kinds without one, and lines a mapping leaves over, go to :func:`event_parser`'s."""
    return DuckDBBulkParser(
        {kind: spec.events_sql for kind, spec in SPECS.items() if spec.events_sql},
        threads=threads,
    )


def poll_targets(settings: Settings) -> list[PollTarget]:
    """Every account configured with ``poll_events: true``, ready to poll."""
    targets = []
    for workspace in settings.config.workspaces.values():
        for name, account in workspace.provider_accounts.items():
            if not account.poll_events:
                continue
            spec = provider_spec(account.kind)

            def fetch(
                cursor: str | None,
                spec: ProviderSpec[Any] = spec,
                name: str = name,
                account: ProviderAccountConfig = account,
            ) -> tuple[list[bytes], str | None]:
                return spec.poll_events(name, account, cursor)

            targets.append(PollTarget(kind=account.kind, account=name, fetch=fetch))
    return targets


def backfill_targets(
    settings: Settings, accounts: Collection[str] | None = None
) -> list[BackfillTarget]:
    """Every account (of ``accounts``, if given) whose provider can fetch a past window's
    events, ready for :func:`mailers.backfill.backfill_into_landing`."""
    targets = []
    for workspace in settings.config.workspaces.values():
        for name, account in workspace.provider_accounts.items():
            spec = provider_spec(account.kind)
            if spec.backfill is None or (accounts is not None and name not in accounts):
                continue

            def fetch(
                start: datetime,
                end: datetime,
                open_message_ids: Sequence[str],
                spec: ProviderSpec[Any] = spec,
                name: str = name,
                account: ProviderAccountConfig = account,
            ) -> list[bytes]:
                return spec.backfill_events(name, account, start, end, open_message_ids)

            targets.append(BackfillTarget(kind=account.kind, account=name, fetch=fetch))
    return targets


def message_lookups(settings: Settings, workspace: str) -> dict[str, MessageLookup]:
    """A lookup for every account of ``workspace`` whose provider keeps searchable records."""
    accounts = settings.config.workspaces[workspace].provider_accounts
    found: dict[str, MessageLookup] = {}
    for name, account in accounts.items():
        lookup = provider_spec(account.kind).message_lookup(name, account)
        if lookup is not None:
            found[name] = lookup
    return found
