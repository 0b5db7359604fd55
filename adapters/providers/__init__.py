"""Provider adapters, one module per provider kind, found through :data:`PROVIDER_MODULES`.

A provider module exposes:

* ``KIND`` and ``MAX_BATCH_SIZE``;
* ``Settings``: a pydantic model (``extra="forbid"``) of its ``settings:`` config block;
* ``build(account, config, settings, paths)``: a ``mailers.providers.Provider``;
* ``parse(payload, account)``: canonical events from one landed payload;
* ``verify_webhook(request, config, guard)``: refuse forged, stale or replayed webhooks
  (providers that have webhooks);
* ``poll_events(account, config, settings, cursor)``: new event payloads and the next
  cursor (providers with an events API).

Modules are imported when first used, so a provider's SDK is needed only if it is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType

from pydantic import ValidationError

from mailers.config import ProviderAccountConfig, Settings
from mailers.errors import ConfigError
from mailers.polling import PollTarget
from mailers.providers import EventParser, Provider

PROVIDER_MODULES: dict[str, str] = {
    "mailgun": "adapters.providers.mailgun",
    "postmark": "adapters.providers.postmark",
    "sandbox": "adapters.providers.sandbox",
    "sendgrid": "adapters.providers.sendgrid",
    "ses": "adapters.providers.ses",
    "smtp": "adapters.providers.smtp",
}
"""Provider kind → module implementing it. Adding a provider adds one line here."""


def provider_module(kind: str) -> ModuleType:
    """The module of a provider kind; a ConfigError names the kinds there are."""
    module = PROVIDER_MODULES.get(kind)
    if module is None:
        known = ", ".join(sorted(PROVIDER_MODULES))
        raise ConfigError(f"unknown provider kind {kind!r} (available: {known})")
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ConfigError(
            f"provider kind {kind!r} needs an optional dependency: {err.name} "
            f"(pip install 'mailers[{kind}]')"
        ) from err


def check_account(account: ProviderAccountConfig) -> list[str]:
    """Problems with one account's kind and settings (empty when it is fine)."""
    try:
        module = provider_module(account.kind)
    except ConfigError as err:
        return [f"kind: {err}"]
    if account.poll_events and not hasattr(module, "poll_events"):
        return [f"poll_events: provider kind {account.kind!r} has no events API to poll"]
    try:
        module.Settings.model_validate(account.settings)
    except ValidationError as err:
        return [
            ".".join(["settings", *(str(part) for part in e["loc"])])
            + ": "
            + (
                "unknown key"
                if e["type"] == "extra_forbidden"
                else e["msg"].removeprefix("Value error, ")
            )
            for e in err.errors()
        ]
    return []


def build_providers(settings: Settings, workspace: str) -> Mapping[str, Provider]:
    """Every provider account of a workspace, ready to send."""
    accounts = settings.config.workspaces[workspace].provider_accounts
    return {name: _build(name, account, settings) for name, account in accounts.items()}


def _build(name: str, account: ProviderAccountConfig, settings: Settings) -> Provider:
    module = provider_module(account.kind)
    provider: Provider = module.build(
        name, account, module.Settings.model_validate(account.settings), settings
    )
    return provider


def event_parser(kind: str) -> EventParser:
    """The parser for events landed by a provider kind."""
    parser: EventParser = provider_module(kind)
    return parser


def poll_targets(settings: Settings) -> list[PollTarget]:
    """Every account configured with ``poll_events: true``, ready to poll."""
    targets = []
    for workspace in settings.config.workspaces.values():
        for name, account in workspace.provider_accounts.items():
            if not account.poll_events:
                continue
            module = provider_module(account.kind)
            provider_settings = module.Settings.model_validate(account.settings)

            def fetch(
                cursor: str | None,
                module: ModuleType = module,
                name: str = name,
                account: ProviderAccountConfig = account,
                provider_settings: object = provider_settings,
            ) -> tuple[list[bytes], str | None]:
                result: tuple[list[bytes], str | None] = module.poll_events(
                    name, account, provider_settings, cursor
                )
                return result

            targets.append(PollTarget(kind=account.kind, account=name, fetch=fetch))
    return targets
