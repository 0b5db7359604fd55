"""What delivering canonical events to a webhook subscriber costs.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_webhooks_out.py --events 20000

Puts ``--events`` events in a fresh DuckDB warehouse and delivers them to a loopback
subscriber (each request's signature checked with ``standardwebhooks``, answered 200) at
``batch_size`` 1 and 100, printing events/s and requests/s of the whole run (reading,
recording, signing, sending, recording attempts). Then, with that history stored, the time
of one run with nothing to do (the mark, due and failure-streak queries), which stays flat
as the history grows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from adapters.warehouses import open_warehouse
from adapters.webhooks_out import HttpxTransport
from mailers.webhooks_out.delivery import deliver
from tests.webhook_receiver import (
    ENVIRON,
    add_events,
    always,
    event_rows,
    receiving,
    settings_with,
    subscriber,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    for batch_size in (1, 100):
        with tempfile.TemporaryDirectory() as tmp, receiving(always(200)) as receiver:
            config = subscriber(receiver.url, batch_size=batch_size, timeout_seconds=10)
            config["max_events_per_run"] = args.events
            settings = settings_with(Path(tmp), {"crm": config})
            transport = HttpxTransport()
            with open_warehouse(settings) as warehouse:
                add_events(warehouse, event_rows(args.events))
                started = time.perf_counter()
                report = deliver(warehouse, settings, transport, "bench", environ=ENVIRON)
                took = time.perf_counter() - started
                run = report.subscribers[0]
                assert run.delivered == run.created, report
                idle_started = time.perf_counter()
                deliver(warehouse, settings, transport, "idle", environ=ENVIRON)
                idle = time.perf_counter() - idle_started
            transport.close()
            print(
                f"batch_size {batch_size:>3}: {args.events} events in {run.created} requests, "
                f"{took:.2f} s: {args.events / took:,.0f} events/s, "
                f"{run.created / took:,.0f} requests/s; an idle run after it: {idle * 1000:.0f} ms"
            )


if __name__ == "__main__":
    main()
