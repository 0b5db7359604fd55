"""Mailers' clock: the system's, one shifted by ``MAILERS_CLOCK`` for a process tree, or fixed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from mailers import clock
from mailers.webhooks import SeenTokens, WebhookRequest

START = datetime(2027, 3, 28, 0, 59, 30, tzinfo=UTC)


@pytest.fixture
def environment_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """``MAILERS_CLOCK`` and its anchor under the test's control; the suite's clock after."""
    monkeypatch.setenv(clock.CLOCK_ENV, "2027-03-28T00:59:30Z")
    monkeypatch.delenv(clock.ANCHOR_ENV, raising=False)
    previous = clock.set_clock(None)
    yield monkeypatch
    clock.set_clock(previous)


def test_mailers_clock_starts_a_running_clock_at_that_instant(
    environment_clock: pytest.MonkeyPatch,
) -> None:
    before = time.time()
    first = clock.now()
    after = time.time()

    assert START <= first <= START + timedelta(seconds=after - before + 1)
    assert isinstance(clock.current(), clock.ShiftedClock)
    assert clock.now() >= first
    assert os.environ[clock.ANCHOR_ENV].startswith("2027-03-28T00:59:30Z@")


def test_returning_to_the_environment_clock_continues_its_timeline(
    environment_clock: pytest.MonkeyPatch,
) -> None:
    environment_clock.setenv(clock.ANCHOR_ENV, f"2027-03-28T00:59:30Z@{time.time() - 600!r}")
    clock.set_clock(None)
    first = clock.now()

    with clock.use_clock(clock.FixedClock(datetime(2030, 1, 1, tzinfo=UTC))):
        assert clock.now().year == 2030
    clock.set_clock(None)

    assert START + timedelta(seconds=600) <= first <= clock.now()
    assert clock.now() < START + timedelta(seconds=700)


def test_an_anchor_for_another_instant_is_ignored(environment_clock: pytest.MonkeyPatch) -> None:
    environment_clock.setenv(clock.ANCHOR_ENV, f"2030-01-01T00:00:00Z@{time.time() - 600!r}")
    clock.set_clock(None)

    assert START <= clock.now() < START + timedelta(seconds=60)


def test_a_child_process_lives_on_the_same_shifted_timeline(
    environment_clock: pytest.MonkeyPatch,
) -> None:
    environment_clock.setenv(clock.ANCHOR_ENV, f"2027-03-28T00:59:30Z@{time.time() - 3600!r}")
    clock.set_clock(None)
    before = clock.epoch()
    child = subprocess.run(
        [sys.executable, "-c", "from mailers import clock; print(repr(clock.epoch()))"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    after = clock.epoch()

    assert before <= float(child.stdout) <= after
    assert before >= START.timestamp() + 3600


def test_a_malformed_mailers_clock_names_the_variable(
    environment_clock: pytest.MonkeyPatch,
) -> None:
    environment_clock.setenv(clock.CLOCK_ENV, "next tuesday")
    clock.set_clock(None)

    with pytest.raises(ValueError, match=r"MAILERS_CLOCK='next tuesday' is not an ISO-8601"):
        clock.now()


def test_without_mailers_clock_the_system_clock_is_used(
    environment_clock: pytest.MonkeyPatch,
) -> None:
    environment_clock.delenv(clock.CLOCK_ENV)
    clock.set_clock(None)

    assert isinstance(clock.current(), clock.SystemClock)
    assert abs(clock.epoch() - time.time()) < 5


def test_a_fixed_clock_moves_only_when_told() -> None:
    fixed = clock.FixedClock(datetime(2027, 12, 31, 23, 59, 30))  # naive means UTC

    with clock.use_clock(fixed):
        assert clock.now() == datetime(2027, 12, 31, 23, 59, 30, tzinfo=UTC)
        assert clock.utcnow() == datetime(2027, 12, 31, 23, 59, 30)
        fixed.advance(45)
        assert clock.now() == datetime(2028, 1, 1, 0, 0, 15, tzinfo=UTC)
        assert clock.epoch() == datetime(2028, 1, 1, 0, 0, 15, tzinfo=UTC).timestamp()


def test_system_moments_map_onto_each_clock() -> None:
    recorded = datetime.fromtimestamp(1_000_060, UTC)  # e.g. a Dagster run's creation

    assert clock.SystemClock().from_system(recorded) == recorded
    shifted = clock.ShiftedClock(START, anchor=1_000_000)
    assert shifted.from_system(recorded) == START + timedelta(seconds=60)
    with clock.use_clock(shifted):
        assert clock.from_system(recorded) == START + timedelta(seconds=60)
    with clock.use_clock(clock.FixedClock(START)):
        assert clock.from_system(recorded) == START


def test_a_clock_without_from_system_gets_now_minus_the_elapsed_time() -> None:
    class Bare:
        def now(self) -> datetime:
            return START

    with clock.use_clock(Bare()):
        mapped = clock.from_system(datetime.now(UTC) - timedelta(minutes=5))

    assert START - timedelta(minutes=5, seconds=30) < mapped <= START - timedelta(minutes=5)


def test_webhook_requests_and_the_replay_guard_run_on_mailers_clock(
    fixed_clock: clock.FixedClock,
) -> None:
    fixed_clock.set(START)
    guard = SeenTokens()

    assert WebhookRequest(body=b"{}").received_at == START.timestamp()
    assert guard.first_use("token", ttl_seconds=60)
    assert not guard.first_use("token", ttl_seconds=60)
    fixed_clock.advance(61)
    assert guard.first_use("token", ttl_seconds=60)
