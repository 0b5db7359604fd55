"""Automatic pause rules on each warehouse engine: synthetic ledger rows and events."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from adapters.providers.registry import event_parser
from adapters.settings import load
from adapters.warehouses import OpenWarehouse, connect
from mailers.clock import FixedClock, utcnow
from mailers.config import Settings, WarehouseConfig
from mailers.errors import ConfigError
from mailers.events import EVENTS_SCHEMA
from mailers.feedback import LandedFeedback
from mailers.ingest import ingest
from mailers.landing import land
from mailers.ledger import LEDGER_SCHEMA
from mailers.pause_rules import (
    LiveRules,
    RateWarning,
    Trip,
    apply,
    evaluate,
    pause_line,
    resumed_at,
)
from mailers.pauses import PauseBoard, PauseLevel, PauseScope
from mailers.rules_config import PauseRulesConfig
from mailers.tables import ensure_tables
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

from .support import ConfigEditor

RULES = PauseRulesConfig()


@pytest.fixture
def warehouse(tmp_path: Path, engine_config: WarehouseConfig) -> Iterator[OpenWarehouse]:
    with connect(engine_config, tmp_path) as wh:
        ensure_tables(wh)
        yield wh


def accepted(
    warehouse: Warehouse,
    count: int,
    *,
    ago: timedelta = timedelta(minutes=10),
    workspace: str = "acme",
    stream: str = "lifecycle",
    identity: str = "acme_news",
    account: str = "acme_sandbox_a",
) -> list[str]:
    """``count`` messages accepted ``ago``; returns their keys."""
    keys = [uuid.uuid4().hex for _ in range(count)]
    at = utcnow() - ago
    rows = [
        {
            "ledger_id": uuid.uuid4().hex,
            "message_key": key,
            "status": "accepted",
            "workspace": workspace,
            "stream": stream,
            "campaign": "pro_tips",
            "send_window": "w",
            "recipient": f"{key}@example.com",
            "identity": identity,
            "provider": "sandbox",
            "provider_account": account,
            "provider_message_id": f"{key}@sandbox",
            "run_id": "r",
            "recorded_at": at,
        }
        for key in keys
    ]
    table = pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA)
    warehouse.append(MAILERS_SCHEMA, "send_ledger", table)
    return keys


def event_rows(keys: list[str], kind: str) -> list[dict[str, Any]]:
    event_type, bounce = {"hard": ("bounced", "hard"), "soft": ("bounced", "soft")}.get(
        kind, (kind, None)
    )
    return [
        {
            "event_id": f"{kind}-{key}",
            "event_type": event_type,
            "bounce_class": bounce,
            "occurred_at": utcnow(),
            "provider": "sandbox",
            "provider_account": "acme_sandbox_a",
            "message_key": key,
            "raw_payload": "{}",
            "ingested_at": utcnow(),
        }
        for key in keys
    ]


def loaded_events(warehouse: Warehouse, keys: list[str], kind: str = "hard") -> None:
    table = pa.Table.from_pylist(event_rows(keys, kind), schema=EVENTS_SCHEMA)
    warehouse.append(MAILERS_SCHEMA, "events", table)


def summary(findings: list[Trip | RateWarning]) -> list[tuple[str, str, str, float]]:
    return [(f.severity, f.scope.key, str(f.metric), f.window_hours) for f in findings]


def test_below_the_minimum_volume_nothing_trips(
    warehouse: Warehouse, fixed_clock: FixedClock
) -> None:
    keys = accepted(warehouse, 299)
    loaded_events(warehouse, keys[:150])
    assert evaluate(warehouse, "acme", RULES) == []
    keys += accepted(warehouse, 1)
    found = evaluate(warehouse, "acme", RULES)
    assert ("pause", "stream:acme.lifecycle", "hard_bounce", 1.0) in summary(found)


def test_warn_then_pause_on_hard_bounces_and_complaints(
    warehouse: Warehouse, fixed_clock: FixedClock
) -> None:
    keys = accepted(warehouse, 2500)
    loaded_events(warehouse, keys[:50])  # 2%: the warning level
    loaded_events(warehouse, keys[50:51], "soft")  # soft bounces never count
    loaded_events(warehouse, keys[100:102], "complained")  # 0.08%: the warning level
    found = evaluate(warehouse, "acme", RULES)
    assert {f.severity for f in found} == {"warn"}
    assert {(str(f.metric), f.window_hours) for f in found} == {
        ("hard_bounce", 1.0),
        ("complaint", 1.0),
    }, "the 24 h window sees the same messages, already explained by the 1 h warnings"
    warning = next(f for f in found if str(f.metric) == "hard_bounce")
    assert (warning.bad, warning.volume, warning.rate) == (50, 2500, 0.02)
    assert warning.describe() == "hard bounce 2% of 2500 in 1h >= 2%"

    loaded_events(warehouse, keys[51:100])  # 99 hard bounces: 3.96%, still a warning
    loaded_events(warehouse, keys[102:103], "complained")  # 3: 0.12%
    found = evaluate(warehouse, "acme", RULES)
    assert summary(found) == [
        ("pause", "stream:acme.lifecycle", "complaint", 1.0),
    ], "a tripped scope is not warned about too"
    loaded_events(warehouse, keys[103:104], "hard")
    loaded_events(warehouse, keys[103:104], "hard")  # a second copy counts once
    trip = evaluate(warehouse, "acme", RULES.model_copy(update={"complaint": RULES.hard_bounce}))
    assert summary(trip) == [("pause", "stream:acme.lifecycle", "hard_bounce", 1.0)]
    assert (trip[0].bad, trip[0].volume) == (100, 2500)


def test_the_short_and_the_long_window(warehouse: Warehouse, fixed_clock: FixedClock) -> None:
    keys = accepted(warehouse, 400, ago=timedelta(hours=3))
    loaded_events(warehouse, keys[:20])
    found = evaluate(warehouse, "acme", RULES)
    assert summary(found) == [("pause", "stream:acme.lifecycle", "hard_bounce", 24.0)]
    assert found[0].window_start == utcnow() - timedelta(hours=24)

    accepted(warehouse, 400)  # a clean hour: 20 of 800 in 24 h is 2.5%, a warning only
    assert summary(evaluate(warehouse, "acme", RULES)) == [
        ("warn", "stream:acme.lifecycle", "hard_bounce", 24.0)
    ]
    fixed_clock.advance(timedelta(hours=21, minutes=1).total_seconds())
    assert evaluate(warehouse, "acme", RULES) == [], "the bounced messages left the window"


def test_the_narrowest_scope_that_explains_the_rate_trips(
    warehouse: Warehouse, fixed_clock: FixedClock
) -> None:
    # A bad list on lifecycle: account a (which also carries clean transactional mail) is
    # over only because of it, so the stream is paused and account a keeps sending.
    bad = accepted(warehouse, 500, account="acme_sandbox_a")
    accepted(warehouse, 200, account="acme_sandbox_b")
    accepted(warehouse, 300, stream="transactional", account="acme_sandbox_a")
    loaded_events(warehouse, bad[:40])
    assert [f.scope.key for f in evaluate(warehouse, "acme", RULES)] == ["stream:acme.lifecycle"]


def test_an_account_with_a_bad_reputation_trips_alone(
    warehouse: Warehouse, fixed_clock: FixedClock
) -> None:
    bad = accepted(warehouse, 400, account="acme_sandbox_b")
    accepted(warehouse, 400, account="acme_sandbox_a")
    accepted(warehouse, 300, stream="transactional", account="acme_sandbox_b")
    loaded_events(warehouse, bad[:30])  # b: 30 of 700 = 4.3%; lifecycle: 30 of 800 = 3.75%
    found = evaluate(warehouse, "acme", RULES)
    assert [(f.severity, f.scope.key) for f in found] == [("pause", "account:acme.acme_sandbox_b")]
    assert (found[0].bad, found[0].volume) == (30, 700)


def test_other_workspaces_and_streams_do_not_count(
    warehouse: Warehouse, fixed_clock: FixedClock
) -> None:
    accepted(warehouse, 1000)
    noisy = accepted(
        warehouse,
        100,
        workspace="globex",
        identity="globex_news",
        account="globex_sandbox",
    )
    loaded_events(warehouse, noisy)
    other = accepted(warehouse, 100, stream="transactional")
    loaded_events(warehouse, other[:30])  # 30 of 1100 in the account: 2.7%, a warning
    found = evaluate(warehouse, "acme", RULES)
    # The identity and the account sent the same messages: one of them is warned about.
    assert [(f.severity, f.scope.key) for f in found] == [("warn", "identity:acme.acme_news")]
    assert (found[0].bad, found[0].volume) == (30, 1100)
    assert evaluate(warehouse, "globex", RULES) == [], "globex sent 100: below the minimum"


def sandbox_lines(keys: list[str], event: str) -> list[bytes]:
    return [
        json.dumps(
            {
                "id": f"sbx-{event}-{key}",
                "event": event,
                "timestamp": utcnow().isoformat(),
                "message_id": f"{key}@sandbox",
                "recipient": f"{key}@bounce.mailers.test",
                "metadata": {"message_key": key},
            }
        ).encode()
        for key in keys
    ]


def test_landed_but_unloaded_feedback_counts(
    warehouse: Warehouse, tmp_path: Path, fixed_clock: FixedClock
) -> None:
    landing = tmp_path / "landing"
    keys = accepted(warehouse, 400)
    land(landing, "sandbox", "acme_sandbox_a", sandbox_lines(keys[:5], "delivered"))
    feedback = LandedFeedback(warehouse, landing, event_parser)
    assert feedback.poll() == 0 and feedback.table.num_rows == 0
    land(landing, "sandbox", "acme_sandbox_a", sandbox_lines(keys[:20], "bounce"))
    assert feedback.poll() == 20 and feedback.poll() == 0, "a file is read once"
    assert evaluate(warehouse, "acme", RULES) == []
    found = evaluate(warehouse, "acme", RULES, landed=feedback.table)
    assert summary(found) == [("pause", "stream:acme.lifecycle", "hard_bounce", 1.0)]
    assert found[0].landed_events == 20 and "landed_feedback" in found[0].sql

    ingest(warehouse, landing, event_parser)
    assert LandedFeedback(warehouse, landing, event_parser).poll() == 0, "loaded files are skipped"
    assert summary(evaluate(warehouse, "acme", RULES)) == summary(found)
    both = evaluate(warehouse, "acme", RULES, landed=feedback.table)
    assert (both[0].bad, both[0].volume) == (20, 400), "an event loaded and landed counts once"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    from .support import EXAMPLE_CONFIG

    loaded = load(EXAMPLE_CONFIG, {"MAILERS_UNSUBSCRIBE_KEY": "k"})
    return loaded.model_copy(update={"data_dir": tmp_path / "data"})


def test_apply_pauses_with_evidence_alerts_once_and_a_resume_forgives(
    warehouse: Warehouse,
    settings: Settings,
    fixed_clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    board = PauseBoard(settings.data_dir)
    keys = accepted(warehouse, 412)
    loaded_events(warehouse, keys[:21])
    alerts: list[tuple[int, str, Mapping[str, Any]]] = []
    found = evaluate(warehouse, "acme", RULES)
    (pause,) = apply(found, board, "hash", lambda *a: alerts.append(a))
    assert pause.automatic and pause.actor == "rule:pause_rules"
    assert pause_line(pause) == (
        "paused: stream acme.lifecycle automatically (hard bounce 5.1% of 412 in 1h >= 4%); "
        "resume: mailers resume stream:acme.lifecycle --reason ..."
    )
    (evidence,) = pause.evidence["findings"]
    assert (evidence["bad"], evidence["volume"], evidence["window_hours"]) == (21, 412, 1.0)
    # Lower-cased: an engine may quote names in another case (Snowflake's upper case).
    assert "send_ledger" in evidence["sql"].lower() and "events" in evidence["sql"].lower()
    assert [(level, payload["scope"]) for level, _, payload in alerts] == [
        (logging.ERROR, "stream:acme.lifecycle")
    ]
    assert apply(found, board, "hash", lambda *a: alerts.append(a)) == [] and len(alerts) == 1

    paused = [p.scope for p in board.active().values()]
    assert evaluate(warehouse, "acme", RULES, paused=paused) == [], "held messages count once"

    scope = PauseScope("acme", PauseLevel.STREAM, "lifecycle")
    fixed_clock.advance(60)
    board.resume(scope, actor="alice", reason="list cleaned", config_hash="h", by_person=True)
    resumed = resumed_at(warehouse, board)
    assert list(resumed) == ["stream:acme.lifecycle"]
    assert evaluate(warehouse, "acme", RULES, resumed=resumed) == [], "a resume forgives"
    fresh = accepted(warehouse, 400, ago=timedelta(0))
    loaded_events(warehouse, fresh[:20])
    again = evaluate(warehouse, "acme", RULES, resumed=resumed)
    assert [(f.bad, f.volume) for f in again] == [(20, 400)], "mail after the resume counts"


def test_live_rules_evaluate_only_when_feedback_lands_or_the_recheck_is_due(
    warehouse: Warehouse,
    settings: Settings,
    fixed_clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    board = PauseBoard(settings.data_dir)
    live = LiveRules(warehouse, settings, board, event_parser)
    keys = accepted(warehouse, 400)
    assert live.check() == [] and live.evaluations == 1
    assert live.check() == [] and live.evaluations == 1, "nothing new: no query"
    land(settings.landing_dir, "sandbox", "acme_sandbox_a", sandbox_lines(keys[:3], "delivered"))
    assert live.check() == [] and live.evaluations == 1, "no bounce or complaint landed"
    fixed_clock.advance(60)
    assert live.check() == [] and live.evaluations == 2, "the recheck interval passed"
    land(settings.landing_dir, "sandbox", "acme_sandbox_a", sandbox_lines(keys[:1], "complaint"))
    with caplog.at_level(logging.WARNING, logger="mailers.alerts"):
        (pause,) = live.check()
    assert live.evaluations == 3 and pause.scope.key == "stream:acme.lifecycle"
    assert board.holding("acme", stream="lifecycle") == pause
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert caplog.records[0].getMessage() == pause_line(pause)
    assert "complaint 0.25% of 400 in 1h >= 0.1%" in pause.reason


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ({"hard_bounce": {"warn": 0.05, "pause": 0.04}}, "must not be above pause"),
        ({"complaint": {"warn": 0, "pause": 0.001}}, "greater than 0"),
        ({"complaint": {"warn": 0.5, "pause": 1}}, "less than 1"),
        ({"min_volume": 300, "treshold": 1}, "treshold"),
        ({"window_hours": [1, 1]}, "must not repeat"),
        ({"levels": ["campaign"]}, "levels"),
        ({"alert_webhook": {"url": "ftp://x", "secret": {"env": "S"}}}, "url"),
    ],
)
def test_rules_config_is_validated_strictly(
    edit_config: ConfigEditor, rules: dict[str, Any], problem: str
) -> None:
    path = edit_config(lambda doc: doc["workspaces"]["acme"].update(pause_rules=rules))
    with pytest.raises(ConfigError, match=problem) as raised:
        load(path, {"MAILERS_UNSUBSCRIBE_KEY": "k"})
    assert "pause_rules" in str(raised.value)


def test_when_every_part_of_a_scope_trips_the_scope_itself_does(
    warehouse: Warehouse, fixed_clock: FixedClock
) -> None:
    # Two identities of one stream, both over: the stream (and not each identity) is paused;
    # the account sends the same messages, so the stream, the narrower in config, explains it.
    for identity in ("globex_news", "globex_team"):
        keys = accepted(
            warehouse, 350, workspace="globex", identity=identity, account="globex_sandbox"
        )
        loaded_events(warehouse, keys[:2], "complained")
    found = evaluate(warehouse, "globex", RULES)
    assert [(f.severity, f.scope.key, f.bad, f.volume) for f in found] == [
        ("pause", "stream:globex.lifecycle", 4, 700)
    ]


def test_a_poll_lists_only_the_folders_that_changed(warehouse: Warehouse, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    keys = [uuid.uuid4().hex for _ in range(4)]
    first = land(landing, "sandbox", "acme_sandbox_a", sandbox_lines(keys[:1], "bounce"))
    other = land(landing, "sandbox", "acme_sandbox_b", sandbox_lines(keys[1:2], "bounce"))
    assert first is not None and other is not None
    for folder in (first.parent, other.parent):
        os.utime(folder, ns=(10**18, 10**18))  # long settled: in 2001
    feedback = LandedFeedback(warehouse, landing, event_parser)
    assert feedback.poll() == 2 and feedback.listings == 2
    assert feedback.poll() == 0 and feedback.listings == 2, "no folder changed: none listed"
    land(landing, "sandbox", "acme_sandbox_b", sandbox_lines(keys[2:4], "complaint"))
    assert feedback.poll() == 2 and feedback.listings == 3, "only the changed folder"
    assert sorted(feedback.table["event_type"].to_pylist()) == [
        "bounced",
        "bounced",
        "complained",
        "complained",
    ]


def test_an_event_without_our_key_counts_by_its_provider_message_id(
    warehouse: Warehouse, fixed_clock: FixedClock
) -> None:
    keys = accepted(warehouse, 400)
    rows = event_rows(keys[:16], "hard")
    for row, key in zip(rows, keys, strict=False):
        row["message_key"], row["provider_message_id"] = None, f"{key}@sandbox"
    rows[0]["provider_account"] = "acme_sandbox_b"  # another account's id: not ours
    warehouse.append(MAILERS_SCHEMA, "events", pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA))
    found = evaluate(warehouse, "acme", RULES)
    assert [(f.scope.key, f.bad) for f in found] == [("stream:acme.lifecycle", 15)]
    assert found[0].severity == "warn", "15 of 400 is 3.75%"
