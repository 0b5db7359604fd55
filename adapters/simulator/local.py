"""Run a config's providers locally: the simulator behind every loopback account, plus a
webhook service (:class:`~adapters.serve.embedded.EmbeddedServer`) that the simulator
posts signed webhooks to.

An account is *simulated* when its provider kind has a simulator module and its
``settings.base_url`` points at a loopback address. :class:`LocalProviders` starts one
simulator on that address, registers each simulated account's credentials with it, and
after every request to a webhook-sending provider posts the events it produced, signed the
way that provider signs them, to the receiver, which verifies and lands them. Accounts with
``poll_events: true`` get their events through the events API instead, as in production.

Credentials come from the environment like any account's. For the demo only,
:func:`demo_credentials` fills the variables that are unset with throwaway values (and a
fresh signing key pair for SendGrid, a ``whsec_`` secret for Resend) so the simulator and
the adapters agree.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from adapters.serve.embedded import EmbeddedServer
from adapters.simulator import mailgun, postmark, resend, sendgrid
from adapters.simulator.server import Request, Response, Simulator
from mailers.config import MailersConfig, ProviderAccountConfig, Settings
from mailers.errors import ConfigError
from mailers.webhooks import WebhookRequest

SIMULATED_KINDS = {"postmark": postmark, "mailgun": mailgun, "sendgrid": sendgrid, "resend": resend}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class SimulatedAccount:
    """A provider account served by the local simulator."""

    workspace: str
    name: str
    config: ProviderAccountConfig

    @property
    def kind(self) -> str:
        return self.config.kind

    def credentials(self) -> dict[str, str]:
        return {
            key: ref.resolve(f"provider account {self.name} credentials.{key}")
            for key, ref in self.config.credentials.items()
        }


def simulated_accounts(settings: Settings) -> list[SimulatedAccount]:
    """Accounts of simulated kinds whose ``base_url`` is a loopback address."""
    found = []
    for ws_name, workspace in settings.config.workspaces.items():
        for name, account in workspace.provider_accounts.items():
            base_url = str(account.settings.get("base_url", ""))
            if account.kind in SIMULATED_KINDS and urlsplit(base_url).hostname in _LOOPBACK:
                found.append(SimulatedAccount(ws_name, name, account))
    return found


def on_simulator_port(settings: Settings, port: int) -> Settings:
    """``settings`` with every simulated account's ``base_url`` moved to ``port``."""
    simulated = {(a.workspace, a.name) for a in simulated_accounts(settings)}
    document = settings.config.model_dump(mode="json", exclude_unset=True)
    for ws_name, workspace in document["workspaces"].items():
        for name, account in workspace["provider_accounts"].items():
            if (ws_name, name) in simulated:
                split = urlsplit(str(account["settings"]["base_url"]))
                host = split.hostname or "127.0.0.1"
                netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                account["settings"]["base_url"] = split._replace(netloc=netloc).geturl()
    return settings.model_copy(update={"config": MailersConfig.model_validate(document)})


def demo_credentials(settings: Settings) -> dict[str, str]:
    """Fill unset credential env vars of simulated accounts with throwaway demo values.

    Returns private signing keys the simulator needs (never put in the environment).
    """
    private: dict[str, str] = {}
    for account in simulated_accounts(settings):
        for key, ref in account.config.credentials.items():
            if os.environ.get(ref.env):
                continue
            if account.kind == "sendgrid" and key == "webhook_public_key":
                private_pem, public_b64 = sendgrid.generate_webhook_keys()
                private[account.name] = private_pem
                os.environ[ref.env] = public_b64
            elif account.kind == "resend" and key == "webhook_secret":
                os.environ[ref.env] = resend.generate_webhook_secret()
            else:
                os.environ[ref.env] = f"demo-{secrets.token_hex(12)}"
    return private


@dataclass
class LocalProviders:
    """The simulator and a webhook receiver for every simulated account of ``settings``."""

    settings: Settings
    signing_keys: dict[str, str] = field(default_factory=dict)
    """SendGrid webhook private keys by account (see :func:`demo_credentials`)."""

    def __post_init__(self) -> None:
        self.accounts = simulated_accounts(self.settings)
        origins = {
            urlsplit(str(a.config.settings["base_url"]))._replace(path="").geturl()
            for a in self.accounts
        }
        if len(origins) > 1:
            raise ConfigError(f"simulated accounts must share one base_url; found {origins}")
        kinds = [a.kind for a in self.accounts]
        for kind in set(kinds):
            if kinds.count(kind) > 1:
                raise ConfigError(f"the simulator serves one {kind} account; found several")
        self.origin = origins.pop() if origins else None
        self.simulator: Simulator | None = None
        self.receiver: EmbeddedServer | None = None
        self._posted: dict[str, int] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> LocalProviders:
        if self.origin is None:
            return self
        split = urlsplit(self.origin)
        try:
            simulator = Simulator(split.hostname or "127.0.0.1", split.port or 80)
        except OSError as err:
            raise ConfigError(
                f"cannot start the provider simulator on {self.origin} (the simulated "
                f"accounts' base_url): {err.strerror}; stop what uses that port or point "
                "the accounts' settings.base_url at a free one"
            ) from err
        self.simulator = simulator.start()
        self.receiver = EmbeddedServer(self.settings).start()
        for account in self.accounts:
            credentials = account.credentials()
            module: Any = SIMULATED_KINDS[account.kind]
            if account.kind == "mailgun":
                module.register(
                    self.simulator,
                    credentials=credentials,
                    domains=[account.config.settings["domain"]],
                )
            else:
                module.register(self.simulator, credentials=credentials)
            if not account.config.poll_events and account.kind != "mailgun":
                self.simulator.after_request[account.kind] = self._poster(account, credentials)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.simulator is not None:
            self.simulator.stop()
        if self.receiver is not None:
            self.receiver.stop()

    def _poster(
        self, account: SimulatedAccount, credentials: dict[str, str]
    ) -> Callable[[Request, Response], None]:
        """After each request: post the webhooks for events the provider has not posted."""
        assert self.receiver is not None and self.simulator is not None
        url = self.receiver.url_for(account.workspace, account.name)
        signing = {**credentials, "webhook_private_key": self.signing_keys.get(account.name, "")}
        store = self.simulator.store

        def post(_request: Request, _response: Response) -> None:
            with self._lock:
                events = store.get(account.kind, {}).get("events", [])
                start = self._posted.get(account.kind, 0)
                fresh, self._posted[account.kind] = events[start:], len(events)
            for request in _webhooks(account.kind, fresh, signing):
                httpx.post(url, content=request.body, headers=dict(request.headers), timeout=10)

        return post


def _webhooks(kind: str, events: list[Any], credentials: dict[str, str]) -> list[WebhookRequest]:
    if not events:
        return []
    if kind == "sendgrid":
        return [
            sendgrid.webhook_request(events[start : start + 100], credentials)
            for start in range(0, len(events), 100)
        ]
    if kind == "resend":
        return [resend.webhook_request(event, credentials) for event in events]
    return [postmark.webhook_request(event, credentials) for event in events]
