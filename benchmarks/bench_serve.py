"""Load on ``mailers serve`` over loopback: requests/s and latency with durable answers.

    .venv/bin/python benchmarks/bench_serve.py --requests 30000 --connections 16

Starts the real service (``mailers serve``, uvicorn, production serve settings: every 200
waits for its group commit's fsync) on a temp landing zone, sends pre-signed Postmark and
Resend delivery webhooks over keep-alive connections from this process, then stops the
service and checks that every acknowledged webhook landed exactly once. The goal (issue 10):
at least 2,000 requests/s and p99 under 50 ms on two cores.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.serve.live import (
    Service,
    drive,
    free_port,
    landed_ids,
    percentile,
    prepared,
    write_config,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=120.0, help="stop sending after this")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        service = Service(write_config(root), port).start()
        try:
            drive(port, list(prepared(port, 500, prefix="warm")), args.connections, 30)
            requests = list(prepared(port, args.requests))
            outcome = drive(port, requests, args.connections, args.seconds)
        finally:
            service.stop()
        statuses = collections.Counter(outcome.statuses.values())
        landed = collections.Counter(landed_ids(root / ".mailers" / "landing"))
        sent = len(outcome.latencies)
        print(f"requests {sent} over {args.connections} connections in {outcome.elapsed:.2f} s")
        print(f"  {sent / outcome.elapsed:,.0f} requests/s (durable 200s)")
        for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0)):
            print(f"  {name} {percentile(outcome.latencies, q) * 1000:.1f} ms")
        print(f"  statuses {dict(statuses)}")
        acknowledged = outcome.acknowledged
        lost = [i for i in acknowledged if landed[i] == 0]
        twice = [i for i, n in landed.items() if n > 1]
        print(f"  acknowledged {len(acknowledged)}, lost {len(lost)}, landed twice {len(twice)}")
        return 1 if lost or twice or statuses.get(200, 0) != sent else 0


if __name__ == "__main__":
    raise SystemExit(main())
