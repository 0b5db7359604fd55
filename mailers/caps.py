"""Daily caps: every limit on how much one scope may hand to providers on one day.

A cap belongs to a scope (the workspace, a stream, a campaign, a sending domain, an
identity or a provider account, optionally narrowed to one mailbox provider) and comes
from config: a ``daily_cap``, a ``mailbox_provider_daily_caps`` entry, an account's quota,
or a warm-up curve (:mod:`mailers.warmup`). Each counts days in its scope's time zone.
What has been used against the caps is counted by :mod:`mailers.allowance`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from mailers.config import CampaignRef, WorkspaceConfig
from mailers.policy_config import LimitsConfig, WarmupCurve
from mailers.warmup import curve_day, next_day_with_room


class ScopeKind(StrEnum):
    """What a cap limits, narrowest last. Account caps are the ones overflow can route around."""

    WORKSPACE = "workspace"
    STREAM = "stream"
    CAMPAIGN = "campaign"
    DOMAIN = "domain"
    IDENTITY = "identity"
    ACCOUNT = "account"


@dataclass(frozen=True, slots=True)
class Usage:
    """What one message uses: the values every scope is matched against."""

    stream: str
    campaign: str
    identity: str | None
    sending_domain: str | None
    provider_account: str | None
    mailbox_provider: str | None


_FIELD = {
    ScopeKind.STREAM: "stream",
    ScopeKind.CAMPAIGN: "campaign",
    ScopeKind.DOMAIN: "sending_domain",
    ScopeKind.IDENTITY: "identity",
    ScopeKind.ACCOUNT: "provider_account",
}


@dataclass(frozen=True, slots=True)
class Scope:
    """Who a cap limits: one workspace-wide scope, optionally one mailbox provider of it."""

    kind: ScopeKind
    name: str
    mailbox_provider: str | None = None

    def matches(self, usage: Usage) -> bool:
        """Whether a message with ``usage`` counts against this scope."""
        if self.mailbox_provider is not None and usage.mailbox_provider != self.mailbox_provider:
            return False
        field = _FIELD.get(self.kind)
        return field is None or getattr(usage, field) == self.name

    def __str__(self) -> str:
        where = f"{self.kind} {self.name}"
        return f"{where} to {self.mailbox_provider}" if self.mailbox_provider else where


@dataclass(frozen=True, eq=False)
class Cap:
    """One daily limit of one scope: a fixed number, or a warm-up curve's."""

    scope: Scope
    timezone: str
    source: str
    """The config key it comes from, e.g. ``identities.news.warmup``."""
    fixed: int | None = None
    curve: WarmupCurve | None = None

    def limit_on(self, day: date) -> int | None:
        """Messages allowed on ``day`` (``None``: this cap no longer limits)."""
        if self.curve is not None:
            return curve_day(self.curve, day, self.scope.mailbox_provider).cap
        return self.fixed

    def next_day_with_room(self, day: date) -> date:
        """The first day after ``day`` on which this cap allows a message."""
        if self.curve is not None:
            return next_day_with_room(self.curve, day, self.scope.mailbox_provider)
        if not self.fixed:
            raise ValueError(f"{self.source} is 0: {self.scope} may never send")
        return day + timedelta(days=1)

    def local_day(self, moment: datetime) -> date:
        """The day ``moment`` (aware) falls on in this cap's time zone."""
        return moment.astimezone(ZoneInfo(self.timezone)).date()

    def day_bounds(self, day: date) -> tuple[datetime, datetime]:
        """``day`` in this cap's time zone as naive-UTC ``[start, end)``."""
        return day_bounds(self.timezone, day)


def day_bounds(timezone: str, day: date) -> tuple[datetime, datetime]:
    """One local day of ``timezone`` as naive-UTC ``[start, end)`` (23 or 25 hours at DST)."""
    zone = ZoneInfo(timezone)
    start = datetime.combine(day, time(), zone)
    end = datetime.combine(day + timedelta(days=1), time(), zone)
    return (_naive_utc(start), _naive_utc(end))


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


def campaign_caps(
    workspace: WorkspaceConfig,
    campaign: CampaignRef,
    accounts: list[str],
    quotas: Mapping[str, int] | None = None,
) -> list[Cap]:
    """Every cap a message of ``campaign`` may run into, via any of ``accounts``.

    ``quotas`` are daily quotas the providers publish (e.g. SES's), applied beside the
    configured ones.
    """
    stream = workspace.streams[campaign.config.stream]
    ws_zone = workspace.timezone
    # The limits inherit their day workspace -> stream -> campaign; owners (domains,
    # identities, accounts) count theirs in their own zone, else the workspace's.
    limits_zone = workspace.policy.timezone or ws_zone
    stream_zone = stream.policy.timezone or limits_zone
    caps = list(
        _limit_caps(
            Scope(ScopeKind.WORKSPACE, campaign.workspace), workspace.policy, "policy", limits_zone
        )
    )
    caps += _limit_caps(
        Scope(ScopeKind.STREAM, str(campaign.config.stream)),
        stream.policy,
        f"streams.{campaign.config.stream}.policy",
        stream_zone,
    )
    caps += _limit_caps(
        Scope(ScopeKind.CAMPAIGN, campaign.name),
        campaign.config.policy,
        f"campaigns.{campaign.name}.policy",
        campaign.config.policy.timezone or stream_zone,
    )
    identities = {n: workspace.identities[n] for n in campaign.config.identities}
    for domain in sorted({i.sending_domain for i in identities.values()}):
        own = workspace.sending_domains.get(domain)
        if own is not None:
            zone = own.timezone or ws_zone
            path = f"sending_domains.{domain}"
            caps += _owner_caps(
                Scope(ScopeKind.DOMAIN, domain), own.daily_cap, own.warmup, path, zone
            )
    for name, identity in identities.items():
        zone = identity.timezone or ws_zone
        caps += _owner_caps(
            Scope(ScopeKind.IDENTITY, name),
            identity.daily_cap,
            identity.warmup,
            f"identities.{name}",
            zone,
        )
    for name in accounts:
        account = workspace.provider_accounts[name]
        zone = account.timezone or ws_zone
        path = f"provider_accounts.{name}"
        caps += _owner_caps(
            Scope(ScopeKind.ACCOUNT, name),
            account.pacing.daily_cap,
            account.warmup,
            path,
            zone,
            daily_cap_key="pacing.daily_cap",
        )
        quota = (quotas or {}).get(name)
        if quota is not None:
            caps.append(
                Cap(Scope(ScopeKind.ACCOUNT, name), zone, f"{path} (provider quota)", fixed=quota)
            )
    return caps


def _limit_caps(scope: Scope, limits: LimitsConfig, path: str, zone: str) -> Iterator[Cap]:
    if limits.daily_cap is not None:
        yield Cap(scope, zone, f"{path}.daily_cap", fixed=limits.daily_cap)
    for provider, cap in limits.mailbox_provider_daily_caps.items():
        narrowed = Scope(scope.kind, scope.name, provider)
        yield Cap(narrowed, zone, f"{path}.mailbox_provider_daily_caps.{provider}", fixed=cap)


def _owner_caps(
    scope: Scope,
    daily_cap: int | None,
    warmup: WarmupCurve | None,
    path: str,
    zone: str,
    *,
    daily_cap_key: str = "daily_cap",
) -> Iterator[Cap]:
    if daily_cap is not None:
        yield Cap(scope, zone, f"{path}.{daily_cap_key}", fixed=daily_cap)
    if warmup is not None:
        yield Cap(scope, zone, f"{path}.warmup", curve=warmup)
        for provider in warmup.mailbox_providers:
            narrowed = Scope(scope.kind, scope.name, provider)
            yield Cap(narrowed, zone, f"{path}.warmup.mailbox_providers.{provider}", curve=warmup)


def mailbox_provider_of(domains: Mapping[str, list[str]]) -> dict[str, str]:
    """Recipient domain → mailbox provider, from a workspace's ``mailbox_providers``."""
    return {d.lower(): provider for provider, names in domains.items() for d in names}
