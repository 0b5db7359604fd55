"""Polling into the landing zone: files land whole, cursors move only after landing."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailers.errors import PollFailed, ProviderUnavailable
from mailers.ingest import landed_files
from mailers.landing import land, read_cursor
from mailers.polling import PollTarget, poll_into_landing


class FakeEventsApi:
    """An events API with three pages; the cursor is the index of the next event."""

    def __init__(self) -> None:
        self.events = [f'{{"id": "e{i}"}}'.encode() for i in range(5)]
        self.seen_cursors: list[str | None] = []

    def fetch(self, cursor: str | None) -> tuple[list[bytes], str | None]:
        self.seen_cursors.append(cursor)
        start = int(cursor or 0)
        page = self.events[start : start + 2]
        return page, str(start + len(page))


def test_polls_resume_from_the_stored_cursor(tmp_path: Path) -> None:
    api = FakeEventsApi()
    target = PollTarget(kind="mailgun", account="mg", fetch=api.fetch)
    counts = [poll_into_landing(tmp_path, target) for _ in range(4)]
    assert counts == [2, 2, 1, 0]
    assert api.seen_cursors == [None, "2", "4", "5"]
    assert read_cursor(tmp_path, "mailgun", "mg") == "5"
    lines = [
        line for landed in landed_files(tmp_path) for line in landed.path.read_bytes().splitlines()
    ]
    assert lines == api.events
    assert all(f.kind == "mailgun" and f.account == "mg" for f in landed_files(tmp_path))


def test_a_failed_landing_keeps_the_old_cursor(tmp_path: Path) -> None:
    target = PollTarget(
        kind="postmark", account="pm", fetch=lambda cursor: ([b'{"a":\n1}'], "next")
    )
    with pytest.raises(ValueError, match="single line"):
        poll_into_landing(tmp_path, target)
    assert read_cursor(tmp_path, "postmark", "pm") is None
    assert list(landed_files(tmp_path)) == []


def test_land_writes_nothing_for_no_payloads_and_hides_partial_files(tmp_path: Path) -> None:
    assert land(tmp_path, "sandbox", "a", []) is None
    path = land(tmp_path, "sandbox", "a", [b'{"x": 1}', b'{"x": 2}\n'])
    assert path is not None and path.read_bytes() == b'{"x": 1}\n{"x": 2}\n'
    assert not any(p.name.endswith(".partial") for p in path.parent.iterdir())


def test_a_fetch_failing_from_a_stored_cursor_names_the_cursor_file(tmp_path: Path) -> None:
    def fetch(cursor: str | None) -> tuple[list[bytes], str | None]:
        if cursor is None:
            return [b'{"id": "e0"}'], "https://api.example.test/v3/events/page-1"
        raise ProviderUnavailable("mg", "events API answered 404: page expired")

    target = PollTarget(kind="mailgun", account="mg", fetch=fetch)
    assert poll_into_landing(tmp_path, target) == 1

    with pytest.raises(PollFailed) as failed:
        poll_into_landing(tmp_path, target)

    cursor_file = tmp_path / "mailgun" / "mg" / ".poll-cursor"
    assert f"from the cursor stored in {cursor_file} failed" in str(failed.value)
    assert "page expired" in str(failed.value)
    assert f"delete {cursor_file}" in str(failed.value)
    assert read_cursor(tmp_path, "mailgun", "mg") == "https://api.example.test/v3/events/page-1"


def test_a_first_poll_failing_without_a_cursor_keeps_its_own_error(tmp_path: Path) -> None:
    def fetch(cursor: str | None) -> tuple[list[bytes], str | None]:
        raise ProviderUnavailable("mg", "connection refused")

    with pytest.raises(ProviderUnavailable, match="connection refused"):
        poll_into_landing(tmp_path, PollTarget(kind="mailgun", account="mg", fetch=fetch))
