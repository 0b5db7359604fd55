"""When a committed line becomes visible to ingestion: segments on a fixed clock, no server.

Ingestion reads only closed segments, so "closed when the commit returns" is what lets
the embedded server (and every test through it) acknowledge and find the line at once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from adapters.serve.segments import LocalSegments
from mailers.clock import FixedClock, use_clock
from tests.serve.helpers import landed_lines

KEY = ("postmark", "pm")


def test_age_zero_closes_the_segment_before_the_commit_returns(tmp_path: Path) -> None:
    with use_clock(FixedClock(datetime(2026, 3, 1, tzinfo=UTC))):
        store = LocalSegments(tmp_path, max_age_seconds=0)
        for n in range(3):
            assert store.commit({KEY: [b'{"n": %d}\n' % n]}) == {}
            assert len(landed_lines(tmp_path)) == n + 1  # no tick, no rotate_due: closed
        assert not list(tmp_path.glob("*/*/.*.partial"))


def test_a_segment_with_an_age_stays_open_until_it_is_due(tmp_path: Path) -> None:
    with use_clock(FixedClock(datetime(2026, 3, 1, tzinfo=UTC))) as clock:
        store = LocalSegments(tmp_path, max_age_seconds=5)
        assert store.commit({KEY: [b'{"n": 1}\n', b'{"n": 2}\n']}) == {}
        assert landed_lines(tmp_path) == [] and store.rotate_due() == 0
        clock.advance(5)
        assert store.rotate_due() == 1
        assert landed_lines(tmp_path) == [b'{"n": 1}', b'{"n": 2}']
