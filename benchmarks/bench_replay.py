"""Replaying stored events: events/s scanned, and what a mapping fix appends.

    .venv/bin/python benchmarks/bench_replay.py --events 100000

Lands ``--events`` sandbox events (deliveries, opens and, a quarter, hard bounces) and ingests them
with a mapping that reads hard bounces as deferrals, then replays the whole window twice
with the shipped mapping: the first replay appends the fixed bounces (and their
suppressions), the second appends nothing. Prints each replay's events/s and counts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from scratch import duckdb_file

from adapters.providers.registry import event_parser
from mailers.events import BounceClass, CanonicalEvent, EventType
from mailers.events_replay import ReplayWindow, replay_events
from mailers.ingest import ingest
from mailers.providers import EventParser
from mailers.tables import ensure_tables

START = datetime(2026, 1, 5, 10, 0, 0)
PER_FILE = 1_000


class HardBouncesAsDeferrals:
    """The mapping before the fix."""

    def __init__(self, parser: EventParser) -> None:
        self.parser = parser

    def parse(self, payload: bytes, account: str) -> list[CanonicalEvent]:
        return [
            dataclasses.replace(e, event_type=EventType.DEFERRED, bounce_class=None)
            if e.bounce_class is BounceClass.HARD
            else e
            for e in self.parser.parse(payload, account)
        ]


def _land(landing: Path, events: int) -> None:
    directory = landing / "sandbox" / "acme_sandbox_a"
    directory.mkdir(parents=True)
    names = ("delivered", "open", "delivered", "open", "bounce") * 4
    for start in range(0, events, PER_FILE):
        lines = []
        for n in range(start, min(events, start + PER_FILE)):
            name = names[n % len(names)] if n % 20 else "bounce"
            lines.append(
                json.dumps(
                    {
                        "id": f"sbx-{n}",
                        "event": name,
                        "timestamp": (START + timedelta(seconds=n)).isoformat() + "+00:00",
                        "message_id": f"m-{n}@sandbox.mailers.test",
                        "recipient": f"r{n}@example.com",
                        "sending_domain": "news.acme.test",
                        "metadata": {"mailers_workspace": "acme", "mailers_stream": "lifecycle"},
                    }
                )
            )
        (directory / f"{start:09d}.jsonl").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _land(root / "landing", args.events)
        with duckdb_file(root / "warehouse.duckdb") as warehouse:
            ensure_tables(warehouse)
            ingest(warehouse, root / "landing", lambda k: HardBouncesAsDeferrals(event_parser(k)))
            for label in ("first replay (mapping fixed)", "second replay"):
                started = time.perf_counter()
                report = replay_events(
                    warehouse,
                    event_parser,
                    ReplayWindow(since=START),
                    actor="bench",
                    config_hash="bench",
                    chunk_rows=args.chunk_rows,
                )
                seconds = time.perf_counter() - started
                rate = report.counts["scanned"] / seconds
                print(f"{label}: {seconds:.2f} s, {rate:,.0f} events/s, {report.counts}")


if __name__ == "__main__":
    main()
