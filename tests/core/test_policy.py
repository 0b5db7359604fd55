"""The effective policy of a scope: inheritance with provenance, defaults, warm-up today."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from adapters.settings import load
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.clock import FixedClock, use_clock
from mailers.config import Settings
from mailers.errors import ConfigError, ScopeError
from mailers.policy import DEFAULT, Allowed, effective_policy
from mailers.tables import ensure_tables
from mailers.warehouse import MAILERS_SCHEMA
from mailers.warmup_starts import WARMUP_STARTS_SCHEMA, WARMUP_STARTS_TABLE

from .support import ConfigEditor

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
"""A Wednesday; 11:00 in Berlin, 05:00 in New York: the same date in both."""
WS = "workspaces.acme"


def governed(document: dict[str, Any]) -> None:
    """Limits at every level, a routed gmail domain, sticky, pacing, a breaker, curves."""
    acme = document["workspaces"]["acme"]
    acme["timezone"] = "Europe/Berlin"
    acme["policy"] = {
        "daily_cap": 5000,
        "messages_per_second": 50,
        "mailbox_provider_daily_caps": {"gmail": 2000},
    }
    lifecycle = acme["streams"]["lifecycle"]
    lifecycle["policy"] = {"daily_cap": 1000, "mailbox_provider_daily_caps": {"gmail": 800}}
    lifecycle["routing"]["domain_routes"] = [
        {"domains": ["gmail.com", "googlemail.com"], "accounts": ["acme_sandbox_b"]}
    ]
    lifecycle["routing"]["sticky"] = True
    acme["campaigns"]["pro_tips"]["policy"] = {"daily_cap": 500}
    acme["identities"]["acme_news"].update(
        timezone="America/New_York",
        daily_cap=900,
        min_gap_seconds=30,
        send_hours={"start": "08:00", "end": "18:00"},
        warmup={
            "daily": [50, 100, 200],
            "start_date": "2026-12-01",
            "mailbox_providers": {"gmail": {"daily": [10, 20, 40, 80]}},
        },
    )
    acme["provider_accounts"]["acme_sandbox_a"].update(
        pacing={"messages_per_second": 14, "concurrency": 4, "daily_cap": 50_000},
        breaker={"consecutive_failures": 3},
        warmup={
            "ramp": {"start": 100, "growth": 1.4, "ceiling": 10_000},
            "start_date": "2026-11-30",
        },
    )


@pytest.fixture
def clock_at_now() -> Iterator[None]:
    with use_clock(FixedClock(NOW)):
        yield


@pytest.fixture
def settings(edit_config: ConfigEditor, clock_at_now: None) -> Settings:
    return load(edit_config(governed), environ={})


def test_a_campaign_binds_by_its_own_cap_and_lists_what_its_stream_and_workspace_allow(
    settings: Settings,
) -> None:
    policy = effective_policy(settings, "acme.lifecycle.pro_tips")

    cap = policy.get("limits", "daily_cap")
    assert (cap.value, cap.source, cap.inherited_from) == (
        500,
        f"{WS}.campaigns.pro_tips.policy.daily_cap",
        None,
    )
    assert cap.wider == (
        Allowed("stream lifecycle", 1000, f"{WS}.streams.lifecycle.policy.daily_cap"),
        Allowed("workspace", 5000, f"{WS}.policy.daily_cap"),
    )
    gmail = policy.get("limits", "mailbox_provider_daily_caps.gmail")
    assert (gmail.value, gmail.inherited_from) == (800, "stream lifecycle")
    assert gmail.source == f"{WS}.streams.lifecycle.policy.mailbox_provider_daily_caps.gmail"
    assert gmail.wider == (
        Allowed("workspace", 2000, f"{WS}.policy.mailbox_provider_daily_caps.gmail"),
    )
    pace = policy.get("limits", "messages_per_second")
    assert pace.origin == f"{WS}.policy.messages_per_second (inherited from workspace)"
    assert pace.value == 50


def test_each_scope_shows_what_applies_at_its_level(settings: Settings) -> None:
    stream = effective_policy(settings, "acme.lifecycle")
    workspace = effective_policy(settings, "acme")

    assert (stream.scope, stream.stream, stream.campaign) == ("acme.lifecycle", "lifecycle", None)
    cap = stream.get("limits", "daily_cap")
    assert (cap.value, cap.inherited_from) == (1000, None)
    assert [a.scope for a in cap.wider] == ["workspace"]
    assert workspace.get("limits", "daily_cap").wider == ()
    assert workspace.get("limits", "daily_cap").value == 5000
    assert "routing" not in workspace.groups()
    assert stream.get("routing", "sticky").inherited_from is None
    # A workspace shows every account and identity; a stream its routed accounts.
    assert {"account acme_sandbox_a", "account acme_sandbox_b", "identity acme_news"} <= set(
        workspace.groups()
    )
    assert "daily caps a message meets today" not in stream.groups()


def test_the_day_boundary_is_inherited_with_the_key_it_comes_from(
    settings: Settings, edit_config: ConfigEditor
) -> None:
    policy = effective_policy(settings, "acme.pro_tips")
    day = policy.get("day", "timezone")
    assert day.origin == (f"{WS}.timezone (inherited from workspace; today is 2026-12-02 there)")
    assert (policy.timezone, policy.today) == ("Europe/Berlin", date(2026, 12, 2))
    identity = policy.get("identity acme_news", "timezone")
    assert (identity.value, identity.source, identity.inherited_from) == (
        "America/New_York",
        f"{WS}.identities.acme_news.timezone",
        None,
    )

    def stream_zone(document: dict[str, Any]) -> None:
        lifecycle = document["workspaces"]["acme"]["streams"]["lifecycle"]
        lifecycle["policy"]["timezone"] = "Asia/Tokyo"  # 19:00 on 2 December

    tokyo = effective_policy(load(edit_config(stream_zone), environ={}), "acme.pro_tips")
    zone = tokyo.get("day", "timezone")
    assert (zone.value, zone.inherited_from) == ("Asia/Tokyo", "stream lifecycle")
    assert zone.source == f"{WS}.streams.lifecycle.policy.timezone"


def test_values_no_key_sets_are_marked_default(settings: Settings) -> None:
    policy = effective_policy(settings, "acme.lifecycle.pro_tips")
    account = "account acme_sandbox_a"

    given = policy.get(account, "breaker.consecutive_failures")
    assert (given.value, given.source) == (
        3,
        f"{WS}.provider_accounts.acme_sandbox_a.breaker.consecutive_failures",
    )
    assert (
        policy.get(account, "breaker.error_rate").value,
        policy.get(account, "breaker.error_rate").source,
    ) == (0.5, DEFAULT)
    assert policy.get(account, "pacing.messages_per_second").value == 14
    assert policy.get(account, "pacing.concurrency").value == 4
    assert policy.get(account, "pacing.daily_cap").value == 50_000
    assert policy.get(account, "pacing.quota_from_provider").source == DEFAULT
    other = policy.get("account acme_sandbox_b", "pacing.daily_cap")
    assert (other.value, other.shown, other.source) == (None, "no limit", DEFAULT)
    assert policy.get("account acme_sandbox_b", "timezone").origin == (
        f"{WS}.timezone (inherited from workspace)"
    )
    assert policy.get("mailbox providers", "gmail").source == DEFAULT
    assert policy.get("mailbox providers", "gmail").value == ["gmail.com", "googlemail.com"]


def test_routing_is_the_streams_with_domain_routes_and_sticky(settings: Settings) -> None:
    policy = effective_policy(settings, "acme.lifecycle.pro_tips")
    routes = f"{WS}.streams.lifecycle.routing"

    strategy = policy.get("routing", "strategy")
    assert strategy.origin == f"{routes}.strategy (inherited from stream lifecycle)"
    weight = policy.get("routing", "weights.acme_sandbox_a")
    assert (weight.value, weight.note) == (70, "70% of the stream's mail")
    route = policy.get("routing", "domain_routes.0")
    assert route.shown == "gmail.com, googlemail.com → acme_sandbox_b"
    assert route.source == f"{routes}.domain_routes.0"
    sticky = policy.get("routing", "sticky")
    assert (sticky.value, sticky.source) == (True, f"{routes}.sticky")


def test_warm_up_curves_show_todays_cap_and_days_to_full_volume(settings: Settings) -> None:
    policy = effective_policy(settings, "acme.pro_tips")
    identity = "identity acme_news"

    # Day 2 of [50, 100, 200] (started 1 December): 100 today, warm on day 4.
    today = policy.get(identity, "warmup.today")
    assert (today.value, today.note) == (100, "day 2 of the curve, 2026-12-02 in America/New_York")
    assert policy.get(identity, "warmup.days_to_full").value == 2
    assert policy.get(identity, "warmup.mailbox_providers.gmail.today").value == 20
    assert policy.get(identity, "warmup.mailbox_providers.gmail.days_to_full").value == 3
    # Day 3 of 100 x1.4 (started 30 November): 196; the ramp reaches 10,000 on day 15.
    account = "account acme_sandbox_a"
    assert policy.get(account, "warmup.today").value == 196
    assert policy.get(account, "warmup.days_to_full").value == 12
    assert policy.get(account, "warmup").shown == "ramp 100 x1.4 a day, full volume at 10000"
    assert policy.get("account acme_sandbox_b", "warmup").shown == "none (warm)"
    assert policy.get(identity, "daily_cap").value == 900
    assert policy.get(identity, "min_gap_seconds").value == 30
    assert policy.get(identity, "send_hours").shown == (
        "08:00-18:00 mon, tue, wed, thu, fri on the mailbox's clock"
    )
    assert policy.get("sending domain news.acme.test", "warmup").source == DEFAULT


def test_the_caps_a_message_meets_are_the_enforced_ones_with_today_s_limits(
    settings: Settings,
) -> None:
    policy = effective_policy(settings, "acme.pro_tips")

    group = policy.groups()["daily caps a message meets today"]
    assert [(e.name, e.value, e.source.removeprefix(f"{WS}.")) for e in group] == [
        ("workspace acme", 5000, "policy.daily_cap"),
        ("workspace acme to gmail", 2000, "policy.mailbox_provider_daily_caps.gmail"),
        ("stream lifecycle", 1000, "streams.lifecycle.policy.daily_cap"),
        (
            "stream lifecycle to gmail",
            800,
            "streams.lifecycle.policy.mailbox_provider_daily_caps.gmail",
        ),
        ("campaign pro_tips", 500, "campaigns.pro_tips.policy.daily_cap"),
        ("identity acme_news", 900, "identities.acme_news.daily_cap"),
        ("identity acme_news", 100, "identities.acme_news.warmup"),
        ("identity acme_news to gmail", 20, "identities.acme_news.warmup.mailbox_providers.gmail"),
        ("account acme_sandbox_a", 50_000, "provider_accounts.acme_sandbox_a.pacing.daily_cap"),
        ("account acme_sandbox_a", 196, "provider_accounts.acme_sandbox_a.warmup"),
    ]
    assert group[6].note == "day 2026-12-02 in America/New_York; full volume in 2 d"


def test_a_curve_before_its_start_date_allows_nothing_yet(
    edit_config: ConfigEditor, clock_at_now: None
) -> None:
    def next_monday(document: dict[str, Any]) -> None:
        governed(document)
        identity = document["workspaces"]["acme"]["identities"]["acme_news"]
        identity["warmup"]["start_date"] = "2026-12-07"

    policy = effective_policy(load(edit_config(next_monday), environ={}), "acme.pro_tips")

    today = policy.get("identity acme_news", "warmup.today")
    assert (today.value, today.note) == (
        0,
        "starts in 5 d; today is 2026-12-02 in America/New_York",
    )
    # Five days until day one, then three days of the list: warm on the eighth day.
    assert policy.get("identity acme_news", "warmup.days_to_full").value == 8


def test_a_curve_without_a_start_date_starts_on_its_recorded_first_send(
    edit_config: ConfigEditor, clock_at_now: None, tmp_path: Path
) -> None:
    def unstarted(document: dict[str, Any]) -> None:
        governed(document)
        del document["workspaces"]["acme"]["identities"]["acme_news"]["warmup"]["start_date"]

    settings = load(edit_config(unstarted), environ={})
    identity = "identity acme_news"

    fresh = effective_policy(settings, "acme.pro_tips")
    start = fresh.get(identity, "warmup.start_date")
    assert (start.value, start.source) == ("2026-12-02", DEFAULT)
    assert fresh.get(identity, "warmup.today").value == 50

    with DuckDBWarehouse(tmp_path / "w.duckdb") as warehouse:
        ensure_tables(warehouse)
        assert (
            effective_policy(settings, "acme.pro_tips", warehouse=warehouse)
            .get(identity, "warmup.today")
            .value
            == 50
        )
        row = {
            "workspace": "acme",
            "owner_kind": "identity",
            "owner": "acme_news",
            "started_on": date(2026, 11, 30),
            "recorded_at": datetime(2026, 11, 30, 9),
        }
        warehouse.append(
            MAILERS_SCHEMA,
            WARMUP_STARTS_TABLE,
            pa.Table.from_pylist([row], schema=WARMUP_STARTS_SCHEMA),
        )
        started = effective_policy(settings, "acme.pro_tips", warehouse=warehouse)

    start = started.get(identity, "warmup.start_date")
    assert (start.value, start.source) == ("2026-11-30", "mailers.warmup_starts")
    assert started.get(identity, "warmup.today").value == 200  # day 3
    caps = {e.name: e.value for e in started.groups()["daily caps a message meets today"]}
    assert caps["identity acme_news"] == 200


def test_a_campaign_is_named_without_its_stream_unless_a_stream_has_its_name(
    settings: Settings, edit_config: ConfigEditor
) -> None:
    assert effective_policy(settings, "acme.pro_tips").scope == "acme.lifecycle.pro_tips"

    def campaign_named_lifecycle(document: dict[str, Any]) -> None:
        campaigns = document["workspaces"]["acme"]["campaigns"]
        campaigns["lifecycle"] = {**campaigns["pro_tips"], "stream": "transactional"}

    named = load(edit_config(campaign_named_lifecycle), environ={})
    assert effective_policy(named, "acme.lifecycle").campaign is None
    assert effective_policy(named, "acme.transactional.lifecycle").campaign == "lifecycle"


@pytest.mark.parametrize(
    ("scope", "said"),
    [
        ("initech", "unknown workspace 'initech' in 'initech' (workspaces: acme, globex)"),
        (
            "acme.outbound",
            "workspace 'acme' has no stream or campaign 'outbound' in "
            "'acme.outbound' (streams: lifecycle, transactional; campaigns: pro_tips)",
        ),
        (
            "acme.outbound.pro_tips",
            "workspace 'acme' has no stream 'outbound' in "
            "'acme.outbound.pro_tips' (streams: lifecycle, transactional)",
        ),
        (
            "acme.transactional.pro_tips",
            "campaign 'pro_tips' sends on stream 'lifecycle', not "
            "'transactional' in 'acme.transactional.pro_tips' (campaigns on acme.transactional: -)",
        ),
        (
            "acme.lifecycle.nope",
            "workspace 'acme' has no campaign 'nope' in "
            "'acme.lifecycle.nope' (campaigns on acme.lifecycle: pro_tips)",
        ),
        ("acme.lifecycle.pro_tips.x", "is not WORKSPACE[.STREAM[.CAMPAIGN]]"),
        ("acme..pro_tips", "is not WORKSPACE[.STREAM[.CAMPAIGN]]"),
    ],
)
def test_a_bad_scope_names_what_is_unknown_and_what_exists(
    settings: Settings, scope: str, said: str
) -> None:
    with pytest.raises(ScopeError) as info:
        effective_policy(settings, scope)
    assert said in str(info.value)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            lambda acme: acme["campaigns"]["pro_tips"].update(policy={"daily_cap": 2000}),
            "workspaces.acme.campaigns.pro_tips.policy.daily_cap: 2000 loosens the stream "
            "'lifecycle''s 1000 (a scope may only tighten)",
        ),
        (
            lambda acme: acme["streams"]["lifecycle"].update(policy={"messages_per_second": 60}),
            "workspaces.acme.streams.lifecycle.policy.messages_per_second: 60.0 loosens the "
            "workspace's 50.0",
        ),
        (
            # The stream sets no cap of its own: the campaign is held to the workspace's.
            lambda acme: acme["campaigns"]["pro_tips"].update(policy={"messages_per_second": 51}),
            "workspaces.acme.campaigns.pro_tips.policy.messages_per_second: 51.0 loosens the "
            "workspace's 50.0",
        ),
        (
            lambda acme: acme["campaigns"]["pro_tips"].update(
                policy={"mailbox_provider_daily_caps": {"gmail": 900}}
            ),
            "workspaces.acme.campaigns.pro_tips.policy.mailbox_provider_daily_caps.gmail: 900 "
            "loosens the stream 'lifecycle''s 800",
        ),
    ],
)
def test_config_refuses_a_narrower_scope_that_loosens(
    edit_config: ConfigEditor, change: Any, said: str
) -> None:
    def loosen(document: dict[str, Any]) -> None:
        governed(document)
        change(document["workspaces"]["acme"])

    with pytest.raises(ConfigError) as info:
        load(edit_config(loosen), environ={})
    assert said in str(info.value)


def test_the_policy_serialises_to_json_with_every_entry(settings: Settings) -> None:
    document = effective_policy(settings, "acme.pro_tips").to_json()

    assert (document["scope"], document["today"], document["timezone"]) == (
        "acme.lifecycle.pro_tips",
        "2026-12-02",
        "Europe/Berlin",
    )
    [cap] = [e for e in document["entries"] if (e["group"], e["name"]) == ("limits", "daily_cap")]
    assert cap["wider"][0] == {
        "scope": "stream lifecycle",
        "value": 1000,
        "source": f"{WS}.streams.lifecycle.policy.daily_cap",
    }
