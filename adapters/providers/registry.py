"""Every provider kind Mailers has: one :class:`~adapters.providers.spec.ProviderSpec` each.

Adding a provider adds its package and one line to :data:`SPECS`. Everything else reads
capabilities from the spec: building senders, checking an account's config, verifying
and parsing webhooks, polling events APIs and reconciling against provider records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.providers import mailgun, postmark, resend, sandbox, sendgrid, ses, smtp
from adapters.providers.spec import ProviderSpec
from mailers.config import ProviderAccountConfig, Settings
from mailers.errors import ConfigError
from mailers.polling import PollTarget
from mailers.providers import EventParser, Provider
from mailers.reconcile import MessageLookup

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
    """One provider account, ready to send; a missing SDK is a ConfigError naming the extra."""
    spec = provider_spec(account.kind)
    try:
        return spec.build(name, account, spec.settings_of(account), settings)
    except ImportError as err:
        raise ConfigError(
            f"provider kind {account.kind!r} needs an optional dependency: {err.name} "
            f"(pip install 'mailers[{account.kind}]')"
        ) from err


def event_parser(kind: str) -> EventParser:
    """The parser for events landed by a provider kind (its spec: ``spec.parse``)."""
    return provider_spec(kind)


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


def message_lookups(settings: Settings, workspace: str) -> dict[str, MessageLookup]:
    """A lookup for every account of ``workspace`` whose provider keeps searchable records."""
    accounts = settings.config.workspaces[workspace].provider_accounts
    found: dict[str, MessageLookup] = {}
    for name, account in accounts.items():
        lookup = provider_spec(account.kind).message_lookup(name, account)
        if lookup is not None:
            found[name] = lookup
    return found
