"""The declarative configuration (``mailers.yaml``), validated fully at load.

A config file describes workspaces (one per brand or client); in each: provider accounts,
sending identities, streams with their routing policy, and campaigns. Validation is strict:
unknown keys are errors, cross references must resolve, and every error names the file, the
key path and the problem. File-level checks (templates, segment models) live in
:mod:`mailers.config_loader`, which is what callers use.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mailers.errors import ConfigError
from mailers.secrets import SecretRef

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

    @property
    def sending_domain(self) -> str:
        """The domain of the from address, lower-cased (what reputation attaches to)."""
        return self.from_address.rsplit("@", 1)[1].lower()


class FailoverRouting(_Strict):
    """Send everything through the first healthy account, in order."""

    strategy: Literal["failover"]
    accounts: list[Name] = Field(min_length=1)

    @property
    def account_names(self) -> list[str]:
        return list(self.accounts)


class WeightedRouting(_Strict):
    """Split traffic between accounts by weight; a failing account fails over to the rest."""

    strategy: Literal["weighted"]
    weights: dict[Name, Annotated[int, Field(gt=0)]] = Field(min_length=1)

    @property
    def account_names(self) -> list[str]:
        return list(self.weights)


RoutingConfig = Annotated[FailoverRouting | WeightedRouting, Field(discriminator="strategy")]


class StreamConfig(_Strict):
    """A mail stream of a workspace: its routing policy."""

    routing: RoutingConfig


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

    @model_validator(mode="after")
    def _references_resolve(self) -> WorkspaceConfig:
        problems: list[str] = []
        for name, identity in self.identities.items():
            for account in identity.provider_accounts:
                if account not in self.provider_accounts:
                    problems.append(
                        f"identities.{name}.provider_accounts: unknown provider account {account!r}"
                    )
        for kind, stream in self.streams.items():
            for account in stream.routing.account_names:
                if account not in self.provider_accounts:
                    problems.append(f"streams.{kind}.routing: unknown provider account {account!r}")
        for name, campaign in self.campaigns.items():
            problems.extend(self._campaign_problems(name, campaign))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _campaign_problems(self, name: str, campaign: CampaignConfig) -> list[str]:
        path = f"campaigns.{name}"
        if campaign.stream not in self.streams:
            return [f"{path}.stream: stream {campaign.stream.value!r} is not configured"]
        problems = []
        routed = self.streams[campaign.stream].routing.account_names
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


class WarehouseConfig(_Strict):
    """Where Mailers' tables and the dbt models live. DuckDB is the embedded default."""

    kind: Literal["duckdb"] = "duckdb"
    path: str = Field(default="warehouse.duckdb", description="Relative to data_dir.")


class UnsubscribeConfig(_Strict):
    """RFC 8058 one-click unsubscribe links: where they point and the key that signs them."""

    base_url: str = Field(pattern=r"^https://")
    signing_key: SecretRef


class MailersConfig(_Strict):
    """The whole configuration file."""

    version: Literal[1] = 1
    data_dir: str = Field(default=".mailers", description="Relative to the config file.")
    dbt_project_dir: str = Field(default="dbt_project", description="Relative to the config file.")
    templates_dir: str = Field(default="templates", description="Relative to the config file.")
    warehouse: WarehouseConfig = Field(default_factory=WarehouseConfig)
    unsubscribe: UnsubscribeConfig
    workspaces: dict[Name, WorkspaceConfig] = Field(min_length=1)

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
        return (self.data_dir / self.config.warehouse.path).resolve()

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
