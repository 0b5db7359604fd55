"""One-click unsubscribe over HTTP: the service on loopback, links signed as messages carry
them. What lands is asserted from the landing zone, so "nothing changed" is checked, not
assumed; ingestion of landed lines is tests/core/test_unsubscribe_landing.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from adapters.serve.embedded import EmbeddedServer
from mailers import clock
from mailers.unsubscribe import UnsubscribeClaim, sign
from tests.serve.helpers import landed_lines, serve_settings

KEY = "unsub-key"
CLAIM = UnsubscribeClaim("m-1", "acme", "lifecycle")
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
PRIVATE = {
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-robots-tag": "noindex",
}


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    monkeypatch.setenv("UNUSED", KEY)  # serve_settings' unsubscribe.signing_key variable
    settings = serve_settings(tmp_path, monkeypatch)
    with EmbeddedServer(settings) as server:
        yield server.base_url + "/", settings.landing_dir


def _landed(landing: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in landed_lines(landing, "unsubscribe")]


def test_a_get_shows_a_confirm_page_and_changes_nothing(served: tuple[str, Path]) -> None:
    url, landing = served
    page = httpx.get(url, params={"token": sign(CLAIM, KEY)})
    assert page.status_code == 200
    assert "lifecycle" in page.text and 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert {k: page.headers[k] for k in PRIVATE} == PRIVATE
    assert _landed(landing) == []  # scanners fetch every link: a GET never unsubscribes


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_a_one_click_post_lands_one_unsubscribe_for_the_message_and_stream(
    served: tuple[str, Path], encoding: str
) -> None:
    url, landing = served
    token = sign(CLAIM, KEY)
    if encoding == "urlencoded":
        answer = httpx.post(url, params={"token": token}, data=ONE_CLICK)
    else:
        answer = httpx.post(
            url, params={"token": token}, files={"List-Unsubscribe": (None, "One-Click")}
        )
    assert answer.status_code == 200 and "no longer receive lifecycle" in answer.text
    [line] = _landed(landing)
    assert (line["message_key"], line["workspace"], line["stream"]) == ("m-1", "acme", "lifecycle")


def _tampered(token: str) -> str:
    payload, _, signature = token.partition(".")
    return f"{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"


@pytest.mark.parametrize(
    ("make_token", "problem"),
    [
        (lambda: "", "incomplete"),
        (lambda: "not-a-token", "incomplete"),
        (lambda: _tampered(sign(CLAIM, KEY)), "altered"),
        (lambda: sign(CLAIM, "another-key"), "altered"),
        (lambda: sign(CLAIM, KEY, expires_at=clock.now() - timedelta(days=1)), "expired"),
        (lambda: sign(UnsubscribeClaim("m-1", "gone", "lifecycle"), KEY), "unknown workspace"),
    ],
    ids=["missing", "malformed", "tampered", "wrong-key", "expired", "unknown-workspace"],
)
def test_a_bad_token_changes_nothing_and_says_why(
    served: tuple[str, Path], make_token: object, problem: str
) -> None:
    url, landing = served
    token = make_token()  # type: ignore[operator]
    for answer in (
        httpx.get(url, params={"token": token}),
        httpx.post(url, params={"token": token}, data=ONE_CLICK),
    ):
        assert answer.status_code == 400, answer.text
        assert problem in answer.text and "Nothing was changed" in answer.text
        assert {k: answer.headers[k] for k in PRIVATE} == PRIVATE
    assert _landed(landing) == []


def test_a_post_that_is_not_one_click_or_too_large_is_refused(served: tuple[str, Path]) -> None:
    url, landing = served
    token = sign(CLAIM, KEY)
    wrong = httpx.post(url, params={"token": token}, data={"List-Unsubscribe": "Yes"})
    huge = httpx.post(url, params={"token": token}, content=b"x" * (17 * 1024))
    assert wrong.status_code == 400 and "One-Click" in wrong.text
    assert huge.status_code == 413
    assert _landed(landing) == []
