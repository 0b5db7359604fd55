"""The SMTP provider against a real aiosmtpd server on 127.0.0.1 (STARTTLS, TLS, AUTH)."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import ValidationError

from adapters.providers import smtp
from adapters.providers.smtp import DEFERRED, MAX_BATCH_SIZE, SMTPProvider
from adapters.providers.smtp import SmtpSettings as Settings
from adapters.providers.smtp import pool as smtp_pool
from adapters.providers.smtp.replies import retry_hint
from adapters.serve.embedded import EmbeddedServer
from adapters.settings import load
from mailers.config import ProviderAccountConfig
from mailers.errors import ConfigError, SecretMissing
from mailers.events import EventType
from mailers.messages import MESSAGE_KEY_HEADER, OutboundMessage, SendOutcome
from mailers.secrets import SecretRef
from tests.adapters.provider_contract import (
    CLIENT_TIMEOUT,
    HELD,
    NoWebhooks,
    ProviderContract,
    RecordingJournal,
    account_left_the_run,
    all_in_doubt,
    make_message,
)
from tests.conftest import write_config

ACCOUNT = "acme_smtp"
USERNAME = "relay-user-7f3a"
PASSWORD = "smtp-pass-9d1c-never-logged"
WRONG_PASSWORD = "smtp-wrong-pass-4b2e"
SERVER_NAME = "smtp.mailers.test"
STALL = HELD
"""Seconds a stalled server holds the answer to the final '.': far past the client's
timeout; stopping the server at the end of the test cancels the stall."""
IDLE_TIMEOUT = 2.0
"""Seconds after which the idle-session tests' server drops an idle session."""

Action = str | float | None
"""A scripted server answer: a reply line, seconds to stall, or None (answer normally)."""


@dataclass
class Received:
    """One message as the server took it."""

    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    content: bytes
    session: int

    @property
    def parsed(self) -> EmailMessage:
        message = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message


@dataclass
class Recorder:
    """aiosmtpd handler: records messages, refuses ``reject.mailers.test`` recipients with
    550, greylists ``greylist.mailers.test`` ones with 450, and plays scripted faults
    (one per transaction reaching that stage, in order)."""

    received: list[Received] = field(default_factory=list)
    faults: dict[str, deque[Action]] = field(
        default_factory=lambda: {"MAIL": deque(), "DATA": deque()}
    )
    sessions: int = 0

    def script(self, stage: str, *actions: Action) -> None:
        self.faults[stage].extend(actions)

    def _next(self, stage: str) -> Action:
        queue = self.faults[stage]
        return queue.popleft() if queue else None

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if not getattr(session, "mailers_id", None):
            self.sessions += 1
            session.mailers_id = self.sessions
        action = self._next("MAIL")
        if isinstance(action, str):
            return action
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        domain = address.rsplit("@", 1)[-1].lower()
        if domain == "reject.mailers.test":
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if domain == "greylist.mailers.test":
            return f"450 4.2.0 <{address}>: Recipient address rejected: Greylisted"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        action = self._next("DATA")
        if isinstance(action, str):
            return action
        if isinstance(action, float):
            await asyncio.sleep(action)
        self.received.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                list(envelope.mail_options),
                envelope.original_content,
                session.mailers_id,
            )
        )
        return f"250 2.0.0 Ok: queued as Q{len(self.received)}"


def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USERNAME.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@dataclass
class Server:
    controller: Controller
    recorder: Recorder
    port: int
    security: str

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "security": self.security,
            "timeout_seconds": CLIENT_TIMEOUT,
            "helo_name": "client.mailers.test",
        }
        values.update(overrides)
        return Settings.model_validate(values)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("smtp-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def start_server(server_tls: ssl.SSLContext) -> Iterator[Callable[..., Server]]:
    """Start aiosmtpd servers: ``security`` none/starttls/tls, optional AUTH."""
    running: list[Controller] = []

    def start(security: str = "none", *, auth: bool = False, **smtp_kwargs: Any) -> Server:
        recorder = Recorder()
        port = free_port()
        kwargs: dict[str, Any] = {"server_hostname": SERVER_NAME, **smtp_kwargs}
        if security == "starttls":
            kwargs.update(tls_context=server_tls, require_starttls=True)
        elif security == "tls":
            kwargs.update(ssl_context=server_tls)
        if auth:
            # Over implicit TLS aiosmtpd cannot tell the session is encrypted
            # (aio-libs/aiosmtpd#281), so AUTH must not require STARTTLS there.
            kwargs.update(
                authenticator=authenticator,
                auth_required=security == "starttls",
                auth_require_tls=security == "starttls",
            )
        controller = Controller(recorder, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        running.append(controller)
        return Server(controller, recorder, port, security)

    yield start
    for controller in running:
        controller.stop()


@pytest.fixture
def providers() -> Iterator[Callable[..., SMTPProvider]]:
    """Build providers that record their sleeps in ``provider.slept``; closed afterwards."""
    made: list[SMTPProvider] = []

    def make(settings: Settings, *, password: str | None = None, **kwargs: Any) -> SMTPProvider:
        slept: list[float] = []
        provider = SMTPProvider(
            ACCOUNT,
            settings,
            username=USERNAME if password else None,
            password=password,
            sleep=slept.append,
            **kwargs,
        )
        provider.slept = slept  # type: ignore[attr-defined]
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


def batch(count: int, prefix: str = "user") -> list[OutboundMessage]:
    return [make_message(f"{prefix}{i}@example.com") for i in range(count)]


class SMTPHarness(NoWebhooks):
    """The contract's harness: a STARTTLS + AUTH submission server with a private CA."""

    rate_limits_lift = True
    parse = staticmethod(smtp.parse)
    spec = smtp.SPEC
    fixtures = None

    def __init__(self, server: Server, ca_file: str) -> None:
        self.server = server
        self.ca_file = ca_file
        self.secrets = [USERNAME, PASSWORD, WRONG_PASSWORD]
        self.fixture_types: dict[str, Any] = {}  # no recorded payloads
        self.slept: list[float] = []
        self.made: list[SMTPProvider] = []

    def provider(self, *, valid_credentials: bool = True) -> SMTPProvider:
        provider = SMTPProvider(
            ACCOUNT,
            self.server.settings(ca_file=self.ca_file),
            username=USERNAME,
            password=PASSWORD if valid_credentials else WRONG_PASSWORD,
            sleep=self.slept.append,
        )
        self.made.append(provider)
        return provider

    def inject_rate_limit(self, retry_after: float) -> None:
        # SMTP has no Retry-After: a throttling reply after DATA (as SES sends) whose text
        # carries the wait, which the adapter honours.
        self.server.recorder.script(
            "DATA",
            "454 4.7.0 Throttling failure: Maximum sending rate exceeded, "
            f"try again in {retry_after} seconds",
        )

    def inject_timeout(self) -> None:
        self.server.recorder.script("DATA", STALL)

    def delivered_keys(self) -> dict[str, str]:
        return {
            str(r.parsed[MESSAGE_KEY_HEADER]): r.rcpt_tos[0] for r in self.server.recorder.received
        }


@pytest.fixture
def harness(start_server: Callable[..., Server], ca_file: str) -> Iterator[SMTPHarness]:
    made = SMTPHarness(start_server("starttls", auth=True), ca_file)
    yield made
    for provider in made.made:
        provider.close()


class TestContract(ProviderContract):
    pass


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"])
def test_clear_text_is_allowed_on_loopback(host: str) -> None:
    assert Settings(host=host, security="none").resolved_port == 25


@pytest.mark.parametrize("host", ["smtp.example.com", "10.0.0.5", "localhost.example.com"])
def test_clear_text_is_refused_off_loopback(host: str) -> None:
    with pytest.raises(ValidationError, match="only allowed for a loopback host"):
        Settings(host=host, security="none")


@pytest.mark.parametrize(
    "settings",
    [
        {"host": "h", "security": "ssl"},
        {"host": "h", "pool_size": 0},
        {"host": "h", "timeout_seconds": 0},
        {"host": "h", "port": 70000},
        {"host": "h", "colour": "red"},
        {"host": "h", "ca_file": "ca.pem", "verify_certificates": False},
        {"host": "127.0.0.1", "security": "none", "ca_file": "ca.pem"},
        {"host": ""},
        {},
    ],
)
def test_invalid_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate(settings)


def test_ports_default_by_security() -> None:
    assert Settings(host="h").resolved_port == 587
    assert Settings(host="h", security="tls").resolved_port == 465
    assert Settings(host="h", port=2525).resolved_port == 2525


def test_build_resolves_credentials_and_batch_size(
    start_server: Callable[..., Server], ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server("starttls", auth=True)
    monkeypatch.setenv("SMTP_TEST_USER", USERNAME)
    monkeypatch.setenv("SMTP_TEST_PASS", PASSWORD)
    config = ProviderAccountConfig(
        kind="smtp",
        credentials={
            "username": SecretRef(env="SMTP_TEST_USER"),
            "password": SecretRef(env="SMTP_TEST_PASS"),
        },
        batch_size=3,
    )
    provider = smtp.build(ACCOUNT, config, server.settings(ca_file=ca_file), None)  # type: ignore[arg-type]
    try:
        assert provider.max_batch_size == 3
        assert provider.kind == "smtp" and provider.account == ACCOUNT
        results = provider.send_batch(batch(4))
    finally:
        provider.close()
    assert all(r.accepted for r in results)
    assert PASSWORD not in repr(provider) and USERNAME not in repr(provider)


def test_build_defaults_to_the_module_batch_size() -> None:
    provider = smtp.build(ACCOUNT, ProviderAccountConfig(kind="smtp"), Settings(host="h"), None)  # type: ignore[arg-type]
    assert provider.max_batch_size == MAX_BATCH_SIZE == 100
    provider.close()
    provider.close()  # safe twice


@pytest.mark.parametrize(
    "credentials", [{"username": "SMTP_TEST_USER"}, {"password": "SMTP_TEST_PASS"}]
)
def test_build_refuses_incomplete_credentials(credentials: dict[str, str]) -> None:
    config = ProviderAccountConfig(
        kind="smtp", credentials={k: SecretRef(env=v) for k, v in credentials.items()}
    )
    with pytest.raises(ConfigError, match="give both 'username' and 'password'"):
        smtp.build(ACCOUNT, config, Settings(host="h"), None)  # type: ignore[arg-type]


def test_the_spec_refuses_unknown_credentials() -> None:
    config = ProviderAccountConfig(
        kind="smtp", credentials={"api_key": SecretRef(env="SMTP_X")}, settings={"host": "h"}
    )
    assert smtp.SPEC.problems(config) == [
        "credentials.api_key: unknown key (provider kind 'smtp' reads password, username)"
    ]


def test_build_names_a_missing_secret_without_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_TEST_USER", USERNAME)
    monkeypatch.delenv("SMTP_TEST_PASS", raising=False)
    config = ProviderAccountConfig(
        kind="smtp",
        credentials={
            "username": SecretRef(env="SMTP_TEST_USER"),
            "password": SecretRef(env="SMTP_TEST_PASS"),
        },
    )
    with pytest.raises(SecretMissing, match="SMTP_TEST_PASS") as info:
        smtp.build(ACCOUNT, config, Settings(host="h"), None)  # type: ignore[arg-type]
    assert USERNAME not in str(info.value)


def test_an_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ca_file"):
        SMTPProvider(ACCOUNT, Settings(host="h", ca_file=str(tmp_path / "missing.pem")))


def test_the_message_carries_our_key_headers_and_message_id(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server()
    message = make_message("ann@example.com")
    [result] = providers(server.settings()).send_batch([message])

    [received] = server.recorder.received
    parsed = received.parsed
    assert result.accepted
    assert received.mail_from == message.from_address
    assert received.rcpt_tos == [message.recipient]
    assert parsed[MESSAGE_KEY_HEADER] == message.message_key
    assert parsed["List-Unsubscribe"] == message.headers["List-Unsubscribe"]
    assert parsed["Message-ID"] == f"<{result.provider_message_id}>"
    assert result.provider_message_id and result.provider_message_id.endswith("@news.acme.test")
    assert parsed["To"] == message.recipient
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().strip() == message.text


def test_lines_starting_with_a_dot_arrive_intact(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server()
    base = make_message("dots@example.com")
    text = "first line\n.\n.hidden\n..two"
    message = OutboundMessage(**{**_fields(base), "text": text})

    [result] = providers(server.settings()).send_batch([message])

    assert result.accepted
    body = server.recorder.received[0].parsed.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().replace("\r\n", "\n").rstrip("\n") == text


def test_message_ids_are_unique_and_stable_per_message(
    providers: Callable[..., SMTPProvider],
) -> None:
    provider = providers(Settings(host="127.0.0.1", security="none"))
    ids = [provider.message_id(m) for m in batch(50)]
    assert len(set(ids)) == 50
    assert ids == [provider.message_id(m) for m in batch(50)]


def test_a_non_ascii_address_uses_smtputf8(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server()
    [result] = providers(server.settings()).send_batch([make_message("jörg@example.com")])
    assert result.accepted
    assert "SMTPUTF8" in server.recorder.received[0].mail_options


def test_a_non_ascii_address_is_rejected_without_smtputf8(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server(enable_SMTPUTF8=False)
    results = providers(server.settings()).send_batch(
        [make_message("jörg@example.com"), make_message("ann@example.com")]
    )
    assert [r.accepted for r in results] == [False, True]
    assert results[0].reason and "SMTPUTF8" in results[0].reason


def test_connections_are_reused_across_batches(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider], ca_file: str
) -> None:
    server = start_server("starttls", auth=True)
    provider = providers(server.settings(ca_file=ca_file, pool_size=2), password=PASSWORD)

    for round_ in range(3):
        results = provider.send_batch(batch(10, prefix=f"r{round_}-"))
        assert all(r.accepted for r in results)

    assert len(server.recorder.received) == 30
    assert 1 <= server.recorder.sessions <= 2


def test_each_message_is_its_own_call_journaled_in_waves_of_the_pool_size(
    start_server: Callable[..., Server],
    providers: Callable[..., SMTPProvider],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = start_server()
    provider = providers(server.settings(pool_size=3))
    calls: list[int] = []
    original = provider._send_request

    def spy(messages: Any) -> Any:
        calls.append(len(messages))
        return original(messages)

    monkeypatch.setattr(provider, "_send_request", spy)
    messages = batch(10)
    journal = RecordingJournal()

    results = provider.send_batch(messages, journal)

    assert calls == [1] * 10
    assert [r.message_key for r in results] == [m.message_key for m in messages]
    assert all(r.accepted for r in results)
    waves = [len(keys) for kind, keys in journal.calls if kind == "handing_over"]
    assert waves == [3, 3, 3, 1]
    assert [kind for kind, _ in journal.calls] == ["handing_over", "answered"] * 4
    assert 1 <= server.recorder.sessions <= 3


def test_sessions_are_used_in_parallel_up_to_the_pool_size(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server()
    messages = batch(24)

    results = providers(server.settings(pool_size=3)).send_batch(messages)

    assert [r.message_key for r in results] == [m.message_key for m in messages]
    assert all(r.accepted for r in results)
    assert 1 <= server.recorder.sessions <= 3
    assert sorted(r.rcpt_tos[0] for r in server.recorder.received) == sorted(
        m.recipient for m in messages
    )


def test_a_session_the_server_closed_is_replaced(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server(timeout=IDLE_TIMEOUT)  # the server drops idle sessions
    provider = providers(server.settings(pool_size=1))
    assert all(r.accepted for r in provider.send_batch(batch(2, "a")))

    time.sleep(IDLE_TIMEOUT + 1)
    results = provider.send_batch(batch(2, "b"))

    assert all(r.accepted for r in results)
    assert server.recorder.sessions == 2
    assert provider.slept == []  # type: ignore[attr-defined]


def test_an_idle_session_is_checked_with_noop(
    start_server: Callable[..., Server],
    providers: Callable[..., SMTPProvider],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(smtp_pool, "NOOP_AFTER_IDLE_SECONDS", 0.05)
    server = start_server(timeout=IDLE_TIMEOUT)
    provider = providers(server.settings(pool_size=1))
    provider.send_batch(batch(1, "a"))
    time.sleep(0.1)  # idle, still open: NOOP passes and the session is reused
    provider.send_batch(batch(1, "b"))
    assert server.recorder.sessions == 1

    time.sleep(IDLE_TIMEOUT + 1)  # closed by the server: NOOP fails, a new one is opened
    assert provider.send_batch(batch(1, "c"))[0].accepted
    assert server.recorder.sessions == 2


def test_a_refused_recipient_keeps_the_servers_code_and_text(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server()
    messages = [make_message("a@example.com"), make_message("x@reject.mailers.test")]

    results = providers(server.settings(pool_size=1)).send_batch(messages)

    assert results[0].accepted
    assert results[1].reason is not None
    assert results[1].reason.startswith("550 5.1.1 <x@reject.mailers.test>")
    assert results[1].reason.endswith("(at RCPT TO)")
    assert results[1].provider_message_id is None


def test_content_refused_after_data_rejects_that_message_only(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server()
    server.recorder.script("DATA", None, "554 5.6.0 Message content rejected")
    provider = providers(server.settings(pool_size=1))

    results = provider.send_batch(batch(3))

    assert [r.accepted for r in results] == [True, False, True]
    assert results[1].reason == "554 5.6.0 Message content rejected (at end of data)"
    assert provider.slept == []  # type: ignore[attr-defined]


def test_a_greylisted_recipient_is_deferred_alone(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server()
    provider = providers(server.settings(pool_size=1))
    messages = [make_message("a@example.com"), make_message("g@greylist.mailers.test")]
    messages.append(make_message("b@example.com"))

    results = provider.send_batch(messages)

    assert [r.accepted for r in results] == [True, False, True]
    # Not sent, but about this recipient only: not failed over, the others went.
    assert (results[1].outcome, results[1].account_unavailable) == (SendOutcome.NOT_SENT, False)
    assert results[1].reason and results[1].reason.startswith(f"{DEFERRED}450 4.2.0")
    assert provider.slept == []  # type: ignore[attr-defined]


def test_a_transient_refusal_then_success_is_retried_with_backoff(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server()
    server.recorder.script("MAIL", "451 4.3.0 Temporary local problem")
    provider = providers(server.settings())

    [result] = provider.send_batch([make_message("a@example.com")])

    assert result.accepted
    assert provider.slept == [0.5]  # type: ignore[attr-defined]


def test_a_service_closing_reply_then_success_is_retried(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server()
    server.recorder.script("MAIL", "421 4.3.2 Service shutting down, try again in 2 seconds")
    provider = providers(server.settings(pool_size=1))

    results = provider.send_batch(batch(2))

    assert all(r.accepted for r in results)
    assert provider.slept == [2.0]  # type: ignore[attr-defined]
    assert server.recorder.sessions == 2  # 421 closes the session


def test_a_refused_connection_takes_the_account_out_after_retries(
    providers: Callable[..., SMTPProvider],
) -> None:
    provider = providers(
        Settings(host="127.0.0.1", port=free_port(), security="none", timeout_seconds=0.5)
    )

    results = provider.send_batch(batch(3))

    reason = account_left_the_run(results)
    assert "could not open a session" in reason
    assert "gave up after 3 attempts" in reason
    assert provider.slept == [0.5, 1.0]  # type: ignore[attr-defined]


def test_throttling_mid_batch_waits_then_sends_the_rest(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server()
    server.recorder.script("MAIL", None, None, "451 4.7.1 Rate limited, retry after 2 seconds")
    provider = providers(server.settings(pool_size=1))
    messages = batch(5)

    results = provider.send_batch(messages)

    assert [r.message_key for r in results] == [m.message_key for m in messages]
    assert all(r.accepted for r in results)
    assert provider.slept == [2.0]  # type: ignore[attr-defined]
    assert len(server.recorder.received) == 5


def test_a_server_gone_mid_batch_keeps_the_accepted_and_fails_over_the_rest(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server()
    server.recorder.script("MAIL", None, *["421 4.3.2 Service shutting down"] * 20)
    provider = providers(server.settings(pool_size=1))
    messages = batch(4)
    journal = RecordingJournal()

    results = provider.send_batch(messages, journal)

    assert results[0].accepted and results[0].outcome == SendOutcome.ANSWERED
    # The rest fails over to another account (account_unavailable); the accepted one is
    # never among them, so nothing goes twice.
    assert "421 4.3.2 Service shutting down" in account_left_the_run(results[1:])
    assert "gave up after 3 attempts" in (results[1].reason or "")
    assert provider.slept == [0.5, 1.0]  # type: ignore[attr-defined]
    assert len(server.recorder.received) == 1
    handed = [key for kind, keys in journal.calls if kind == "handing_over" for key in keys]
    assert handed.count(messages[0].message_key) == 1
    assert handed.count(messages[1].message_key) == 3  # the first try and two retries
    assert messages[2].message_key not in handed and messages[3].message_key not in handed


def test_a_wait_longer_than_the_policy_allows_takes_the_account_out_at_once(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server()
    server.recorder.script("MAIL", None, "451 4.7.1 Slow down, try again in 600 seconds")
    provider = providers(server.settings(pool_size=1))

    results = provider.send_batch(batch(3))

    assert results[0].accepted
    reason = account_left_the_run(results[1:])
    assert "try again in 600 seconds" in reason and "gave up after 1 attempt" in reason
    assert provider.slept == []  # type: ignore[attr-defined]
    assert len(server.recorder.received) == 1


def test_a_message_in_doubt_mid_batch_is_left_out_and_the_rest_goes(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server()
    server.recorder.script("DATA", None, STALL)
    provider = providers(server.settings(pool_size=1))
    messages = batch(3)

    results = provider.send_batch(messages)

    assert [r.message_key for r in results] == [m.message_key for m in messages]
    assert [(r.accepted, r.outcome) for r in results] == [
        (True, SendOutcome.ANSWERED),
        (False, SendOutcome.UNKNOWN),
        (True, SendOutcome.ANSWERED),
    ]
    assert provider.slept == []  # type: ignore[attr-defined]


def test_a_stalled_server_takes_the_account_out_after_the_ambiguous_limit(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server()
    server.recorder.script("DATA", None, STALL, STALL, STALL)
    provider = providers(server.settings(pool_size=1))
    messages = batch(5)
    journal = RecordingJournal()

    results = provider.send_batch(messages, journal)

    assert provider.ambiguous_limit == 3
    assert results[0].accepted
    # Only the three messages written without an answer are in doubt...
    assert all_in_doubt(results[1:4])
    # ...and the one never handed over fails over.
    assert "3 calls in a row got no usable answer" in account_left_the_run(results[4:])
    handed = {key for kind, keys in journal.calls if kind == "handing_over" for key in keys}
    assert messages[4].message_key not in handed
    assert provider.slept == []  # type: ignore[attr-defined]


def test_a_batch_entirely_without_answers_is_all_in_doubt(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server()
    server.recorder.script("DATA", STALL, STALL)
    provider = providers(server.settings(pool_size=2))

    results = provider.send_batch(batch(2))

    assert all_in_doubt(results)
    assert all("RFC 1047" in (r.reason or "") for r in results)
    assert provider.slept == []  # type: ignore[attr-defined]


def test_implicit_tls_with_auth(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider], ca_file: str
) -> None:
    server = start_server("tls", auth=True)
    provider = providers(server.settings(ca_file=ca_file), password=PASSWORD)

    results = provider.send_batch(batch(3))

    assert all(r.accepted for r in results)
    assert len(server.recorder.received) == 3


def test_implicit_tls_with_a_wrong_password_takes_the_account_out(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider], ca_file: str
) -> None:
    server = start_server("tls", auth=True)
    provider = providers(server.settings(ca_file=ca_file), password=WRONG_PASSWORD)

    reason = account_left_the_run(provider.send_batch(batch(1)))

    assert "535" in reason
    assert provider.slept == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_an_untrusted_certificate_takes_the_account_out(
    security: str, start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server(security)
    provider = providers(server.settings())

    assert "not trusted" in account_left_the_run(provider.send_batch(batch(1)))
    assert server.recorder.received == []


def test_verification_can_be_turned_off(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server("starttls")
    results = providers(server.settings(verify_certificates=False)).send_batch(batch(2))
    assert all(r.accepted for r in results)


def test_a_server_without_starttls_takes_the_account_out(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server("none")
    provider = providers(server.settings(security="starttls", verify_certificates=False))

    results = provider.send_batch(batch(1))

    assert "does not offer STARTTLS" in account_left_the_run(results)
    assert server.recorder.received == []


def test_authentication_required_at_mail_takes_the_account_out(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider], ca_file: str
) -> None:
    server = start_server("starttls", auth=True)
    provider = providers(server.settings(ca_file=ca_file))

    results = provider.send_batch(batch(2))

    assert "530" in account_left_the_run(results)
    assert server.recorder.received == []


def test_credentials_never_reach_logs_errors_or_events(
    start_server: Callable[..., Server],
    providers: Callable[..., SMTPProvider],
    ca_file: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = start_server("starttls", auth=True)
    server.recorder.script("DATA", None, STALL)
    good = providers(server.settings(ca_file=ca_file, pool_size=1), password=PASSWORD)
    sent = good.send_batch([*batch(2), make_message("x@reject.mailers.test")])
    refused = providers(server.settings(ca_file=ca_file), password=WRONG_PASSWORD).send_batch(
        batch(1)
    )
    events = smtp.parse(json.dumps({"anything": 1}).encode(), ACCOUNT)

    plain = f"\0{USERNAME}\0{PASSWORD}".encode()
    forbidden = [USERNAME, PASSWORD, WRONG_PASSWORD, base64.b64encode(plain).decode()]
    forbidden += [base64.b64encode(s.encode()).decode() for s in (USERNAME, PASSWORD)]
    texts = [caplog.text, repr(sent), repr(refused), repr(events), repr(good)]
    # Every kind of answer is in there: accepted, in doubt, rejected, account refused.
    assert [r.outcome for r in sent] == [
        SendOutcome.ANSWERED,
        SendOutcome.UNKNOWN,
        SendOutcome.ANSWERED,
    ]
    assert "535" in account_left_the_run(refused)
    assert "opened a session with" in caplog.text  # the logs did capture the run
    for text in texts:
        for secret in forbidden:
            assert secret not in text


def test_a_server_reply_echoing_a_credential_is_masked(
    start_server: Callable[..., Server], providers: Callable[..., SMTPProvider]
) -> None:
    server = start_server()
    server.recorder.script("DATA", f"554 5.7.1 account {USERNAME} is suspended")
    provider = providers(server.settings())
    provider._mask.secrets = [USERNAME, PASSWORD]  # as if logged in (this server takes no AUTH)

    [result] = provider.send_batch(batch(1))

    assert result.reason == "554 5.7.1 account *** is suspended (at end of data)"


def test_parse_keeps_anything_landed_as_unknown() -> None:
    payload = b'{"event": "delivered", "id": 1}\n'

    [event] = smtp.parse(payload, ACCOUNT)
    [again] = smtp.parse(payload, ACCOUNT)

    assert event.event_type is EventType.UNKNOWN
    assert event.raw_payload == payload.decode().rstrip("\n")
    assert event.event_id == again.event_id
    assert event.event_id != smtp.parse(payload, "other_account")[0].event_id
    assert event.occurred_at.tzinfo is None
    assert smtp.parse(b"not json at all", ACCOUNT)[0].event_type is EventType.UNKNOWN
    assert smtp.parse(b"\n", ACCOUNT) == []


def test_the_receiver_answers_404_for_an_smtp_account(tmp_path: Path) -> None:
    def add_smtp_account(config: dict[str, Any]) -> None:
        accounts = config["workspaces"]["acme"]["provider_accounts"]
        accounts[ACCOUNT] = {"kind": "smtp", "settings": {"host": "smtp.example.com"}}

    with EmbeddedServer(load(write_config(tmp_path, add_smtp_account))) as receiver:
        answer = httpx.post(receiver.url_for("acme", ACCOUNT), content=b'{"event": "delivered"}')

    assert (answer.status_code, answer.text) == (404, "provider kind smtp has no webhooks")
    assert (receiver.landed, receiver.rejected) == (0, 0)
    assert smtp.SPEC.verify_webhook is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("451 4.7.1 Rate limited, try again in 30 seconds", 30.0),
        ("421 4.7.0 Try again in 1.5 s", 1.5),
        ("450 retry after 5 secs", 5.0),
        ("454 4.7.0 Throttling failure: Maximum sending rate exceeded", None),
        ("451 try again later", None),
    ],
)
def test_retry_hints_in_reply_text(text: str, seconds: float | None) -> None:
    assert retry_hint(text) == seconds


def _fields(message: OutboundMessage) -> dict[str, Any]:
    return {name: getattr(message, name) for name in OutboundMessage.__dataclass_fields__}
