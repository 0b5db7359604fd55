"""Pacing against the simulator's sending quota, over loopback, in real time.

Each test owns a simulator whose provider has a quota (messages per second with a burst)
and sends a few thousand messages through ``send_batch``, as the core does, with the
account's pacer configured above the quota (so 429s happen) or at it. The simulator's own
counts are the truth: every message accepted exactly once, none not sent, rejected or in
doubt, and the rate it admitted at least 90% of the quota. The quotas are what one
process sustains with room to spare on a loaded 2-core machine (the simulator shares the
process, and its GIL, with the sender): Postmark's batch calls go far faster, Mailgun's
call per message reaches 110 to 280 a second depending on the load, and 71 at a load
average above 5 (so its quota is 50).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import httpx
import pytest

from adapters.providers import mailgun, postmark, resend, sendgrid
from adapters.providers.base import BatchProvider
from adapters.providers.postmark.sending import PostmarkProvider
from adapters.simulator import mailgun as mailgun_sim
from adapters.simulator import postmark as postmark_sim
from adapters.simulator import resend as resend_sim
from adapters.simulator import sendgrid as sendgrid_sim
from adapters.simulator.server import Quota, QuotaStats, Simulator
from mailers.messages import SendOutcome, SendResult
from mailers.pacing import Pacer
from mailers.policy_config import PacingConfig
from tests.adapters.provider_contract import RecordingJournal, make_message

TOKEN = "pm-pacing-token"
MAILGUN = {"api_key": "key-pacing", "webhook_signing_key": "mg-pacing-signing"}
SENDGRID_KEY = "SG.pacing-key"
RESEND_KEY = "re_pacing_key"
MIN_BACKOFF = 0.1
"""The pacer's shortest pause after a 429 (configured per account; default 1 s)."""


@dataclass(frozen=True)
class Case:
    kind: str
    quota: float
    """The simulator's messages per second."""
    burst: int
    messages: int
    call_size: int


POSTMARK = Case("postmark", quota=400, burst=200, messages=3000, call_size=100)
MAILGUN_CASE = Case("mailgun", quota=50, burst=10, messages=700, call_size=1)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator() as simulator:
        postmark_sim.register(simulator, credentials={"server_token": TOKEN})
        mailgun_sim.register(simulator, credentials=MAILGUN)
        sendgrid_sim.register(simulator, credentials={"api_key": SENDGRID_KEY})
        resend_sim.register(simulator, credentials={"api_key": RESEND_KEY})
        yield simulator


def provider(kind: str, sim: Simulator, pacing: PacingConfig, call_size: int) -> BatchProvider:
    """An account of ``kind`` on ``sim``, paced from ``pacing`` as the registry does."""
    made: BatchProvider
    if kind == "postmark":
        settings = postmark.PostmarkSettings(base_url=sim.base_url)
        made = PostmarkProvider("pm", settings, TOKEN, max_batch_size=call_size)
    elif kind == "sendgrid":
        settings_sg = sendgrid.SendGridSettings(base_url=sim.base_url)
        made = sendgrid.SendGridProvider("sg", settings_sg, api_key=SENDGRID_KEY)
    elif kind == "resend":
        settings_rs = resend.ResendSettings(base_url=sim.base_url)
        made = resend.ResendProvider("rs", settings_rs, RESEND_KEY, max_batch_size=call_size)
    else:
        settings_mg = mailgun.MailgunSettings(base_url=sim.base_url, domain="news.acme.test")
        made = mailgun.MailgunProvider("mg", settings_mg, MAILGUN["api_key"])
    concurrency = pacing.concurrency or made.concurrency
    pacer = Pacer.of(pacing, largest_wave=made.request_size * concurrency)
    made.pace(pacer, concurrency=pacing.concurrency)
    return made


def send_all(account: BatchProvider, count: int) -> tuple[list[SendResult], RecordingJournal]:
    """Send ``count`` messages in batches of the account's size, as the core does."""
    messages = [make_message(f"paced{i}@example.com") for i in range(count)]
    journal = RecordingJournal()
    results: list[SendResult] = []
    try:
        for start in range(0, count, account.max_batch_size):
            results += account.send_batch(messages[start : start + account.max_batch_size], journal)
    finally:
        account.close()
    assert [r.message_key for r in results] == [m.message_key for m in messages]
    return results, journal


def assert_nothing_lost(results: Sequence[SendResult], sim: Simulator, count: int) -> None:
    not_accepted = [(r.outcome, r.reason) for r in results if not r.accepted]
    assert not_accepted == [], not_accepted[:3]
    assert len(sim.accepted) == count and max(sim.accepted.values()) == 1  # no duplicates


def assert_paced(stats: QuotaStats, case: Case) -> float:
    """At least 90% of the quota sustained, never more than it over a second plus the
    burst; returns the sustained rate (messages after the first request, first to last)."""
    assert stats.first is not None and stats.last is not None
    first_request = stats.admitted[0][1]
    sustained = (stats.accepted - first_request) / (stats.last - stats.first)
    assert sustained >= 0.9 * case.quota, (sustained, stats.throttled)
    assert stats.busiest(1.0) <= case.quota + case.burst
    return sustained


@pytest.mark.parametrize("case", [POSTMARK, MAILGUN_CASE], ids=lambda c: c.kind)
@pytest.mark.parametrize("over", [1.5, 1.0], ids=["above_quota", "at_quota"])
def test_a_paced_run_sustains_the_quota_and_its_429s_cost_nothing(
    sim: Simulator, case: Case, over: float
) -> None:
    sim.limit(case.kind, Quota(case.quota, burst=case.burst))
    pacing = PacingConfig(messages_per_second=case.quota * over, min_backoff_seconds=MIN_BACKOFF)
    account = provider(case.kind, sim, pacing, case.call_size)
    started = time.monotonic()

    results, journal = send_all(account, case.messages)

    stats = sim.quota_stats[case.kind]
    assert_nothing_lost(results, sim, case.messages)
    sustained = assert_paced(stats, case)
    if over > 1:
        assert stats.throttled > 0  # the quota really answered 429s, and none cost a message
    # Every call, throttled ones included, was journalled before it left and after.
    kinds = [kind for kind, _ in journal.calls]
    assert kinds == ["handing_over", "answered"] * (len(kinds) // 2)
    print(
        f"\n{case.kind} pacer at {over:g}x a {case.quota:g}/s quota: {sustained:.0f} msg/s "
        f"sustained ({sustained / case.quota:.0%}), {stats.throttled} 429s, "
        f"{time.monotonic() - started:.1f}s"
    )


@pytest.mark.parametrize("retry_after", [0.0, None], ids=["retry_after_0", "no_retry_after"])
def test_retry_after_zero_or_missing_never_spins(sim: Simulator, retry_after: float | None) -> None:
    case = POSTMARK
    quota = Quota(
        case.quota, burst=case.burst, retry_after=retry_after, send_retry_after=retry_after == 0
    )
    sim.limit("postmark", quota)
    pacing = PacingConfig(messages_per_second=case.quota * 1.5, min_backoff_seconds=MIN_BACKOFF)
    account = provider("postmark", sim, pacing, case.call_size)
    started = time.monotonic()

    results, _ = send_all(account, 1500)

    elapsed = time.monotonic() - started
    stats = sim.quota_stats["postmark"]
    assert_nothing_lost(results, sim, 1500)
    # Each 429 paused the account at least the minimum backoff: no hammering.
    assert 0 < stats.throttled <= elapsed / MIN_BACKOFF + 1


def test_a_spent_throttle_budget_leaves_the_rest_not_sent_for_failover(sim: Simulator) -> None:
    sim.limit("postmark", Quota(100, burst=100, retry_after=30))
    pacing = PacingConfig(max_throttle_wait_seconds=1.0, min_backoff_seconds=MIN_BACKOFF)
    account = provider("postmark", sim, pacing, call_size=100)
    started = time.monotonic()

    results, _ = send_all(account, 300)

    assert time.monotonic() - started < 10  # it did not sit out the 30 s Retry-After
    accepted = [r for r in results if r.accepted]
    left = [r for r in results if not r.accepted]
    assert len(accepted) == 100 and set(sim.accepted) == {r.message_key for r in accepted}
    assert len(left) == 200
    for result in left:
        assert result.outcome == SendOutcome.NOT_SENT and result.account_unavailable
        assert result.throttled
        assert "rate limited (429): the provider asked to wait" in (result.reason or "")


def test_the_quota_is_set_and_counted_over_the_control_endpoint(sim: Simulator) -> None:
    with httpx.Client(base_url=sim.base_url) as control:
        control.post(
            "/_simulator/quota",
            json={"provider": "postmark", "messages_per_second": 1, "burst": 2, "retry_after": 0},
        ).raise_for_status()
        account = provider("postmark", sim, PacingConfig(max_throttle_wait_seconds=0), 2)
        results, _ = send_all(account, 4)
        counts = control.get("/_simulator/quota", params={"provider": "postmark"}).json()

    assert sum(r.accepted for r in results) == 2
    assert counts["accepted"] == 2 and counts["throttled"] == 1
    assert counts["first"] is not None and counts["first"] == counts["last"]
    assert sim.requests.count(("postmark", "POST", "/email/batch")) == 2


def test_pacing_concurrency_replaces_the_accounts_own(sim: Simulator) -> None:
    account = provider("mailgun", sim, PacingConfig(concurrency=6), call_size=1)
    assert account.concurrency == 6

    results, _ = send_all(account, 30)

    assert_nothing_lost(results, sim, 30)


@pytest.mark.parametrize("kind", ["postmark", "mailgun", "sendgrid", "resend"])
def test_every_provider_simulator_answers_its_quota_with_429_and_sends_nothing(
    sim: Simulator, kind: str
) -> None:
    sim.limit(kind, Quota(1, burst=1, retry_after=7))
    pacing = PacingConfig(max_throttle_wait_seconds=5)  # less than the Retry-After
    first, second = (provider(kind, sim, pacing, call_size=1) for _ in range(2))

    [sent], _ = send_all(first, 1)
    [refused] = second.send_batch([make_message("over@example.com")])
    second.close()

    assert sent.accepted
    assert refused.outcome == SendOutcome.NOT_SENT and refused.throttled
    assert "rate limited (429): the provider asked to wait 7." in (refused.reason or "")
    assert list(sim.accepted) == [sent.message_key]
    assert sim.quota_stats[kind].throttled == 1 and sim.quota_stats[kind].accepted == 1
