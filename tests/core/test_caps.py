"""Which daily caps a campaign's messages meet, the keys they come from and their days."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from adapters.settings import load
from mailers.caps import Cap, Scope, ScopeKind, Usage, campaign_caps, day_bounds
from mailers.config import Settings

from .support import ConfigEditor


def _caps(settings: Settings, accounts: list[str] | None = None) -> list[Cap]:
    ref = settings.campaign("acme.pro_tips")
    workspace = settings.config.workspaces["acme"]
    routed = workspace.streams[ref.config.stream].routing.all_accounts
    return campaign_caps(workspace, ref, routed if accounts is None else accounts)


def _every_level(document: dict[str, Any]) -> None:
    acme = document["workspaces"]["acme"]
    acme["timezone"] = "Europe/Berlin"
    acme["policy"] = {"daily_cap": 900, "mailbox_provider_daily_caps": {"yahoo": 80}}
    acme["streams"]["lifecycle"]["policy"] = {"daily_cap": 600, "timezone": "Asia/Tokyo"}
    acme["campaigns"]["pro_tips"]["policy"] = {"daily_cap": 300}
    acme["sending_domains"] = {
        "news.acme.test": {"daily_cap": 700, "timezone": "America/Chicago"},
        "unused.acme.test": {"daily_cap": 1},
    }
    acme["identities"]["acme_news"].update(
        daily_cap=400,
        warmup={"daily": [10, 20], "mailbox_providers": {"gmail": {"daily": [5]}}},
    )
    acme["provider_accounts"]["acme_sandbox_b"].update(
        pacing={"daily_cap": 250}, timezone="America/New_York"
    )


def test_a_campaign_meets_every_level_s_caps_with_their_keys_and_zones(
    edit_config: ConfigEditor,
) -> None:
    settings = load(edit_config(_every_level), environ={})

    found = [
        (str(c.scope), c.source, c.timezone, c.fixed, c.curve is not None) for c in _caps(settings)
    ]

    assert found == [
        ("workspace acme", "policy.daily_cap", "Europe/Berlin", 900, False),
        (
            "workspace acme to yahoo",
            "policy.mailbox_provider_daily_caps.yahoo",
            "Europe/Berlin",
            80,
            False,
        ),
        ("stream lifecycle", "streams.lifecycle.policy.daily_cap", "Asia/Tokyo", 600, False),
        # The campaign sets no zone: it counts its days where its stream does.
        ("campaign pro_tips", "campaigns.pro_tips.policy.daily_cap", "Asia/Tokyo", 300, False),
        # Owners count in their own zone, else the workspace's (not the stream's).
        (
            "domain news.acme.test",
            "sending_domains.news.acme.test.daily_cap",
            "America/Chicago",
            700,
            False,
        ),
        ("identity acme_news", "identities.acme_news.daily_cap", "Europe/Berlin", 400, False),
        ("identity acme_news", "identities.acme_news.warmup", "Europe/Berlin", None, True),
        (
            "identity acme_news to gmail",
            "identities.acme_news.warmup.mailbox_providers.gmail",
            "Europe/Berlin",
            None,
            True,
        ),
        (
            "account acme_sandbox_b",
            "provider_accounts.acme_sandbox_b.pacing.daily_cap",
            "America/New_York",
            250,
            False,
        ),
    ]


def test_only_the_accounts_asked_about_and_published_quotas_are_caps(
    edit_config: ConfigEditor,
) -> None:
    settings = load(edit_config(_every_level), environ={})
    ref = settings.campaign("acme.pro_tips")
    workspace = settings.config.workspaces["acme"]

    caps = campaign_caps(workspace, ref, ["acme_sandbox_a"], quotas={"acme_sandbox_a": 50})

    accounts = [(str(c.scope), c.source, c.fixed) for c in caps if c.scope.kind == "account"]
    assert accounts == [
        ("account acme_sandbox_a", "provider_accounts.acme_sandbox_a (provider quota)", 50)
    ]


def test_the_workspace_policy_zone_is_the_day_its_limits_and_its_streams_count_in(
    edit_config: ConfigEditor,
) -> None:
    def policy_zone(document: dict[str, Any]) -> None:
        _every_level(document)
        acme = document["workspaces"]["acme"]
        acme["policy"]["timezone"] = "Pacific/Auckland"
        del acme["streams"]["lifecycle"]["policy"]["timezone"]

    settings = load(edit_config(policy_zone), environ={})
    zones = {(str(c.scope), c.source): c.timezone for c in _caps(settings)}

    assert zones[("workspace acme", "policy.daily_cap")] == "Pacific/Auckland"
    assert zones[("stream lifecycle", "streams.lifecycle.policy.daily_cap")] == "Pacific/Auckland"
    assert zones[("identity acme_news", "identities.acme_news.daily_cap")] == "Europe/Berlin"


def test_no_policy_means_no_caps(edit_config: ConfigEditor) -> None:
    settings = load(edit_config(lambda document: None), environ={})
    assert _caps(settings) == []


def test_a_cap_counts_its_own_day_and_matches_only_its_scope() -> None:
    cap = Cap(Scope(ScopeKind.IDENTITY, "news", "gmail"), "Asia/Tokyo", "identities.news", fixed=3)
    # 16:00 UTC on 1 December is already 2 December in Tokyo.
    assert cap.local_day(datetime.fromisoformat("2026-12-01T16:00:00+00:00")) == date(2026, 12, 2)
    assert cap.day_bounds(date(2026, 12, 2)) == (
        datetime(2026, 12, 1, 15, 0),
        datetime(2026, 12, 2, 15, 0),
    )
    usage = Usage("lifecycle", "pro_tips", "news", "news.acme.test", "a", "gmail")
    assert cap.scope.matches(usage)
    assert not cap.scope.matches(
        Usage("lifecycle", "pro_tips", "news", "news.acme.test", "a", "yahoo")
    )
    assert not cap.scope.matches(
        Usage("lifecycle", "pro_tips", "other", "news.acme.test", "a", "gmail")
    )
    assert cap.next_day_with_room(date(2026, 12, 2)) == date(2026, 12, 3)


def test_a_local_day_across_a_dst_change_is_23_or_25_hours() -> None:
    start, end = day_bounds("Europe/Berlin", date(2026, 3, 29))
    assert (end - start).total_seconds() == 23 * 3600
    start, end = day_bounds("Europe/Berlin", date(2026, 10, 25))
    assert (end - start).total_seconds() == 25 * 3600
