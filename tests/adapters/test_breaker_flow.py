"""A provider's send flow behind a circuit breaker, against the simulator and a DuckDB log.

Once the breaker refuses a call, nothing more of the batch is handed over: the rest comes
back ``not_sent`` with ``account_unavailable`` (for the core to fail over), and after
``open_seconds`` one probe call decides whether the account is back.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.providers.hooks import Ambiguous
from adapters.providers.postmark import PostmarkSettings
from adapters.providers.postmark.sending import PostmarkProvider
from adapters.providers.sendgrid import SendGridProvider, SendGridSettings
from adapters.simulator import postmark as postmark_sim
from adapters.simulator import sendgrid as sendgrid_sim
from adapters.simulator.server import Fault, Simulator
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.breaker_board import AuditContext, BreakerBoard
from mailers.clock import FixedClock, use_clock
from mailers.messages import OutboundMessage, SendOutcome
from mailers.policy_config import BreakerConfig
from mailers.providers import AccountUnavailable
from mailers.tables import ensure_tables
from tests.adapters.provider_contract import RecordingJournal, make_message
from tests.adapters.test_send_flow import Scripted

POSTMARK_TOKEN = "pm-breaker-flow"
SENDGRID_KEY = "SG.breaker-flow"
ACCOUNT = "acme_pm"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator() as simulator:
        postmark_sim.register(simulator, credentials={"server_token": POSTMARK_TOKEN})
        sendgrid_sim.register(simulator, credentials={"api_key": SENDGRID_KEY})
        yield simulator


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[DuckDBWarehouse]:
    with DuckDBWarehouse(tmp_path / "warehouse.duckdb") as wh:
        ensure_tables(wh)
        yield wh


@pytest.fixture
def fixed() -> Iterator[FixedClock]:
    pinned = FixedClock(datetime(2026, 11, 23, 8, 0, tzinfo=UTC))
    with use_clock(pinned):
        yield pinned


@pytest.fixture
def postmark(sim: Simulator) -> Iterator[PostmarkProvider]:
    settings = PostmarkSettings(base_url=sim.base_url, timeout_seconds=2.0)
    provider = PostmarkProvider(
        ACCOUNT, settings, POSTMARK_TOKEN, max_batch_size=2, sleep=lambda _: None
    )
    yield provider
    provider.close()


def board(warehouse: DuckDBWarehouse, account: str = ACCOUNT, **config: float) -> BreakerBoard:
    settings = {"consecutive_failures": 2, "window_calls": 10, "open_seconds": 120, **config}
    return BreakerBoard.load(
        warehouse,
        "acme",
        {account: BreakerConfig.model_validate(settings)},
        AuditContext(run_id="run-1", actor="test", config_hash="c0ffee"),
    )


def batch(prefix: str, count: int) -> list[OutboundMessage]:
    return [make_message(f"{prefix}{i}@example.com") for i in range(count)]


def postmark_calls(sim: Simulator) -> int:
    return sum(1 for p, _, path in sim.requests if p == "postmark" and path == "/email/batch")


def moves(warehouse: DuckDBWarehouse) -> list[tuple[str, str, str]]:
    rows = warehouse.query(
        "select detail from mailers.audit_log where action = 'breaker' order by recorded_at"
    ).to_pylist()
    details = [json.loads(row["detail"]) for row in rows]
    return [(d["from_state"], d["to_state"], d["trigger"]) for d in details]


def test_once_the_breaker_opens_the_rest_of_the_batch_is_never_handed_over(
    sim: Simulator, warehouse: DuckDBWarehouse, postmark: PostmarkProvider, fixed: FixedClock
) -> None:
    messages = batch("open", 6)
    sim.inject("postmark", Fault(status=500), Fault(status=500))
    inner = RecordingJournal()
    breakers = board(warehouse)

    results = postmark.send_batch(messages, breakers.journal(ACCOUNT, inner))

    assert [r.outcome for r in results[:4]] == [SendOutcome.UNKNOWN] * 4
    for refused in results[4:]:
        assert refused.outcome == SendOutcome.NOT_SENT and refused.account_unavailable
        assert not refused.accepted
        assert refused.reason == f"not sent: {breakers.why(ACCOUNT)}"
    assert "circuit breaker of acme_pm open" in (results[4].reason or "")
    keys = [m.message_key for m in messages]
    assert inner.calls == [
        ("handing_over", keys[0:2]),
        ("answered", keys[0:2]),
        ("handing_over", keys[2:4]),
        ("answered", keys[2:4]),
        ("answered", keys[4:6]),
    ]
    assert postmark_calls(sim) == 2
    assert not set(keys[4:]) & set(sim.accepted)
    assert moves(warehouse) == [("closed", "open", "2 failures in a row (opens at 2)")]


def test_an_open_breaker_refuses_a_whole_batch_then_one_probe_closes_it(
    sim: Simulator, warehouse: DuckDBWarehouse, postmark: PostmarkProvider, fixed: FixedClock
) -> None:
    breakers = board(warehouse)
    sim.inject("postmark", Fault(status=500), Fault(status=500))
    postmark.send_batch(batch("first", 4), breakers.journal(ACCOUNT, RecordingJournal()))
    assert postmark_calls(sim) == 2

    refused = postmark.send_batch(batch("second", 4), breakers.journal(ACCOUNT, RecordingJournal()))
    assert all(r.outcome == SendOutcome.NOT_SENT and r.account_unavailable for r in refused)
    assert postmark_calls(sim) == 2

    fixed.advance(120)
    inner = RecordingJournal()
    later = batch("later", 4)
    results = postmark.send_batch(later, breakers.journal(ACCOUNT, inner))

    assert all(r.accepted for r in results)
    assert [kind for kind, _ in inner.calls] == ["handing_over", "answered"] * 2
    assert postmark_calls(sim) == 4
    assert {m.message_key for m in later} <= set(sim.accepted)
    assert moves(warehouse) == [
        ("closed", "open", "2 failures in a row (opens at 2)"),
        ("open", "half_open", "open for 120s"),
        ("half_open", "closed", "probe answered"),
    ]


def test_retries_after_a_503_count_once_when_the_flow_gives_up(
    sim: Simulator, warehouse: DuckDBWarehouse, postmark: PostmarkProvider, fixed: FixedClock
) -> None:
    breakers = board(warehouse, consecutive_failures=1)
    sim.inject("postmark", Fault(status=503, retry_after=1))
    first = postmark.send_batch(batch("retried", 2), breakers.journal(ACCOUNT, RecordingJournal()))
    assert all(r.accepted for r in first)
    assert breakers.available(ACCOUNT) and moves(warehouse) == []

    sim.inject("postmark", *[Fault(status=503, retry_after=1)] * 3)
    given_up = postmark.send_batch(batch("gave", 4), breakers.journal(ACCOUNT, RecordingJournal()))

    assert all(r.outcome == SendOutcome.NOT_SENT and r.account_unavailable for r in given_up)
    assert postmark_calls(sim) == 2 + 3
    assert not breakers.available(ACCOUNT)
    (opened,) = moves(warehouse)
    assert opened == ("closed", "open", "1 failure in a row (opens at 1)")
    assert "gave up after 3 attempts" in breakers.why(ACCOUNT)


def test_a_batch_refused_for_one_bad_address_and_halved_never_opens_it(
    sim: Simulator, warehouse: DuckDBWarehouse, fixed: FixedClock
) -> None:
    # SendGrid sends one content to many recipients in one request and refuses all of it
    # for one bad address: the flow halves it down to that address, which is rejected.
    messages = [
        dataclasses.replace(m, html="<p>Same</p>", text="Same")
        for m in [make_message("nobody@reject.mailers.test"), *batch("fine", 7)]
    ]
    provider = SendGridProvider(
        "acme_sg",
        SendGridSettings(base_url=sim.base_url, timeout_seconds=2.0),
        api_key=SENDGRID_KEY,
        sleep=lambda _: None,
    )
    breakers = board(warehouse, account="acme_sg", consecutive_failures=1)
    inner = RecordingJournal()
    try:
        results = provider.send_batch(messages, breakers.journal("acme_sg", inner))
    finally:
        provider.close()

    assert not results[0].accepted and results[0].outcome == SendOutcome.ANSWERED
    assert all(r.accepted for r in results[1:])
    assert sum(1 for kind, _ in inner.calls if kind == "handing_over") > 3
    assert breakers.available("acme_sg") and moves(warehouse) == []


class RefusesAfter(RecordingJournal):
    """Refuses every call after the first ``waves`` (what an opening breaker does)."""

    def __init__(self, waves: int) -> None:
        super().__init__()
        self.waves = waves

    def handing_over(
        self, messages: Sequence[OutboundMessage], idempotency_keys: Mapping[str, str]
    ) -> None:
        if sum(1 for kind, _ in self.calls if kind == "handing_over") >= self.waves:
            raise AccountUnavailable("circuit breaker of acct open")
        super().handing_over(messages, idempotency_keys)


def test_a_refused_retry_of_a_call_in_doubt_stays_in_doubt() -> None:
    """Its first request may have been accepted: refusing the retry never makes it not_sent."""
    provider = Scripted([Ambiguous("500 after storing")], idempotent=True, request_size=2)
    messages = batch("doubt", 4)
    journal = RefusesAfter(waves=1)

    results = provider.send_batch(messages, journal)

    assert len(provider.calls) == 1
    assert [r.outcome for r in results[:2]] == [SendOutcome.UNKNOWN] * 2
    assert results[0].reason == "in doubt, not retried: circuit breaker of acct open"
    assert not any(r.account_unavailable for r in results[:2])
    assert [r.outcome for r in results[2:]] == [SendOutcome.NOT_SENT] * 2
    assert all(r.account_unavailable for r in results[2:])
    assert results[2].reason == "not sent: circuit breaker of acct open"
