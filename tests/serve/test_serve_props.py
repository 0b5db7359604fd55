"""Property-based tests (hypothesis) of every provider's verifier and parser, and of the app.

For every kind the registry verifies webhooks for:

* the verifier, on arbitrary bodies and headers, raises ``WebhookRejected`` or
  ``WebhookMalformed`` and nothing else; it accepts a validly signed request and refuses
  one whose signed parts were altered;
* the parser (and the one-click unsubscribe kind's), on arbitrary bodies the verifier lets
  through, returns canonical events or raises ``ValueError`` (what ingestion keeps as an
  ``unknown`` event), never another exception;
* the Starlette app, on arbitrary paths, headers, ``Content-Length`` values and bodies,
  never answers 500 and lands a line only for a validly signed request.

Payloads are drawn from each parser's own vocabulary (the string literals of its module)
mixed with arbitrary JSON, so the mapping code is reached, not only its first guard.
"""

from __future__ import annotations

import ast
import asyncio
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from adapters.providers.registry import provider_spec
from adapters.serve.app import create_app, open_lander
from mailers import unsubscribe_landing
from mailers.config import Settings
from mailers.errors import WebhookMalformed, WebhookRejected
from mailers.events import CanonicalEvent
from mailers.webhooks import SeenTokens, WebhookRequest
from tests.serve.accounts import (
    ACCOUNT_OF,
    SIGNED_HEADERS,
    SIGNERS,
    UNSUBSCRIBE_PATH,
    WEBHOOK_KINDS,
    all_kinds_settings,
    landed_line_count,
    sns_message,
)

PROPS = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
REPO = Path(__file__).resolve().parents[2]


@cache
def vocabulary(module: Path) -> list[str]:
    """The short string literals of a module: the keys and values its mapping looks for."""
    tree = ast.parse(module.read_text())
    found = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if 0 < len(node.value) <= 40 and "\n" not in node.value
    }
    return sorted(found)


def _words(kind: str) -> st.SearchStrategy[str]:
    if kind == unsubscribe_landing.UNSUBSCRIBE_KIND:
        module = REPO / "mailers" / "unsubscribe_landing.py"
    else:
        module = REPO / "adapters" / "providers" / kind / "events.py"
    return st.sampled_from(vocabulary(module))


_TIMES = st.sampled_from(
    ["2026-01-05T10:00:00Z", "2026-01-05T10:00:00+01:00", "2026-01-05T10:00:00", "1767607200"]
)


def json_values(kind: str) -> st.SearchStrategy[Any]:
    """Arbitrary JSON biased towards ``kind``'s parser's own keys and values."""
    words = _words(kind)
    leaves = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=12)
        | words
        | _TIMES
    )
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(words | st.text(max_size=6), inner, max_size=5)
        ),
        max_leaves=10,
    )


def json_objects(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(_words(kind) | st.text(max_size=6), json_values(kind), max_size=8)


@cache
def fixtures(kind: str) -> list[Any]:
    """The recorded payloads of ``kind`` (tests/fixtures): SES's ``Message`` decoded,
    Mailgun's ``event-data``, each of SendGrid's events."""
    found = []
    for path in sorted((REPO / "tests" / "fixtures" / kind).glob("*.json")):
        data = json.loads(path.read_text())
        if kind == "ses" and isinstance(data.get("Message"), str):
            data = json.loads(data["Message"])
        if kind == "mailgun":
            data = data.get("event-data", data)
        found += data if kind == "sendgrid" else [data]  # SendGrid posts arrays of events
    return found


def _paths_in(tree: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [at]
    items = (
        tree.items()
        if isinstance(tree, dict)
        else enumerate(tree)
        if isinstance(tree, list)
        else ()
    )
    for key, child in items:
        paths += _paths_in(child, (*at, key))
    return paths


@st.composite
def mutated_fixtures(draw: st.DrawFn, kind: str) -> Any:
    """A recorded payload of ``kind`` with a few values replaced by arbitrary JSON or removed."""
    tree = json.loads(json.dumps(draw(st.sampled_from(fixtures(kind)))))
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(_paths_in(tree)))
        if not path:
            continue
        parent = tree
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values(kind))
    return tree


def verified_bodies(kind: str, *, signed: bool = True) -> st.SearchStrategy[bytes]:
    """Bodies of the shape ``kind``'s verifier accepts, with arbitrary content (SNS
    messages signed, unless ``signed`` is false)."""
    if kind == "ses":
        message = st.one_of(
            mutated_fixtures(kind).map(json.dumps),
            json_objects(kind).map(json.dumps),
            json_values(kind).map(json.dumps),
            st.text(),
        )
        forged = {} if signed else {"Signature": "AAAA"}
        return message.map(lambda text: json.dumps(sns_message(text) | forged).encode())
    if kind == "mailgun":
        return (mutated_fixtures(kind) | json_objects(kind)).map(
            lambda event: json.dumps(
                {
                    "signature": {"timestamp": "1", "token": "t", "signature": "s"},
                    "event-data": event,
                }
            ).encode()
        )
    if kind == "sendgrid":
        elements = mutated_fixtures(kind) | json_objects(kind)
        return st.one_of(json_values(kind), st.lists(elements, max_size=4)).map(
            lambda data: json.dumps(data).encode()
        )
    return (mutated_fixtures(kind) | json_objects(kind)).map(lambda data: json.dumps(data).encode())


def as_landed(body: bytes) -> bytes:
    """The line the service lands for a verified body (compact JSON)."""
    return json.dumps(json.loads(body), separators=(",", ":")).encode()


_HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


def _account(settings_: Settings, kind: str) -> Any:
    return settings_.config.workspaces["acme"].provider_accounts[ACCOUNT_OF[kind]]


def arbitrary_headers(kind: str) -> st.SearchStrategy[dict[str, str]]:
    names = st.sampled_from([*SIGNED_HEADERS[kind], "Content-Type", "X-Other"])
    return st.dictionaries(names, _HEADER_TEXT, max_size=4)


@pytest.mark.parametrize("kind", WEBHOOK_KINDS)
def test_a_verifier_refuses_arbitrary_requests_with_its_own_errors_only(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = _account(all_kinds_settings(tmp_path, monkeypatch), kind)
    verify = provider_spec(kind).verify_webhook
    assert verify is not None

    @PROPS
    @given(
        body=st.binary(max_size=200)
        | verified_bodies(kind, signed=False)
        | st.text().map(str.encode),
        headers=arbitrary_headers(kind),
    )
    def check(body: bytes, headers: dict[str, str]) -> None:
        with pytest.raises((WebhookRejected, WebhookMalformed)):
            verify(WebhookRequest(body=body, headers=headers), account, SeenTokens())

    check()


def _tampered(kind: str, request: WebhookRequest, data: st.DataObject) -> WebhookRequest:
    """``request`` with one signed part changed."""
    headers = dict(request.headers)
    if kind == "mailgun":  # the signature is in the body; event-data is not signed
        body = json.loads(request.body)
        field = data.draw(st.sampled_from(["timestamp", "token", "signature"]))
        new = data.draw(st.text(min_size=1, max_size=60))
        assume(new != body["signature"][field])
        body["signature"][field] = new
        return WebhookRequest(body=json.dumps(body).encode(), headers=headers)
    if kind == "ses":
        message = json.loads(request.body)
        field = data.draw(st.sampled_from(["Message", "MessageId", "Timestamp", "Signature"]))
        new = data.draw(st.text(max_size=60))
        assume(new != message[field])
        message[field] = new
        return WebhookRequest(body=json.dumps(message).encode(), headers=headers)
    if kind in ("resend", "sendgrid") and data.draw(st.booleans()):
        at = data.draw(st.integers(0, len(request.body) - 1))
        flip = data.draw(st.integers(1, 255))
        body = bytearray(request.body)
        body[at] ^= flip
        return WebhookRequest(body=bytes(body), headers=headers)
    name = data.draw(st.sampled_from(SIGNED_HEADERS[kind]))
    new = data.draw(_HEADER_TEXT | st.none())
    original = request.header(name) or ""
    if new is None:
        headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
    else:
        assume(new.strip() != original.strip())
        headers = {k: v for k, v in headers.items() if k.lower() != name.lower()} | {name: new}
    return WebhookRequest(body=request.body, headers=headers)


@pytest.mark.parametrize("kind", WEBHOOK_KINDS)
def test_a_verifier_accepts_signed_requests_and_refuses_altered_ones(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = _account(all_kinds_settings(tmp_path, monkeypatch), kind)
    verify = provider_spec(kind).verify_webhook
    assert verify is not None

    @PROPS
    @given(event=json_objects(kind), data=st.data())
    def check(event: dict[str, Any], data: st.DataObject) -> None:
        signed = SIGNERS[kind](json.dumps(event).encode())
        verify(signed, account, SeenTokens())
        with pytest.raises((WebhookRejected, WebhookMalformed)):
            verify(_tampered(kind, signed, data), account, SeenTokens())

    check()


def _check_events(events: object, kind: str, account: str) -> None:
    assert isinstance(events, list)
    for event in events:
        assert isinstance(event, CanonicalEvent)
        assert event.event_id and isinstance(event.event_id, str)
        assert (event.provider, event.provider_account) == (kind, account)
        assert event.occurred_at.tzinfo is None, "canonical times are naive UTC"


@pytest.mark.parametrize("kind", WEBHOOK_KINDS)
def test_a_parser_returns_events_or_raises_value_error_on_any_verified_body(kind: str) -> None:
    parse = provider_spec(kind).parse

    @PROPS
    @given(body=verified_bodies(kind))
    def check(body: bytes) -> None:
        try:
            events = parse(as_landed(body), ACCOUNT_OF[kind])
        except ValueError:
            return
        _check_events(events, kind, ACCOUNT_OF[kind])

    check()


def _unsubscribe_records() -> st.SearchStrategy[dict[str, Any]]:
    text = st.text(max_size=8) | st.sampled_from(["acme", "lifecycle", "k1"])
    return st.fixed_dictionaries(
        {
            "type": st.sampled_from(["unsubscribed", "delivered"]) | json_values("unsubscribe"),
            "message_key": text | json_values("unsubscribe"),
            "workspace": st.sampled_from(["acme", "other"]) | json_values("unsubscribe"),
            "stream": text | st.none(),
            "at": _TIMES | st.text(max_size=12) | st.integers(),
        },
        optional={
            "recipient": st.emails() | json_values("unsubscribe"),
            "via": st.sampled_from(["one-click", "page"]) | json_values("unsubscribe"),
            "token_expires_at": _TIMES | st.none(),
        },
    )


def test_the_unsubscribe_parser_returns_events_or_raises_value_error() -> None:
    kind = unsubscribe_landing.UNSUBSCRIBE_KIND

    @PROPS
    @given(
        line=st.one_of(
            _unsubscribe_records().map(json.dumps),
            json_values(kind).map(json.dumps),
        ).map(str.encode)
        | st.binary(max_size=100)
    )
    def check(line: bytes) -> None:
        try:
            events = unsubscribe_landing.parse(line, "acme")
        except ValueError:
            return
        _check_events(events, kind, "acme")
        assert [e.workspace for e in events] == ["acme"]

    check()


_CONTENT_LENGTHS = st.one_of(
    st.none(),
    st.integers(0, 1 << 40).map(str),
    st.sampled_from(["-1", "", " 12", "1e3", "0x10", "12a", "99999999999999999999"]),
    _HEADER_TEXT,
)


def _paths() -> st.SearchStrategy[str]:
    segment = st.text(max_size=12).map(lambda s: quote(s, safe=""))
    webhook = st.tuples(
        st.sampled_from(["acme"]) | segment, st.sampled_from(list(ACCOUNT_OF.values())) | segment
    ).map(lambda wa: f"/webhooks/{wa[0]}/{wa[1]}")
    return webhook | segment.map(lambda s: f"/{s}") | st.just(UNSUBSCRIBE_PATH)


class InProcess:
    """Requests to an ASGI app in this process (httpx's ``ASGITransport``), one event loop."""

    def __init__(self, app: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.http.request(method, path, **kwargs))

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[InProcess, Path]]:
    settings_ = all_kinds_settings(tmp_path, monkeypatch, max_body_bytes=64 << 10)
    lander = open_lander(settings_)
    http = InProcess(create_app(settings_, lander=lander))
    try:
        yield http, settings_.landing_dir
    finally:
        http.close()
        lander.close()


def test_the_app_never_answers_500_and_lands_nothing_unsigned(
    client: tuple[InProcess, Path],
) -> None:
    http, landing = client
    names = [*sorted({n for names in SIGNED_HEADERS.values() for n in names}), "Content-Type"]

    @PROPS
    @given(
        method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
        path=_paths(),
        headers=st.dictionaries(st.sampled_from(names), _HEADER_TEXT, max_size=4),
        length=_CONTENT_LENGTHS,
        body=st.binary(max_size=3000) | verified_bodies("postmark"),
    )
    def check(
        method: str, path: str, headers: dict[str, str], length: str | None, body: bytes
    ) -> None:
        if length is not None:
            headers = {**headers, "Content-Length": length}
        before = landed_line_count(landing)
        answer = http.request(method, path, content=body, headers=headers)
        assert answer.status_code != 500
        assert answer.status_code < 500 or answer.status_code == 503
        if path.startswith("/webhooks/"):
            assert answer.status_code in (400, 401, 404, 405, 408, 413), answer.text
        assert landed_line_count(landing) == before

    check()


def test_the_app_lands_exactly_the_validly_signed_requests(client: tuple[InProcess, Path]) -> None:
    http, landing = client

    @PROPS
    @given(kind=st.sampled_from(WEBHOOK_KINDS), data=st.data(), tamper=st.booleans())
    def check(kind: str, data: st.DataObject, tamper: bool) -> None:
        event = data.draw(json_objects(kind))
        event["_nonce"] = data.draw(st.uuids()).hex  # Postmark's replay token is the body
        request = SIGNERS[kind](json.dumps(event).encode())
        if tamper:
            request = _tampered(kind, request, data)
        before = landed_line_count(landing)
        answer = http.post(
            f"/webhooks/acme/{ACCOUNT_OF[kind]}", content=request.body, headers=request.headers
        )
        if tamper:
            assert answer.status_code in (400, 401), answer.text
            assert landed_line_count(landing) == before
        else:
            assert answer.status_code == 200, answer.text
            assert landed_line_count(landing) == before + 1

    check()
