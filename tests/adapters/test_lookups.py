"""Provider records searched by message key (Postmark, Mailgun), against the simulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.providers import mailgun, postmark
from adapters.providers.mailgun.lookup import MailgunLookup
from adapters.providers.mailgun.sending import MailgunProvider
from adapters.providers.postmark.lookup import PostmarkLookup
from adapters.providers.postmark.sending import PostmarkProvider
from adapters.providers.registry import message_lookups
from adapters.settings import load
from adapters.simulator import mailgun as mailgun_sim
from adapters.simulator import postmark as postmark_sim
from adapters.simulator.server import Simulator
from mailers.clock import utcnow
from mailers.config import ProviderAccountConfig
from mailers.messages import OutboundMessage
from mailers.reconcile import InDoubt
from tests.adapters.provider_contract import make_message
from tests.conftest import write_config

POSTMARK = {"server_token": "pm-lookup-token"}
MAILGUN = {"api_key": "key-lookup", "webhook_signing_key": "mg-lookup-signing"}
DOMAIN = "news.acme.test"


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    monkeypatch.setenv("LOOKUP_PM_TOKEN", POSTMARK["server_token"])
    monkeypatch.setenv("LOOKUP_MG_KEY", MAILGUN["api_key"])
    with Simulator() as simulator:
        postmark_sim.register(simulator, credentials=POSTMARK)
        mailgun_sim.register(simulator, credentials=MAILGUN)
        yield simulator


def doubt(message: OutboundMessage, account: str) -> InDoubt:
    return InDoubt(
        message_key=message.message_key,
        recipient=message.recipient,
        provider_account=account,
        dispatched_at=utcnow(),
        workspace=message.workspace,
        stream=message.stream,
        campaign=message.campaign,
        send_window=message.send_window,
    )


def test_postmark_finds_what_it_accepted_and_knows_what_it_never_got(sim: Simulator) -> None:
    sent, unsent = make_message("sent@example.com"), make_message("unsent@example.com")
    settings = postmark.PostmarkSettings(base_url=sim.base_url)
    provider = PostmarkProvider("pm", settings, POSTMARK["server_token"])
    [result] = provider.send_batch([sent])
    provider.close()
    config = ProviderAccountConfig(
        kind="postmark", credentials={"server_token": {"env": "LOOKUP_PM_TOKEN"}}
    )

    sightings = PostmarkLookup("pm", config, settings).lookup(
        [doubt(sent, "pm"), doubt(unsent, "pm")]
    )

    by_key = {s.message_key: s for s in sightings}
    assert by_key[sent.message_key].accepted
    assert by_key[sent.message_key].provider_message_id == result.provider_message_id
    assert not by_key[unsent.message_key].accepted


def test_mailgun_finds_the_accepted_event_by_our_key(sim: Simulator) -> None:
    sent, unsent = make_message("sent@example.com"), make_message("unsent@example.com")
    # Same recipient, other window: an accepted event for the address that is not this key.
    other_window = make_message("unsent@example.com", window="w0")
    settings = mailgun.MailgunSettings(base_url=sim.base_url, domain=DOMAIN)
    provider = MailgunProvider("mg", settings, MAILGUN["api_key"])
    [result, _] = provider.send_batch([sent, other_window])
    provider.close()
    config = ProviderAccountConfig(
        kind="mailgun", credentials={"api_key": {"env": "LOOKUP_MG_KEY"}}
    )

    sightings = MailgunLookup("mg", config, settings).lookup(
        [doubt(sent, "mg"), doubt(unsent, "mg")]
    )

    by_key = {s.message_key: s for s in sightings}
    assert by_key[sent.message_key].accepted
    assert by_key[sent.message_key].provider_message_id == result.provider_message_id
    assert not by_key[unsent.message_key].accepted


def test_only_accounts_with_searchable_records_get_a_lookup(tmp_path) -> None:
    settings = load(write_config(tmp_path))  # sandbox accounts only

    assert message_lookups(settings, "acme") == {}
