"""Loading landed webhook events: events/s, peak memory, and per-file cost as history grows.

    .venv/bin/python benchmarks/bench_ingest.py --files 1000 --per-file 1000 --history 10000000

Lands ``--files`` files of ``--per-file`` events (Postmark deliveries and bounces, Resend
deliveries, a few percent duplicated across files as provider retries are) and loads them
all with :func:`mailers.ingest.ingest` into a fresh DuckDB file, parsed by the providers'
SQL mappings (``--python``: by their Python parsers only): events/s and peak RSS.
Then, for the per-file cost against history, it appends ``--history`` synthetic events
to ``mailers.events`` (by SQL, spread over a year) and times loading a fixed probe batch
of files into the empty warehouse and into the grown one. The issue's goals: at least
200,000 events/s on two cores, per-file cost flat from empty to 10M events.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from adapters.providers.registry import bulk_event_parser, event_parser
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.ingest import ingest
from mailers.landing import land
from mailers.tables import ensure_tables

START = datetime(2026, 1, 5, 10, 0, 0)


def _line(n: int, rng: random.Random) -> tuple[str, bytes]:
    at = (START + timedelta(seconds=n // 50)).strftime("%Y-%m-%dT%H:%M:%SZ")
    roll = rng.random()
    if roll < 0.45:
        body: dict[str, object] = {
            "RecordType": "Delivery",
            "MessageID": f"pm-{n}",
            "Recipient": f"r{n}@example.com",
            "DeliveredAt": at,
            "Tag": "lifecycle",
            "Metadata": {"message_key": f"k-{n}"},
        }
        return "postmark", json.dumps(body).encode()
    if roll < 0.5:
        body = {
            "RecordType": "Bounce",
            "ID": n,
            "Type": "HardBounce",
            "MessageID": f"pm-{n}",
            "Email": f"r{n}@example.com",
            "BouncedAt": at,
            "Description": "The server was unable to deliver your message",
        }
        return "postmark", json.dumps(body).encode()
    body = {
        "type": "email.delivered",
        "created_at": at,
        "data": {"email_id": f"rs-{n}", "to": [f"r{n}@example.com"], "created_at": at},
    }
    return "resend", json.dumps(body).encode()


def land_files(landing: Path, files: int, per_file: int, first: int, seed: int) -> int:
    """Land the files; every 50th event repeats the one before it (a provider retry)."""
    rng = random.Random(seed)
    n = first
    for _ in range(files):
        by_kind: dict[str, list[bytes]] = {"postmark": [], "resend": []}
        for i in range(per_file):
            kind, line = _line(n - 1 if i and i % 50 == 0 else n, rng)
            by_kind[kind].append(line)
            n += 1
        for kind, lines in by_kind.items():
            land(landing, kind, kind[:2], lines)
    return n


def grow_history(warehouse: DuckDBWarehouse, rows: int) -> None:
    """``rows`` events already loaded, spread over the year before the probe's events."""
    warehouse.execute(
        f"""
        insert into mailers.events (event_id, event_type, occurred_at, provider,
            provider_account, provider_message_id, recipient, raw_payload, ingested_at)
        select 'hist-' || i, 'delivered',
            timestamp '2025-01-05 10:00:00' + to_seconds(i * 31536000 // {rows}),
            'postmark', 'po', 'hist-' || i, 'h' || i || '@example.com', '{{}}', now()
        from range({rows}) t(i)
        """
    )


def _load(path: Path, landing: Path, python_only: bool) -> tuple[float, float, int, int]:
    """Load ``landing`` into a warehouse at ``path``: wall and CPU seconds, files, events."""
    with DuckDBWarehouse(path) as warehouse, bulk_event_parser() as bulk:
        ensure_tables(warehouse)
        started, cpu_started = time.perf_counter(), time.process_time()
        report = ingest(warehouse, landing, event_parser, bulk=None if python_only else bulk)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        events = int(warehouse.query("select count(*) from mailers.events").column(0)[0].as_py())
    return elapsed, cpu, report.counts["files"], events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--per-file", type=int, default=1000)
    parser.add_argument("--history", type=int, default=10_000_000)
    parser.add_argument("--probe-files", type=int, default=50)
    parser.add_argument(
        "--python", action="store_true", help="parse every line in Python (no SQL mappings)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        landing = root / "landing"
        land_files(landing, args.files, args.per_file, 0, seed=1)
        elapsed, cpu, files, events = _load(root / "bulk.duckdb", landing, args.python)
        total = args.files * args.per_file
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{total:,} landed events in {files} files: {elapsed:.1f} s")
        print(f"  {total / elapsed:,.0f} events/s, {events:,} events loaded, peak RSS {rss:.0f} MB")
        # CPU of all threads per event: less swayed than wall time by other load
        print(f"  {cpu / total * 1e6:.1f} µs CPU per event ({cpu / elapsed:.2f} cores busy)")

        probe = root / "probe"
        land_files(probe, args.probe_files, args.per_file, 10**9, seed=2)
        empty_elapsed, _, probe_files, _ = _load(root / "empty.duckdb", probe, args.python)
        grown = root / "grown.duckdb"
        with DuckDBWarehouse(grown) as warehouse:
            ensure_tables(warehouse)
            grow_history(warehouse, args.history)
        grown_elapsed, _, _, _ = _load(grown, probe, args.python)
        print(f"per-file cost over {probe_files} probe files:")
        print(f"  empty table:          {empty_elapsed / probe_files * 1000:.1f} ms/file")
        print(f"  after {args.history:,} events: {grown_elapsed / probe_files * 1000:.1f} ms/file")


if __name__ == "__main__":
    main()
