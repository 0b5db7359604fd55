"""The effective sending policy of a scope, and the config key each value comes from.

A scope is a workspace, one of its streams or one of its campaigns: ``acme``,
``acme.lifecycle``, ``acme.lifecycle.pro_tips``. A campaign may also be named
``acme.pro_tips`` (its stream is its own), unless one of the workspace's streams has the
same name: then the full form is required.

Limits inherit workspace → stream → campaign and all of them apply at once: a campaign's
message counts against its campaign's, its stream's and its workspace's daily cap, each
over everything its scope sends that day. Config validation refuses a narrower scope that
loosens a wider one (:func:`mailers.config.loosened`), so the binding value of a limit is
the narrowest scope's that sets it; the wider ones are listed with what they allow.

Each :class:`PolicyEntry` carries the key path it was read from (``workspaces.acme.
timezone``), or ``default``, and the scope it was inherited from when that is wider than
its group's own. Warm-up curves are evaluated on today's date from :mod:`mailers.clock`,
in their owner's time zone; a curve without a ``start_date`` starts on the day of its
first send (recorded in ``mailers.warmup_starts``; pass the warehouse to read it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from mailers import clock
from mailers.caps import ScopeKind, campaign_caps
from mailers.config import (
    CampaignConfig,
    CampaignRef,
    FailoverRouting,
    IdentityConfig,
    MailersConfig,
    ProviderAccountConfig,
    Settings,
    StreamConfig,
    StreamKind,
    WorkspaceConfig,
)
from mailers.errors import ScopeError
from mailers.policy_config import CurveShape, LimitsConfig, SendHours, WarmupCurve
from mailers.warehouse import MAILERS_SCHEMA, Warehouse
from mailers.warmup import curve_day
from mailers.warmup_starts import WARMUP_STARTS_TABLE, recorded_starts

DEFAULT = "default"
"""The source of a value no config key sets."""

LIMIT_KEYS = ("daily_cap", "messages_per_second")


@dataclass(frozen=True)
class Allowed:
    """What a wider scope allows for a limit a narrower one tightens."""

    scope: str
    value: Any
    source: str


@dataclass(frozen=True)
class PolicyEntry:
    """One value of the effective policy, and where it comes from."""

    group: str
    """What it belongs to: ``day``, ``limits``, ``routing``, ``identity acme_news``, …"""
    name: str
    value: Any
    """The value as JSON would hold it (``None``: not set, no limit)."""
    source: str
    """The config key path it was read from, or ``default``."""
    inherited_from: str | None = None
    """The wider scope it applies from (``workspace``, ``stream lifecycle``), if any."""
    wider: tuple[Allowed, ...] = ()
    """What wider scopes allow for the same limit (each at least this value)."""
    note: str | None = None
    text: str | None = None
    """How to show ``value`` when it needs words (a curve, a route); else it is formatted."""

    @property
    def shown(self) -> str:
        """The value for people."""
        return self.text if self.text is not None else show(self.value)

    @property
    def origin(self) -> str:
        """The source, with the scope it was inherited from and the note."""
        extra = [f"inherited from {self.inherited_from}"] if self.inherited_from else []
        extra += [self.note] if self.note else []
        return f"{self.source} ({'; '.join(extra)})" if extra else self.source

    def to_json(self) -> dict[str, Any]:
        """The entry as plain JSON values."""
        return {
            "group": self.group,
            "name": self.name,
            "value": self.value,
            "shown": self.shown,
            "source": self.source,
            "inherited_from": self.inherited_from,
            "wider": [{"scope": a.scope, "value": a.value, "source": a.source} for a in self.wider],
            "note": self.note,
        }


@dataclass(frozen=True)
class EffectivePolicy:
    """Everything that limits or routes a send of one scope, each value with its source."""

    scope: str
    """The scope in full: ``workspace[.stream[.campaign]]``."""
    workspace: str
    stream: str | None
    campaign: str | None
    timezone: str
    """Where the scope's day starts (its limits count days there)."""
    today: date
    """Today in ``timezone``, by Mailers' clock."""
    entries: tuple[PolicyEntry, ...] = field(default=())

    def get(self, group: str, name: str) -> PolicyEntry:
        """The entry ``name`` of ``group``; KeyError naming the group's entries if absent."""
        for entry in self.entries:
            if (entry.group, entry.name) == (group, name):
                return entry
        names = [e.name for e in self.entries if e.group == group]
        raise KeyError(f"no {name!r} in {group!r} (it has: {', '.join(names) or 'nothing'})")

    def groups(self) -> dict[str, list[PolicyEntry]]:
        """The entries by group, in the order they were built."""
        grouped: dict[str, list[PolicyEntry]] = {}
        for entry in self.entries:
            grouped.setdefault(entry.group, []).append(entry)
        return grouped

    def to_json(self) -> dict[str, Any]:
        """The policy as plain JSON values (``mailers policy show --json``)."""
        return {
            "scope": self.scope,
            "workspace": self.workspace,
            "stream": self.stream,
            "campaign": self.campaign,
            "timezone": self.timezone,
            "today": self.today.isoformat(),
            "entries": [entry.to_json() for entry in self.entries],
        }


def show(value: Any) -> str:
    """A JSON value for people: ``None`` is ``none``, lists are comma-separated."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ", ".join(show(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {show(v)}" for k, v in value.items()) or "none"
    return str(value)


@dataclass(frozen=True)
class _Level:
    """One scope of the inheritance chain: its label, limits and key path."""

    label: str
    limits: LimitsConfig
    path: str


@dataclass(frozen=True)
class _Scope:
    workspace_name: str
    workspace: WorkspaceConfig
    stream: StreamKind | None = None
    campaign: str | None = None

    @property
    def full_name(self) -> str:
        parts = [self.workspace_name, str(self.stream or ""), self.campaign or ""]
        return ".".join(p for p in parts if p)


def resolve_scope(config: MailersConfig, scope: str) -> tuple[str, str | None, str | None]:
    """``(workspace, stream, campaign)`` of ``scope``; ScopeError naming what is unknown."""
    found = _parse(config, scope)
    return found.workspace_name, str(found.stream) if found.stream else None, found.campaign


def _parse(config: MailersConfig, scope: str) -> _Scope:
    parts = scope.split(".")
    workspaces = ", ".join(config.workspaces)
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise ScopeError(
            f"policy scope {scope!r} is not WORKSPACE[.STREAM[.CAMPAIGN]] (workspaces: "
            f"{workspaces})"
        )
    ws_name = parts[0]
    workspace = config.workspaces.get(ws_name)
    if workspace is None:
        raise ScopeError(f"unknown workspace {ws_name!r} in {scope!r} (workspaces: {workspaces})")
    found = _Scope(ws_name, workspace)
    if len(parts) == 1:
        return found
    streams = {str(kind): kind for kind in workspace.streams}
    known = f"streams: {', '.join(streams)}; campaigns: {', '.join(workspace.campaigns) or '-'}"
    second = parts[1]
    if len(parts) == 2:
        # The stream wins a name both have: the campaign has its full form to be named by.
        if second in streams:
            return replace(found, stream=streams[second])
        if second in workspace.campaigns:
            return replace(found, stream=workspace.campaigns[second].stream, campaign=second)
        raise ScopeError(
            f"workspace {ws_name!r} has no stream or campaign {second!r} in {scope!r} ({known})"
        )
    if second not in streams:
        raise ScopeError(
            f"workspace {ws_name!r} has no stream {second!r} in {scope!r} (streams: "
            f"{', '.join(streams)})"
        )
    name = parts[2]
    named = workspace.campaigns.get(name)
    if named is None or named.stream is not streams[second]:
        on_stream = [n for n, c in workspace.campaigns.items() if str(c.stream) == second]
        why = (
            f"campaign {name!r} sends on stream {str(named.stream)!r}, not {second!r}"
            if named is not None
            else f"workspace {ws_name!r} has no campaign {name!r}"
        )
        raise ScopeError(
            f"{why} in {scope!r} (campaigns on {ws_name}.{second}: {', '.join(on_stream) or '-'})"
        )
    return replace(found, stream=streams[second], campaign=name)


def effective_policy(
    settings: Settings, scope: str, *, warehouse: Warehouse | None = None
) -> EffectivePolicy:
    """The policy a send of ``scope`` runs under, each value with the key it comes from.

    ``warehouse`` (optional, only read) supplies the recorded first day of curves without
    a ``start_date``; without it, or without a record, such a curve starts today.
    """
    found = _parse(settings.config, scope)
    return _Builder(found, warehouse).build()


class _Builder:
    def __init__(self, scope: _Scope, warehouse: Warehouse | None) -> None:
        self.scope = scope
        self.ws = scope.workspace
        self.prefix = f"workspaces.{scope.workspace_name}"
        self.warehouse = warehouse
        self.now = clock.now()
        self.entries: list[PolicyEntry] = []

    def build(self) -> EffectivePolicy:
        levels = self._levels()
        zone = self._day(levels)
        self._limits(levels)
        stream = self.ws.streams[self.scope.stream] if self.scope.stream else None
        if stream is not None:
            self._routing(stream)
        self._mailbox_providers()
        campaign = self.ws.campaigns[self.scope.campaign] if self.scope.campaign else None
        identities = self._identities(campaign)
        accounts = stream.routing.all_accounts if stream else list(self.ws.provider_accounts)
        starts = self._starts(identities, accounts)
        for name in identities:
            self._identity(name, self.ws.identities[name], starts)
        domains = {self.ws.identities[n].sending_domain for n in identities}
        if campaign is None:
            domains |= set(self.ws.sending_domains)
        for domain in sorted(domains):
            self._sending_domain(domain, starts)
        for name in accounts:
            self._account(name, self.ws.provider_accounts[name], starts)
        if campaign is not None and self.scope.campaign is not None:
            self._caps(self.scope.campaign, campaign, accounts, starts)
        return EffectivePolicy(
            scope=self.scope.full_name,
            workspace=self.scope.workspace_name,
            stream=str(self.scope.stream) if self.scope.stream else None,
            campaign=self.scope.campaign,
            timezone=zone,
            today=self._today(zone),
            entries=tuple(self.entries),
        )

    def _identities(self, campaign: CampaignConfig | None) -> list[str]:
        """The campaign's identities; a stream's campaigns'; every one of a workspace."""
        if campaign is not None:
            return campaign.identities
        if self.scope.stream is None:
            return list(self.ws.identities)
        used = (c.identities for c in self.ws.campaigns.values() if c.stream is self.scope.stream)
        return list(dict.fromkeys(name for names in used for name in names))

    def _add(self, group: str, name: str, value: Any, source: str, **more: Any) -> None:
        self.entries.append(PolicyEntry(group, name, value, source, **more))

    def _key(self, path: str) -> str:
        return f"{self.prefix}.{path}"

    def _today(self, zone: str) -> date:
        return self.now.astimezone(ZoneInfo(zone)).date()

    def _levels(self) -> list[_Level]:
        levels = [_Level("workspace", self.ws.policy, "policy")]
        if self.scope.stream is not None:
            stream = self.ws.streams[self.scope.stream]
            levels.append(
                _Level(
                    f"stream {self.scope.stream}",
                    stream.policy,
                    f"streams.{self.scope.stream}.policy",
                )
            )
        if self.scope.campaign is not None:
            campaign = self.ws.campaigns[self.scope.campaign]
            levels.append(
                _Level(
                    f"campaign {self.scope.campaign}",
                    campaign.policy,
                    f"campaigns.{self.scope.campaign}.policy",
                )
            )
        return levels

    def _workspace_zone(self) -> tuple[str, str]:
        """The workspace's own day: its ``timezone`` key, or the default."""
        given = "timezone" in self.ws.model_fields_set
        return self.ws.timezone, self._key("timezone") if given else DEFAULT

    def _day(self, levels: list[_Level]) -> str:
        """The scope's day boundary: the narrowest level's limits zone, else the workspace's."""
        zone, source = self._workspace_zone()
        owner = "workspace"
        for level in levels:
            if level.limits.timezone is not None:
                zone, source, owner = (
                    level.limits.timezone,
                    self._key(f"{level.path}.timezone"),
                    level.label,
                )
        own = levels[-1].label
        self._add(
            "day",
            "timezone",
            zone,
            source,
            inherited_from=None if owner == own else owner,
            note=f"today is {self._today(zone)} there",
        )
        return zone

    def _limits(self, levels: list[_Level]) -> None:
        own = levels[-1].label
        for key in LIMIT_KEYS:
            self._limit(
                key, [(lv, getattr(lv.limits, key), f"{lv.path}.{key}") for lv in levels], own
            )
        providers = list(
            dict.fromkeys(p for lv in levels for p in lv.limits.mailbox_provider_daily_caps)
        )
        for provider in providers:
            key = f"mailbox_provider_daily_caps.{provider}"
            found = [
                (lv, lv.limits.mailbox_provider_daily_caps.get(provider), f"{lv.path}.{key}")
                for lv in levels
            ]
            self._limit(key, found, own)
        if not providers:
            self._add("limits", "mailbox_provider_daily_caps", {}, DEFAULT, text="none")

    def _limit(self, name: str, found: list[tuple[_Level, Any, str]], own: str) -> None:
        given = [(lv, value, path) for lv, value, path in found if value is not None]
        if not given:
            self._add("limits", name, None, DEFAULT, text="no limit")
            return
        level, value, path = given[-1]
        wider = tuple(Allowed(lv.label, v, self._key(p)) for lv, v, p in reversed(given[:-1]))
        self._add(
            "limits",
            name,
            value,
            self._key(path),
            inherited_from=None if level.label == own else level.label,
            wider=wider,
        )

    def _routing(self, stream: StreamConfig) -> None:
        routing = stream.routing
        path = f"streams.{self.scope.stream}.routing"
        inherited = "stream " + str(self.scope.stream) if self.scope.campaign else None
        add = self._adder("routing", path, inherited)
        add("strategy", routing.strategy, "strategy")
        if isinstance(routing, FailoverRouting):
            add("accounts", list(routing.accounts), "accounts", note="tried in this order")
        else:
            total = sum(routing.weights.values())
            for account, weight in routing.weights.items():
                share = f"{100 * weight / total:.0f}% of the stream's mail"
                add(f"weights.{account}", weight, f"weights.{account}", note=share)
        for index, route in enumerate(routing.domain_routes):
            matches = list(route.domains)
            if route.mailbox_provider is not None:
                matches.append(f"mailbox provider {route.mailbox_provider}")
            text = f"{', '.join(matches)} → {', '.join(route.accounts)}"
            value = route.model_dump(mode="json", exclude_none=True)
            add(f"domain_routes.{index}", value, f"domain_routes.{index}", text=text)
        if not routing.domain_routes:
            self._add("routing", "domain_routes", [], DEFAULT, inherited_from=inherited)
        sticky_given = "sticky" in routing.model_fields_set
        add("sticky", routing.sticky, "sticky" if sticky_given else None)

    def _adder(self, group: str, path: str, inherited: str | None = None) -> Any:
        """Adds entries of one config block: a key given is its path, else ``default``."""

        def add(name: str, value: Any, key: str | None, **more: Any) -> None:
            source = self._key(f"{path}.{key}") if key is not None else DEFAULT
            self._add(group, name, value, source, inherited_from=inherited, **more)

        return add

    def _mailbox_providers(self) -> None:
        given = "mailbox_providers" in self.ws.model_fields_set
        for name, domains in self.ws.mailbox_providers.items():
            source = self._key(f"mailbox_providers.{name}") if given else DEFAULT
            self._add("mailbox providers", name, list(domains), source)

    def _starts(self, identities: list[str], accounts: list[str]) -> dict[tuple[str, str], date]:
        """Recorded first days of the curves without a start date that this scope shows."""
        if self.warehouse is None:
            return {}
        if self.warehouse.columns(MAILERS_SCHEMA, WARMUP_STARTS_TABLE) is None:
            return {}  # a warehouse from before warm-up starts were recorded: none are
        chosen = [self.ws.identities[n] for n in identities]
        owners: list[tuple[ScopeKind, str, WarmupCurve | None]] = [
            (ScopeKind.IDENTITY, n, i.warmup) for n, i in zip(identities, chosen, strict=True)
        ]
        owners += [(ScopeKind.DOMAIN, n, d.warmup) for n, d in self.ws.sending_domains.items()]
        owners += [(ScopeKind.ACCOUNT, n, self.ws.provider_accounts[n].warmup) for n in accounts]
        unstarted = [
            (str(kind), name)
            for kind, name, curve in owners
            if curve is not None and curve.start_date is None
        ]
        return recorded_starts(self.warehouse, self.scope.workspace_name, unstarted)

    def _owner_zone(self, group: str, given: str | None, path: str) -> str:
        zone, source = self._workspace_zone()
        if given is not None:
            self._add(group, "timezone", given, self._key(path))
            return given
        self._add(group, "timezone", zone, source, inherited_from="workspace")
        return zone

    def _identity(
        self, name: str, identity: IdentityConfig, starts: Mapping[tuple[str, str], date]
    ) -> None:
        group = f"identity {name}"
        path = f"identities.{name}"
        add = self._adder(group, path)
        add("from_address", identity.from_address, "from_address")
        self._add(
            group,
            "sending_domain",
            identity.sending_domain,
            self._key(f"{path}.from_address"),
            note="the from address's domain",
        )
        add("provider_accounts", list(identity.provider_accounts), "provider_accounts")
        zone = self._owner_zone(group, identity.timezone, f"{path}.timezone")
        given = identity.model_fields_set
        cap = identity.daily_cap
        add("daily_cap", cap, "daily_cap" if "daily_cap" in given else None, text=_or(cap))
        gap = identity.min_gap_seconds
        add(
            "min_gap_seconds",
            gap,
            "min_gap_seconds" if "min_gap_seconds" in given else None,
            text=_or(gap, "no gap"),
        )
        hours = identity.send_hours
        add(
            "send_hours",
            hours.model_dump(mode="json") if hours else None,
            "send_hours" if hours else None,
            text=_hours(hours) if hours else "any time",
        )
        self._warmup(group, path, identity.warmup, zone, (ScopeKind.IDENTITY, name), starts)

    def _sending_domain(self, domain: str, starts: Mapping[tuple[str, str], date]) -> None:
        group = f"sending domain {domain}"
        path = f"sending_domains.{domain}"
        own = self.ws.sending_domains.get(domain)
        if own is None:
            self._add(group, "daily_cap", None, DEFAULT, text="no limit")
            self._add(group, "warmup", None, DEFAULT, text="none (warm)")
            return
        zone = self._owner_zone(group, own.timezone, f"{path}.timezone")
        add = self._adder(group, path)
        cap = own.daily_cap
        add("daily_cap", cap, "daily_cap" if cap is not None else None, text=_or(cap))
        self._warmup(group, path, own.warmup, zone, (ScopeKind.DOMAIN, domain), starts)

    def _account(
        self, name: str, account: ProviderAccountConfig, starts: Mapping[tuple[str, str], date]
    ) -> None:
        group = f"account {name}"
        path = f"provider_accounts.{name}"
        self._add(group, "kind", account.kind, self._key(f"{path}.kind"))
        zone = self._owner_zone(group, account.timezone, f"{path}.timezone")
        for block, key in (("pacing", account.pacing), ("breaker", account.breaker)):
            given = key.model_fields_set
            for field_name in type(key).model_fields:
                value = getattr(key, field_name)
                self._add(
                    group,
                    f"{block}.{field_name}",
                    value,
                    self._key(f"{path}.{block}.{field_name}") if field_name in given else DEFAULT,
                    text=_or(value),
                )
        self._warmup(group, path, account.warmup, zone, (ScopeKind.ACCOUNT, name), starts)

    def _warmup(
        self,
        group: str,
        path: str,
        curve: WarmupCurve | None,
        zone: str,
        owner: tuple[ScopeKind, str],
        starts: Mapping[tuple[str, str], date],
    ) -> None:
        if curve is None:
            self._add(group, "warmup", None, DEFAULT, text="none (warm)")
            return
        key = self._key(f"{path}.warmup")
        value = curve.model_dump(mode="json", exclude_defaults=True)
        self._add(group, "warmup", value, key, text=_shape(curve))
        today = self._today(zone)
        started = _start(curve, starts.get((str(owner[0]), owner[1])), today)
        if curve.start_date is not None:
            self._add(group, "warmup.start_date", curve.start_date.isoformat(), f"{key}.start_date")
        else:
            recorded = (str(owner[0]), owner[1]) in starts
            self._add(
                group,
                "warmup.start_date",
                started.start_date.isoformat() if started.start_date else None,
                f"{MAILERS_SCHEMA}.{WARMUP_STARTS_TABLE}" if recorded else DEFAULT,
                note="its first send" if recorded else "no send yet: it starts on its first",
            )
        shapes: list[tuple[str, str | None, CurveShape]] = [("warmup", None, curve)]
        shapes += [
            (f"warmup.mailbox_providers.{p}", p, s) for p, s in curve.mailbox_providers.items()
        ]
        for name, provider, shape in shapes:
            if provider is not None:
                self._add(
                    group,
                    name,
                    shape.model_dump(mode="json", exclude_none=True),
                    f"{key}.mailbox_providers.{provider}",
                    text=_shape(shape),
                )
            day = curve_day(started, today, provider)
            source = key if provider is None else f"{key}.mailbox_providers.{provider}"
            self._add(
                group,
                f"{name}.today",
                day.cap,
                source,
                text="warm (no limit)" if day.cap is None else str(day.cap),
                note=_day_note(day.day_number, today, zone),
            )
            self._add(group, f"{name}.days_to_full", day.days_to_full, source)

    def _caps(
        self,
        name: str,
        campaign: CampaignConfig,
        accounts: list[str],
        starts: Mapping[tuple[str, str], date],
    ) -> None:
        ref = CampaignRef(workspace=self.scope.workspace_name, name=name, config=campaign)
        for cap in campaign_caps(self.ws, ref, accounts):
            today = self._today(cap.timezone)
            curve = cap.curve
            if curve is not None:
                curve = _start(curve, starts.get((str(cap.scope.kind), cap.scope.name)), today)
                cap = replace(cap, curve=curve)
            limit = cap.limit_on(today)
            note = f"day {today} in {cap.timezone}"
            if curve is not None:
                left = curve_day(curve, today, cap.scope.mailbox_provider).days_to_full
                note += f"; full volume in {left} d" if left else "; warm"
            self._add(
                "daily caps a message meets today",
                str(cap.scope),
                limit,
                self._key(cap.source),
                text="warm (no limit)" if limit is None else str(limit),
                note=note,
            )


def _or(value: Any, unset: str = "no limit") -> str | None:
    """Words for an unset limit; ``None`` (formatted as usual) when it is set."""
    return unset if value is None else None


def _start(curve: WarmupCurve, recorded: date | None, today: date) -> WarmupCurve:
    """``curve`` with a start date: its own, the recorded first send, else today."""
    if curve.start_date is not None:
        return curve
    return curve.model_copy(update={"start_date": recorded or today})


def _shape(shape: CurveShape) -> str:
    if shape.daily is not None:
        return f"daily {', '.join(str(n) for n in shape.daily)}, then no limit"
    ramp = shape.ramp
    assert ramp is not None  # the model guarantees one shape
    return f"ramp {ramp.start} x{ramp.growth:g} a day, full volume at {ramp.ceiling}"


def _hours(hours: SendHours) -> str:
    days = ", ".join(str(d) for d in hours.days)
    return f"{hours.start:%H:%M}-{hours.end:%H:%M} {days} on the {hours.clock}'s clock"


def _day_note(number: int, today: date, zone: str) -> str:
    if number < 1:
        return f"starts in {1 - number} d; today is {today} in {zone}"
    return f"day {number} of the curve, {today} in {zone}"
