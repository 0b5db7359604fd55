"""The declarative configuration (``mailers.yaml``), validated fully at load.

A config file describes workspaces (one per brand or client); in each: provider accounts,
sending identities, streams with their routing policy, and campaigns. Validation is strict:
unknown keys are errors, cross references must resolve, and every error names the file, the
key path and the problem. File-level checks (templates, segment models) live in
:mod:`mailers.config_loader`, which is what callers use.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mailers.bigquery_config import BigQueryWarehouseConfig
from mailers.completeness import CompletenessConfig
from mailers.errors import ConfigError
from mailers.journal_config import JournalConfig
from mailers.policy_config import (
    DEFAULT_MAILBOX_PROVIDERS,
    BreakerConfig,
    Count,
    DomainRoute,
    LimitsConfig,
    PacingConfig,
    SendHours,
    TimeZoneName,
    WarmupCurve,
)
from mailers.rules_config import PauseRulesConfig
from mailers.secrets import SecretRef
from mailers.serve_config import ServeConfig
from mailers.snowflake_config import SnowflakeWarehouseConfig
from mailers.subscribers_config import SubscriberConfig

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
"""Names of workspaces, accounts, identities and campaigns: they become table and asset names."""

Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class StreamKind(StrEnum):
    """Mail streams are kept apart: their own identities, routes and reputation."""

    TRANSACTIONAL = "transactional"
    LIFECYCLE = "lifecycle"
    OUTBOUND = "outbound"

    @property
    def needs_unsubscribe(self) -> bool:
        """Bulk streams carry RFC 8058 one-click unsubscribe; transactional mail does not."""
        return self is not StreamKind.TRANSACTIONAL


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderAccountConfig(_Strict):
    """One account at one provider. Credentials are env var references only."""

    kind: str = Field(description="Provider adapter, e.g. 'sandbox'.")
    credentials: dict[str, SecretRef] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Adapter-specific settings, validated by the adapter."
    )
    batch_size: int | None = Field(
        default=None, gt=0, description="Messages per provider call; defaults to the adapter's."
    )
    poll_events: bool = Field(
        default=False,
        description="Fetch events from the provider's events API (for accounts without a "
        "public webhook endpoint).",
    )
    pacing: PacingConfig = Field(default_factory=PacingConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    warmup: WarmupCurve | None = None
    timezone: TimeZoneName | None = Field(
        default=None, description="Where this account's day starts (default: the workspace's)."
    )
    reconcile_absent_after_seconds: float = Field(
        default=300,
        ge=0,
        description="How long after a message was handed over the provider's own records of "
        "it are complete: a message in doubt that the provider still has no record of after "
        "this long is settled as never handed over (and retried).",
    )

    def secret(self, key: str, used_for: str) -> str:
        """The value of credential ``key``; a ConfigError when the config names none."""
        ref = self.credentials.get(key)
        if ref is None:
            raise ConfigError(
                f"{used_for}: credentials.{key} is required (give it as {{env: NAME}})"
            )
        return ref.resolve(f"{used_for} (credentials.{key})")


class IdentityConfig(_Strict):
    """A sending identity: who the mail is from, and which accounts may send as it."""

    from_address: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    from_name: str | None = None
    reply_to: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    provider_accounts: list[Name] = Field(min_length=1)
    timezone: TimeZoneName | None = Field(
        default=None,
        description="Where this identity's day starts, for its caps and warm-up (default: "
        "the workspace's).",
    )
    warmup: WarmupCurve | None = None
    daily_cap: Count | None = Field(default=None, description="Messages per day (a mailbox).")
    min_gap_seconds: float | None = Field(
        default=None, gt=0, description="Shortest time between two sends from this identity."
    )
    send_hours: SendHours | None = None

    @property
    def sending_domain(self) -> str:
        """The domain of the from address, lower-cased (what reputation attaches to)."""
        return self.from_address.rsplit("@", 1)[1].lower()


class _Routing(_Strict):
    """What every routing strategy may add: routes by recipient domain, sticky recipients."""

    domain_routes: list[DomainRoute] = Field(
        default_factory=list,
        description="Checked in order before the strategy: the first route matching the "
        "recipient's domain (or mailbox provider) names the accounts to try first.",
    )
    sticky: bool = Field(
        default=False,
        description="A recipient keeps the account that first sent to them, unless it is down.",
    )

    @property
    def account_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def all_accounts(self) -> list[str]:
        """The strategy's accounts, then those only a domain route names."""
        names = list(self.account_names)
        for route in self.domain_routes:
            names.extend(a for a in route.accounts if a not in names)
        return names


class FailoverRouting(_Routing):
    """Send everything through the first healthy account, in order."""

    strategy: Literal["failover"]
    accounts: list[Name] = Field(min_length=1)

    @property
    def account_names(self) -> list[str]:
        return list(self.accounts)


class WeightedRouting(_Routing):
    """Split traffic between accounts by weight; a failing account fails over to the rest."""

    strategy: Literal["weighted"]
    weights: dict[Name, Annotated[int, Field(gt=0)]] = Field(min_length=1)

    @property
    def account_names(self) -> list[str]:
        return list(self.weights)


RoutingConfig = Annotated[FailoverRouting | WeightedRouting, Field(discriminator="strategy")]


class StreamConfig(_Strict):
    """A mail stream of a workspace: its routing policy and limits."""

    routing: RoutingConfig
    policy: LimitsConfig = Field(default_factory=LimitsConfig)


class SendingDomainConfig(_Strict):
    """A sending domain's own limits: reputation attaches to the domain."""

    warmup: WarmupCurve | None = None
    daily_cap: Count | None = None
    timezone: TimeZoneName | None = None


class ScheduleConfig(_Strict):
    """A recurring campaign: one send window per cron tick."""

    cron: str = Field(description="Five-field cron expression, evaluated in `timezone`.")
    timezone: str = "UTC"


class CampaignConfig(_Strict):
    """A campaign: a segment, a template, an identity (or pool) and a schedule."""

    stream: StreamKind
    segment: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="dbt segment model.")
    template: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="Template directory name.")
    identity: Name | None = None
    identity_pool: list[Name] | None = Field(default=None, min_length=1)
    schedule: ScheduleConfig | None = Field(
        default=None, description="Omit for a one-off campaign (a single send window)."
    )
    description: str | None = None
    policy: LimitsConfig = Field(default_factory=LimitsConfig)
    max_mailbox_wait_seconds: float = Field(
        default=300,
        ge=0,
        description="How long one run may wait for its mailboxes (their min_gap_seconds and "
        "send_hours, mailers.mailboxes) before the rest of its messages are deferred to "
        "the moment a mailbox is free again.",
    )

    @model_validator(mode="after")
    def _one_identity_source(self) -> CampaignConfig:
        if (self.identity is None) == (self.identity_pool is None):
            raise ValueError("give exactly one of 'identity' or 'identity_pool'")
        return self

    @property
    def identities(self) -> list[str]:
        """The identity names this campaign sends as (one, or the pool)."""
        return [self.identity] if self.identity else list(self.identity_pool or [])


class WorkspaceConfig(_Strict):
    """A brand or client: everything it sends with, kept apart from other workspaces."""

    provider_accounts: dict[Name, ProviderAccountConfig] = Field(min_length=1)
    identities: dict[Name, IdentityConfig] = Field(min_length=1)
    streams: dict[StreamKind, StreamConfig] = Field(min_length=1)
    campaigns: dict[Name, CampaignConfig] = Field(default_factory=dict)
    timezone: TimeZoneName = Field(default="UTC", description="Where the workspace's day starts.")
    policy: LimitsConfig = Field(default_factory=LimitsConfig)
    sending_domains: dict[str, SendingDomainConfig] = Field(default_factory=dict)
    mailbox_providers: dict[Name, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_MAILBOX_PROVIDERS.items()},
        description="Mailbox providers by recipient domain (default: gmail, yahoo, microsoft).",
    )
    pause_rules: PauseRulesConfig = Field(
        default_factory=PauseRulesConfig,
        description="Automatic pauses on hard-bounce and complaint rates (mailers.pause_rules).",
    )
    webhook_subscribers: dict[Name, SubscriberConfig] = Field(
        default_factory=dict, description="Canonical events out, signed (mailers.webhooks_out)."
    )

    @model_validator(mode="after")
    def _references_resolve(self) -> WorkspaceConfig:
        problems: list[str] = []
        problems.extend(self._policy_problems())
        for name, identity in self.identities.items():
            for account in identity.provider_accounts:
                if account not in self.provider_accounts:
                    problems.append(
                        f"identities.{name}.provider_accounts: unknown provider account {account!r}"
                    )
        for kind, stream in self.streams.items():
            for account in stream.routing.all_accounts:
                if account not in self.provider_accounts:
                    problems.append(f"streams.{kind}.routing: unknown provider account {account!r}")
            for index, route in enumerate(stream.routing.domain_routes):
                provider = route.mailbox_provider
                if provider is not None and provider not in self.mailbox_providers:
                    known = ", ".join(self.mailbox_providers)
                    problems.append(
                        f"streams.{kind}.routing.domain_routes.{index}.mailbox_provider: unknown "
                        f"mailbox provider {provider!r} (known: {known})"
                    )
        for name, campaign in self.campaigns.items():
            problems.extend(self._campaign_problems(name, campaign))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _policy_problems(self) -> list[str]:
        """Limits a narrower scope loosens, and mailbox providers nothing defines."""
        problems = []
        for kind, stream in self.streams.items():
            problems += loosened(stream.policy, self.policy, f"streams.{kind}.policy", "workspace")
        for name, campaign in self.campaigns.items():
            own = self.streams.get(campaign.stream)
            if own is not None:
                path = f"campaigns.{name}.policy"
                problems += loosened(
                    campaign.policy, own.policy, path, f"stream {campaign.stream.value!r}"
                )
                # What the stream leaves unset, the campaign inherits from the workspace.
                problems += loosened(
                    campaign.policy, _unset_in(self.policy, own.policy), path, "workspace"
                )
        known = set(self.mailbox_providers)
        curves = [(f"identities.{n}.warmup", i.warmup) for n, i in self.identities.items()] + [
            (f"provider_accounts.{n}.warmup", a.warmup) for n, a in self.provider_accounts.items()
        ]
        curves += [
            (f"sending_domains.{n}.warmup", d.warmup) for n, d in self.sending_domains.items()
        ]
        for path, curve in curves:
            for provider in curve.mailbox_providers if curve else {}:
                if provider not in known:
                    problems.append(
                        f"{path}.mailbox_providers: unknown mailbox provider {provider!r}"
                    )
        scopes = [("policy", self.policy)] + [
            (f"streams.{k}.policy", s.policy) for k, s in self.streams.items()
        ]
        scopes += [(f"campaigns.{n}.policy", c.policy) for n, c in self.campaigns.items()]
        for path, limits in scopes:
            for provider in limits.mailbox_provider_daily_caps:
                if provider not in known:
                    problems.append(
                        f"{path}.mailbox_provider_daily_caps: unknown mailbox provider {provider!r}"
                    )
        return problems

    def _campaign_problems(self, name: str, campaign: CampaignConfig) -> list[str]:
        path = f"campaigns.{name}"
        if campaign.stream not in self.streams:
            return [f"{path}.stream: stream {campaign.stream.value!r} is not configured"]
        problems = []
        routed = self.streams[campaign.stream].routing.all_accounts
        for identity_name in campaign.identities:
            identity = self.identities.get(identity_name)
            if identity is None:
                problems.append(f"{path}: unknown identity {identity_name!r}")
                continue
            for account in routed:
                if account not in identity.provider_accounts:
                    problems.append(
                        f"{path}: identity {identity_name!r} may not be sent by provider "
                        f"account {account!r}, which stream {campaign.stream.value!r} routes to"
                    )
        return problems


def loosened(narrow: LimitsConfig, wide: LimitsConfig, path: str, wider: str) -> list[str]:
    """Where ``narrow`` allows more than ``wide`` (a scope may tighten, never loosen)."""
    problems = []
    for key in ("daily_cap", "messages_per_second"):
        mine, theirs = getattr(narrow, key), getattr(wide, key)
        if mine is not None and theirs is not None and mine > theirs:
            problems.append(
                f"{path}.{key}: {mine} loosens the {wider}'s {theirs} (a scope may only tighten)"
            )
    for provider, cap in narrow.mailbox_provider_daily_caps.items():
        theirs = wide.mailbox_provider_daily_caps.get(provider)
        if theirs is not None and cap > theirs:
            problems.append(
                f"{path}.mailbox_provider_daily_caps.{provider}: {cap} loosens the {wider}'s "
                f"{theirs} (a scope may only tighten)"
            )
    return problems


def _unset_in(wide: LimitsConfig, narrow: LimitsConfig) -> LimitsConfig:
    """``wide``'s limits that ``narrow`` does not set itself."""
    return LimitsConfig(
        daily_cap=wide.daily_cap if narrow.daily_cap is None else None,
        messages_per_second=wide.messages_per_second
        if narrow.messages_per_second is None
        else None,
        mailbox_provider_daily_caps={
            provider: cap
            for provider, cap in wide.mailbox_provider_daily_caps.items()
            if provider not in narrow.mailbox_provider_daily_caps
        },
    )


class DuckDBWarehouseConfig(_Strict):
    """The embedded default: one DuckDB file under ``data_dir``."""

    kind: Literal["duckdb"] = "duckdb"
    path: str = Field(default="warehouse.duckdb", description="Relative to data_dir.")


class PostgresWarehouseConfig(_Strict):
    """A PostgreSQL database (15 or later), reached over the network.

    Either ``dsn`` (a libpq URI or ``key=value`` string, without a password) or ``host``,
    ``database`` and ``user``; the password always comes from the environment.
    """

    kind: Literal["postgres"]
    dsn: str | None = Field(default=None, description="libpq connection string, no password.")
    host: str | None = None
    port: int = Field(default=5432, gt=0, lt=65536)
    database: str | None = None
    user: str | None = None
    password: SecretRef | None = Field(default=None, description="The password, as {env: NAME}.")
    connect_timeout_seconds: int = Field(default=10, gt=0)

    @model_validator(mode="after")
    def _reachable(self) -> PostgresWarehouseConfig:
        if self.dsn is not None:
            if self.host is not None or self.database is not None:
                raise ValueError("give either dsn or host/database/user, not both")
            if _DSN_PASSWORD.search(self.dsn):
                raise ValueError(
                    "dsn must not hold a password; set warehouse.password: {env: NAME}"
                )
        else:
            missing = [k for k in ("host", "database", "user") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"needs dsn, or host, database and user (missing: {missing})")
        return self


_DSN_PASSWORD = re.compile(r"(^|\s)password\s*=|://[^/@:]*:[^/@]*@", re.IGNORECASE)
"""A password inside a connection string (``password=...`` or ``user:secret@`` in a URI)."""

WarehouseConfig = Annotated[
    DuckDBWarehouseConfig
    | PostgresWarehouseConfig
    | BigQueryWarehouseConfig
    | SnowflakeWarehouseConfig,
    Field(discriminator="kind"),
]
"""Where Mailers' tables and the dbt models live: one engine, chosen by ``kind``."""


class UnsubscribeConfig(_Strict):
    """RFC 8058 one-click unsubscribe links: where they point and the key that signs them."""

    base_url: str = Field(pattern=r"^https://")
    signing_key: SecretRef
    # A year: CAN-SPAM wants an opt-out to work for at least 30 days after sending, and
    # people unsubscribe from mail in their archive months later; a dead link there turns
    # into a "report spam" click. A leaked token can only unsubscribe, so little is lost.
    token_ttl_days: int | None = Field(
        default=365,
        ge=30,
        description="Days an unsubscribe link keeps working (at least 30); null: forever.",
    )


class MailersConfig(_Strict):
    """The whole configuration file."""

    version: Literal[1] = 1
    data_dir: str = Field(default=".mailers", description="Relative to the config file.")
    dbt_project_dir: str = Field(default="dbt_project", description="Relative to the config file.")
    templates_dir: str = Field(default="templates", description="Relative to the config file.")
    warehouse: WarehouseConfig = Field(default_factory=DuckDBWarehouseConfig)
    unsubscribe: UnsubscribeConfig
    serve: ServeConfig = Field(default_factory=ServeConfig)
    workspaces: dict[Name, WorkspaceConfig] = Field(min_length=1)
    completeness: CompletenessConfig = Field(default_factory=CompletenessConfig)
    ledger: JournalConfig = Field(default_factory=JournalConfig)

    @model_validator(mode="after")
    def _account_names_unique(self) -> MailersConfig:
        # Landing files, .eml folders and ledger rows name an account without its workspace.
        owners: dict[str, str] = {}
        problems = []
        for ws_name, workspace in self.workspaces.items():
            for account in workspace.provider_accounts:
                if account in owners:
                    problems.append(
                        f"workspaces.{ws_name}.provider_accounts.{account}: provider account "
                        f"names must be unique across workspaces (also in {owners[account]!r})"
                    )
                owners.setdefault(account, ws_name)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Settings(BaseModel):
    """A validated config plus where it came from; what the rest of Mailers is handed."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: MailersConfig
    path: Path
    config_hash: str
    data_dir: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def dbt_project_dir(self) -> Path:
        return (self.base_dir / self.config.dbt_project_dir).resolve()

    @property
    def templates_dir(self) -> Path:
        return (self.base_dir / self.config.templates_dir).resolve()

    @property
    def warehouse_path(self) -> Path:
        """The DuckDB file (only a DuckDB warehouse has one)."""
        warehouse = self.config.warehouse
        if not isinstance(warehouse, DuckDBWarehouseConfig):
            raise ConfigError(f"warehouse.kind is {warehouse.kind!r}: it has no file path")
        return (self.data_dir / warehouse.path).resolve()

    @property
    def outbox_dir(self) -> Path:
        """Where the sandbox provider writes each message as an ``.eml`` file."""
        return self.data_dir / "outbox"

    @property
    def landing_dir(self) -> Path:
        """Where provider events land as files before the events asset loads them."""
        return self.data_dir / "landing"

    def campaigns(self) -> list[CampaignRef]:
        """Every campaign of every workspace, in config order."""
        return [
            CampaignRef(workspace=ws_name, name=name, config=campaign)
            for ws_name, ws in self.config.workspaces.items()
            for name, campaign in ws.campaigns.items()
        ]

    def campaign(self, qualified_name: str) -> CampaignRef:
        """Look a campaign up by ``workspace.campaign`` (or a bare name when unique)."""
        matches = [
            ref for ref in self.campaigns() if qualified_name in (ref.qualified_name, ref.name)
        ]
        if len(matches) != 1:
            known = ", ".join(ref.qualified_name for ref in self.campaigns())
            why = "is ambiguous" if matches else "does not exist"
            raise KeyError(f"campaign {qualified_name!r} {why}; known: {known}")
        return matches[0]


class CampaignRef(BaseModel):
    """A campaign together with the workspace it belongs to."""

    model_config = ConfigDict(frozen=True)

    workspace: str
    name: str
    config: CampaignConfig

    @property
    def qualified_name(self) -> str:
        return f"{self.workspace}.{self.name}"
