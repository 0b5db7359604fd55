"""A batch that meets trouble part-way keeps what each of its calls ended in.

Against the simulator: a batch refused whole for one bad entry is split, and when a later
half then fails, the halves already accepted stay accepted (the bug that mailed SendGrid
recipients twice); a 500 after the provider stored the batch is in doubt, and is asked
once, never three times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from adapters.providers.postmark import PostmarkSettings
from adapters.providers.postmark.sending import PostmarkProvider
from adapters.providers.sendgrid import SendGridProvider, SendGridSettings
from adapters.simulator import postmark as postmark_sim
from adapters.simulator import sendgrid as sendgrid_sim
from adapters.simulator.server import Fault, Simulator
from mailers.messages import OutboundMessage, SendOutcome
from tests.adapters.provider_contract import RecordingJournal, make_message

SENDGRID_KEY = "SG.partial-batches"
POSTMARK_TOKEN = "pm-partial-batches"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator() as simulator:
        sendgrid_sim.register(simulator, credentials={"api_key": SENDGRID_KEY})
        postmark_sim.register(simulator, credentials={"server_token": POSTMARK_TOKEN})
        yield simulator


def sendgrid(sim: Simulator) -> SendGridProvider:
    settings = SendGridSettings(base_url=sim.base_url, timeout_seconds=1.5)
    return SendGridProvider("sg", settings, api_key=SENDGRID_KEY, sleep=lambda _: None)


def one_content(count: int, bad: int) -> list[OutboundMessage]:
    """Messages SendGrid sends in one request; the one at ``bad`` makes it refuse the call."""
    messages = [
        make_message("nobody@reject.mailers.test" if i == bad else f"u{i}@example.com")
        for i in range(count)
    ]
    return [dataclasses.replace(m, html="<p>Same</p>", text="Same") for m in messages]


def test_a_later_half_that_fails_never_undoes_an_accepted_half(sim: Simulator) -> None:
    messages = one_content(8, bad=5)
    # 1st call (all 8): refused for the bad entry; 2nd (0-3): accepted; 3rd (4-7): 503s.
    sim.inject("sendgrid", Fault(), Fault(), *[Fault(status=503, retry_after=1)] * 3)
    journal = RecordingJournal()
    provider = sendgrid(sim)
    try:
        results = provider.send_batch(messages, journal)
    finally:
        provider.close()

    assert [r.accepted for r in results] == [True] * 4 + [False] * 4
    assert all(r.outcome == SendOutcome.NOT_SENT and r.account_unavailable for r in results[4:])
    assert set(sim.accepted) == {m.message_key for m in messages[:4]}
    handed_over = [keys for kind, keys in journal.calls if kind == "handing_over"]
    assert [len(keys) for keys in handed_over] == [8, 4, 4, 4, 4]


def test_a_timeout_on_a_later_half_leaves_only_that_half_in_doubt(sim: Simulator) -> None:
    messages = one_content(8, bad=6)
    sim.inject("sendgrid", Fault(), Fault(), Fault(timeout=5))
    provider = sendgrid(sim)
    try:
        results = provider.send_batch(messages)
    finally:
        provider.close()

    assert [r.outcome for r in results[:4]] == [SendOutcome.ANSWERED] * 4
    assert all(r.accepted for r in results[:4])
    assert [r.outcome for r in results[4:]] == [SendOutcome.UNKNOWN] * 4
    assert max(sim.accepted.values()) == 1


def test_a_500_after_the_batch_was_stored_is_in_doubt_and_sent_once(sim: Simulator) -> None:
    messages = [make_message(f"p{i}@example.com") for i in range(3)]
    sim.inject("postmark", Fault(status=500, after_processing=True))
    provider = PostmarkProvider(
        "pm", PostmarkSettings(base_url=sim.base_url), POSTMARK_TOKEN, sleep=lambda _: None
    )
    try:
        results = provider.send_batch(messages)
    finally:
        provider.close()

    assert all(r.outcome == SendOutcome.UNKNOWN for r in results)
    assert sim.accepted == {m.message_key: 1 for m in messages}
    assert sum(1 for provider, _, _ in sim.requests if provider == "postmark") == 1
