"""The sandbox provider: real .eml files, deterministic feedback events, drill faults; and
the shared provider contract, with faults injected through the sandbox's own settings."""

from __future__ import annotations

import email
import email.policy
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.providers import sandbox
from adapters.providers.sandbox import SandboxProvider, parse, planned_events
from adapters.providers.sandbox import SandboxSettings as Settings
from mailers import clock
from mailers.events import BounceClass, CanonicalEvent, EventType
from mailers.keys import message_key
from mailers.messages import MESSAGE_KEY_HEADER, OutboundMessage, SendOutcome
from tests.adapters.provider_contract import NoWebhooks, ProviderContract

ACCOUNT = "acme_sandbox_a"
RECIPIENTS = [
    "ann@example.com",
    "hard@bounce.mailers.test",
    "soft@softbounce.mailers.test",
    "angry@complaint.mailers.test",
    "nobody@reject.mailers.test",
]
CANONICAL = {
    "delivered": (EventType.DELIVERED, None),
    "deferral": (EventType.DEFERRED, None),
    "bounce": (EventType.BOUNCED, BounceClass.HARD),
    "soft_bounce": (EventType.BOUNCED, BounceClass.SOFT),
    "complaint": (EventType.COMPLAINED, None),
    "open": (EventType.OPENED, None),
    "click": (EventType.CLICKED, None),
    "unsubscribe": (EventType.UNSUBSCRIBED, None),
}


def outbound(recipient: str, *, headers: dict[str, str] | None = None) -> OutboundMessage:
    key = message_key("acme", "pro_tips", recipient, "once")
    return OutboundMessage(
        message_key=key,
        workspace="acme",
        stream="lifecycle",
        campaign="pro_tips",
        send_window="once",
        identity="acme_news",
        recipient=recipient,
        from_address="news@news.acme.test",
        sending_domain="news.acme.test",
        subject="Three ways to get more from Acme",
        html="<p>Hello <b>there</b></p>",
        text="Hello there",
        from_name="Acme",
        reply_to="support@acme.test",
        headers={MESSAGE_KEY_HEADER: key, **(headers or {})},
    )


def unsubscribe_headers(key: str) -> dict[str, str]:
    return {
        "List-Unsubscribe": f"<https://unsubscribe.mailers.test/u?token={key}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def provider(tmp_path: Path, **settings: object) -> SandboxProvider:
    return SandboxProvider(
        ACCOUNT,
        Settings.model_validate(settings),
        outbox_dir=tmp_path / "outbox",
        landing_dir=tmp_path / "landing",
    )


def batch() -> list[OutboundMessage]:
    messages = []
    for recipient in RECIPIENTS:
        key = message_key("acme", "pro_tips", recipient, "once")
        messages.append(outbound(recipient, headers=unsubscribe_headers(key)))
    return messages


def landing_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "landing" / "sandbox" / ACCOUNT).glob("*.jsonl"))


def parsed_events(path: Path) -> list[tuple[str, CanonicalEvent]]:
    lines = path.read_text().splitlines()
    return [(line, event) for line in lines for event in parse(line.encode(), ACCOUNT)]


class SandboxHarness(NoWebhooks):
    """The shared contract's view of the sandbox: its outbox and landing zone in ``root``.

    Faults are the sandbox's ``fault:`` setting, switched on every provider built so far and
    every one built after. They never lift and the sandbox never retries, so nothing sleeps.
    """

    rate_limits_lift = False
    spec = sandbox.SPEC
    fixtures = None
    parse = staticmethod(parse)

    def __init__(self, root: Path) -> None:
        self.root = root
        self.secrets: list[str] = []  # the sandbox reads no credentials
        self.fixture_types: dict[str, Any] = {}  # no recorded payloads
        self.slept: list[float] = []
        self.fault = "none"
        self.built: list[SandboxProvider] = []

    def provider(self, *, valid_credentials: bool = True) -> SandboxProvider:
        sender = provider(self.root, fault=self.fault)
        self.built.append(sender)
        return sender

    def _inject(self, fault: str) -> None:
        self.fault = fault
        for sender in self.built:
            sender.settings = sender.settings.model_copy(update={"fault": fault})

    def inject_rate_limit(self, retry_after: float) -> None:
        # The sandbox answers no 429. "unavailable" is its fault that, like a rate limit past
        # the retry policy, takes the account out of the run ("throttled" keeps it up).
        self._inject("unavailable")

    def inject_timeout(self) -> None:
        self._inject("timeout")

    def delivered_keys(self) -> dict[str, str]:
        delivered = {}
        for path in (self.root / "outbox" / ACCOUNT).glob("*.eml"):
            parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            delivered[str(parsed[MESSAGE_KEY_HEADER])] = str(parsed["To"])
        return delivered


@pytest.fixture
def harness(tmp_path: Path) -> SandboxHarness:
    return SandboxHarness(tmp_path)


class TestSandboxContract(ProviderContract):
    """Every shared provider test that applies to the sandbox."""


def test_results_accept_all_but_the_reject_domain(tmp_path: Path) -> None:
    messages = batch()

    results = provider(tmp_path).send_batch(messages)

    assert [r.message_key for r in results] == [m.message_key for m in messages]
    assert [r.accepted for r in results] == [True, True, True, True, False]
    rejected = results[-1]
    assert rejected.provider_message_id is None
    assert rejected.reason and "reject.mailers.test" in rejected.reason
    ids = [r.provider_message_id for r in results[:-1]]
    assert all(i and i.endswith("@sandbox.mailers.test") for i in ids)
    assert len(set(ids)) == 4


def test_one_eml_per_accepted_message(tmp_path: Path) -> None:
    messages = batch()

    provider(tmp_path).send_batch(messages)

    outbox = tmp_path / "outbox" / ACCOUNT
    assert sorted(p.name for p in outbox.iterdir()) == sorted(
        f"{m.message_key}.eml" for m in messages[:-1]
    )


def test_eml_files_are_complete_rfc5322_messages(tmp_path: Path) -> None:
    messages = batch()
    results = provider(tmp_path).send_batch(messages)

    for message, result in zip(messages[:-1], results, strict=False):
        raw = (tmp_path / "outbox" / ACCOUNT / f"{message.message_key}.eml").read_bytes()
        parsed = email.message_from_bytes(raw, policy=email.policy.default)

        assert parsed["From"] == "Acme <news@news.acme.test>"
        assert parsed["To"] == message.recipient
        assert parsed["Reply-To"] == "support@acme.test"
        assert parsed["Subject"] == message.subject
        assert parsed["Date"] is not None
        assert parsed["Message-ID"] == f"<{result.provider_message_id}>"
        assert parsed[MESSAGE_KEY_HEADER] == message.message_key
        # A long URL is folded onto its own line; unfolding keeps the folding space.
        assert parsed["List-Unsubscribe"].strip() == message.headers["List-Unsubscribe"]
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert parsed.get_content_type() == "multipart/alternative"
        text = parsed.get_body(preferencelist=("plain",))
        html = parsed.get_body(preferencelist=("html",))
        assert text is not None and text.get_content().strip() == "Hello there"
        assert html is not None and html.get_content().strip() == "<p>Hello <b>there</b></p>"


def test_sending_is_dated_by_mailers_clock(tmp_path: Path, fixed_clock: clock.FixedClock) -> None:
    fixed_clock.set(datetime(2031, 12, 31, 23, 59, 30, tzinfo=UTC))
    message = outbound("ann@example.com")

    provider(tmp_path).send_batch([message])

    raw = (tmp_path / "outbox" / ACCOUNT / f"{message.message_key}.eml").read_bytes()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Date"].datetime == fixed_clock.now()
    [landing] = landing_files(tmp_path)
    assert landing.name.startswith("20311231T235930000000-")
    [delivered, *_] = [event for _, event in parsed_events(landing)]
    assert delivered.event_type is EventType.DELIVERED
    assert delivered.occurred_at == datetime(2031, 12, 31, 23, 59, 31)  # accepted + 1 s


def test_message_without_unsubscribe_headers_has_none(tmp_path: Path) -> None:
    message = outbound("ann@example.com")

    provider(tmp_path).send_batch([message])

    raw = (tmp_path / "outbox" / ACCOUNT / f"{message.message_key}.eml").read_bytes()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["List-Unsubscribe"] is None
    assert parsed[MESSAGE_KEY_HEADER] == message.message_key


def test_no_partial_files_are_left_behind(tmp_path: Path) -> None:
    provider(tmp_path).send_batch(batch())

    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == []


def test_only_rejections_lands_no_event_file(tmp_path: Path) -> None:
    results = provider(tmp_path).send_batch([outbound("x@reject.mailers.test")])

    assert [r.accepted for r in results] == [False]
    assert landing_files(tmp_path) == []


def test_landed_events_match_planned_events(tmp_path: Path) -> None:
    settings = Settings()
    messages = batch()
    provider(tmp_path).send_batch(messages)

    [landing] = landing_files(tmp_path)
    events = [event for _, event in parsed_events(landing)]

    expected = [
        (m.message_key, m.recipient, CANONICAL[name])
        for m in messages[:-1]
        for name in planned_events(m.message_key, m.recipient, settings)
    ]
    actual = [(e.message_key, e.recipient, (e.event_type, e.bounce_class)) for e in events]
    assert actual == expected


def test_special_domains_produce_their_documented_events(tmp_path: Path) -> None:
    provider(tmp_path).send_batch(batch())
    [landing] = landing_files(tmp_path)

    by_recipient: dict[str, list[tuple[EventType, BounceClass | None]]] = {}
    for _, event in parsed_events(landing):
        assert event.recipient is not None
        by_recipient.setdefault(event.recipient, []).append((event.event_type, event.bounce_class))

    assert by_recipient["hard@bounce.mailers.test"] == [(EventType.BOUNCED, BounceClass.HARD)]
    assert by_recipient["soft@softbounce.mailers.test"] == [
        (EventType.DEFERRED, None),
        (EventType.BOUNCED, BounceClass.SOFT),
    ]
    assert by_recipient["angry@complaint.mailers.test"] == [
        (EventType.DELIVERED, None),
        (EventType.COMPLAINED, None),
    ]
    assert by_recipient["ann@example.com"][0] == (EventType.DELIVERED, None)
    assert "nobody@reject.mailers.test" not in by_recipient


def test_events_carry_message_context_and_raw_payload(tmp_path: Path) -> None:
    messages = {m.message_key: m for m in batch()}
    results = provider(tmp_path).send_batch(list(messages.values()))
    provider_ids = {r.message_key: r.provider_message_id for r in results}
    [landing] = landing_files(tmp_path)

    for line, event in parsed_events(landing):
        assert event.message_key is not None
        message = messages[event.message_key]
        assert event.workspace == "acme"
        assert event.stream == "lifecycle"
        assert event.campaign == "pro_tips"
        assert event.recipient == message.recipient
        assert event.sending_domain == "news.acme.test"
        assert event.provider == "sandbox"
        assert event.provider_account == ACCOUNT
        assert event.provider_message_id == provider_ids[event.message_key]
        assert event.event_id.startswith("sbx-")
        assert event.occurred_at.tzinfo is None
        assert event.raw_payload == line
        assert json.loads(event.raw_payload) == json.loads(line)


def test_bounce_and_complaint_events_carry_a_reason(tmp_path: Path) -> None:
    provider(tmp_path).send_batch(batch())
    [landing] = landing_files(tmp_path)

    reasons = {
        (e.event_type, e.bounce_class): e.reason
        for _, e in parsed_events(landing)
        if e.event_type in {EventType.BOUNCED, EventType.COMPLAINED}
    }

    assert reasons[(EventType.BOUNCED, BounceClass.HARD)].startswith("550")
    assert reasons[(EventType.BOUNCED, BounceClass.SOFT)].startswith("452")
    assert reasons[(EventType.COMPLAINED, None)] is not None


def test_event_ids_are_deterministic_across_resends(tmp_path: Path) -> None:
    sender = provider(tmp_path)
    sender.send_batch(batch())
    first = {e.event_id for _, e in parsed_events(landing_files(tmp_path)[0])}

    sender.send_batch(batch())

    files = landing_files(tmp_path)
    assert len(files) == 2
    second = {e.event_id for _, e in parsed_events(files[0])} | {
        e.event_id for _, e in parsed_events(files[1])
    }
    assert second == first
    assert len(first) == sum(1 for _ in parsed_events(files[0]))


def test_event_ids_differ_between_accounts(tmp_path: Path) -> None:
    message = outbound("ann@example.com")
    a = SandboxProvider(
        "a", Settings(), outbox_dir=tmp_path / "out", landing_dir=tmp_path / "landing"
    )
    b = SandboxProvider(
        "b", Settings(), outbox_dir=tmp_path / "out", landing_dir=tmp_path / "landing"
    )
    a.send_batch([message])
    b.send_batch([message])

    ids = {
        account: {
            e.event_id
            for path in (tmp_path / "landing" / "sandbox" / account).glob("*.jsonl")
            for line in path.read_text().splitlines()
            for e in parse(line.encode(), account)
        }
        for account in ("a", "b")
    }
    assert ids["a"].isdisjoint(ids["b"])


def payload(**fields: object) -> bytes:
    base: dict[str, object] = {
        "id": "sbx-1",
        "event": "delivered",
        "timestamp": "2026-11-23T08:00:01+00:00",
        "message_id": "m1@sandbox.mailers.test",
        "recipient": "ann@example.com",
        "metadata": {"mailers_message_key": "k1"},
    }
    base.update(fields)
    return json.dumps(base).encode()


def test_parse_unknown_event_name_maps_to_unknown() -> None:
    [event] = parse(payload(event="teleported"), ACCOUNT)

    assert event.event_type is EventType.UNKNOWN
    assert event.bounce_class is None
    assert event.event_id == "sbx-1"
    assert json.loads(event.raw_payload)["event"] == "teleported"


def test_parse_converts_timestamps_to_naive_utc() -> None:
    [event] = parse(payload(timestamp="2026-11-23T10:00:01+02:00"), ACCOUNT)

    assert event.occurred_at.isoformat() == "2026-11-23T08:00:01"


def test_parse_tolerates_missing_optional_fields() -> None:
    [event] = parse(b'{"id": "sbx-2", "event": "open", "timestamp": "2026-11-23T08:00:00Z"}', "a")

    assert event.event_type is EventType.OPENED
    assert (event.message_key, event.recipient, event.workspace) == (None, None, None)


@pytest.mark.parametrize("raw", [b"not json", b'{"id": "x", "event": "open"', b""])
def test_parse_invalid_json_raises_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse(raw, ACCOUNT)


def test_planned_event_shares_follow_the_rates() -> None:
    settings = Settings(open_rate=0.4, click_rate=0.1, unsubscribe_rate=0.02)
    keys = [message_key("acme", "c", f"u{i}@example.com", "once") for i in range(20_000)]

    plans = {key: planned_events(key, "someone@example.com", settings) for key in keys}

    counts = Counter(name for plan in plans.values() for name in plan)
    assert counts["delivered"] == len(keys)
    assert counts["open"] / len(keys) == pytest.approx(0.4, abs=0.01)
    assert counts["click"] / len(keys) == pytest.approx(0.1, abs=0.01)
    assert counts["unsubscribe"] / len(keys) == pytest.approx(0.4 * 0.02, abs=0.003)
    openers = {key for key, plan in plans.items() if "open" in plan}
    clickers = {key for key, plan in plans.items() if "click" in plan}
    unsubscribers = {key for key, plan in plans.items() if "unsubscribe" in plan}
    assert clickers <= openers
    assert unsubscribers <= openers


def test_planned_events_depend_on_the_seed() -> None:
    keys = [message_key("acme", "c", f"u{i}@example.com", "once") for i in range(500)]

    def plans(seed: str) -> list[list[str]]:
        settings = Settings(seed=seed)
        return [planned_events(key, "x@example.com", settings) for key in keys]

    assert plans("a") == plans("a")
    assert plans("a") != plans("b")


def test_planned_events_for_special_domains_ignore_case() -> None:
    settings = Settings()

    assert planned_events("k", "X@Bounce.Mailers.Test", settings) == ["bounce"]
    assert planned_events("k", "x@softbounce.mailers.test", settings) == [
        "deferral",
        "soft_bounce",
    ]
    assert planned_events("k", "x@complaint.mailers.test", settings) == ["delivered", "complaint"]
    assert sandbox.is_rejected("X@REJECT.mailers.test")


def test_zero_open_rate_gives_delivery_only() -> None:
    settings = Settings(open_rate=0, click_rate=0, unsubscribe_rate=1)

    assert {tuple(planned_events(f"k{i}", "x@example.com", settings)) for i in range(200)} == {
        ("delivered",)
    }


def test_unavailable_fault_sends_nothing_and_takes_the_account_out(tmp_path: Path) -> None:
    messages = batch()
    results = provider(tmp_path, fault="unavailable").send_batch(messages)

    assert [r.message_key for r in results] == [m.message_key for m in messages]
    assert all(r.outcome == SendOutcome.NOT_SENT and r.account_unavailable for r in results)
    assert all("connection refused" in (r.reason or "") for r in results)
    assert list(tmp_path.iterdir()) == []


def test_timeout_fault_leaves_the_batch_in_doubt(tmp_path: Path) -> None:
    results = provider(tmp_path, fault="timeout").send_batch(batch())

    assert results and all(r.outcome == SendOutcome.UNKNOWN for r in results)
    assert not any(r.accepted or r.account_unavailable for r in results)


def test_click_rate_above_open_rate_is_invalid() -> None:
    with pytest.raises(ValidationError, match="click_rate cannot exceed open_rate"):
        Settings(open_rate=0.1, click_rate=0.2)


@pytest.mark.parametrize(
    "settings",
    [{"open_rate": 1.5}, {"unsubscribe_rate": -0.1}, {"fault": "flaky"}, {"colour": "red"}],
)
def test_invalid_settings_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate(settings)
