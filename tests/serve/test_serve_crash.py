"""``kill -9`` of ``mailers serve`` under load: no acknowledged event lost, none loaded twice.

The real service runs as a child process with its production settings (segments closed by
size and age, not per request); a client keeps several keep-alive connections busy with
signed Postmark and Resend webhooks and retries what got no 200, as providers do. The
service is SIGKILLed mid-load three times and restarted on the same landing zone; then
everything landed is ingested into DuckDB.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from adapters.providers.registry import bulk_event_parser, event_parser
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.ingest import ingest
from mailers.tables import ensure_tables
from tests.serve.live import (
    Outcome,
    Prepared,
    Service,
    drive,
    free_port,
    landed_ids,
    prepared,
    write_config,
)

# A longer run of the same test: MAILERS_CRASH_REQUESTS=20000 MAILERS_CRASH_KILLS=10 pytest ...
REQUESTS = int(os.environ.get("MAILERS_CRASH_REQUESTS", "2000"))
KILLS = int(os.environ.get("MAILERS_CRASH_KILLS", "3"))


def _round(
    port: int, pending: list[Prepared], outcome: Outcome, kill_after: int, service: Service
) -> int:
    """Send ``pending`` once over 8 connections, SIGKILLing ``service`` after ``kill_after``
    answers (0: never); keep the first 200 of each request. Returns how many got none."""
    unanswered = 0
    then = service.kill if kill_after else None
    for ident, status in drive(port, pending, 8, 120, after=kill_after, then=then).statuses.items():
        unanswered += status == 0
        if outcome.statuses.get(ident) != 200:
            outcome.statuses[ident] = status
    return unanswered


def test_kill_9_under_load_loses_no_acknowledged_event_and_loads_none_twice(
    tmp_path: Path,
) -> None:
    rng = random.Random(20261203)
    port = free_port()
    config = write_config(tmp_path)
    requests = list(prepared(port, REQUESTS))
    outcome = Outcome()
    kills = unanswered = 0
    for _ in range(KILLS + 5):  # a round per kill, then until every request is answered
        pending = [r for r in requests if outcome.statuses.get(r.ident) != 200]
        if not pending:
            break
        service = Service(config, port).start()
        if kills < KILLS:
            # A seeded moment a fifth to three fifths into the round: always under load.
            kill_after = rng.randint(max(1, len(pending) // 5), max(1, len(pending) * 3 // 5))
            unanswered += _round(port, pending, outcome, kill_after, service)
            kills += 1
        else:
            _round(port, pending, outcome, 0, service)
            service.stop()
    assert kills == KILLS
    assert unanswered > 0  # the kills hit the service under load, not between rounds

    # A retry of a request that landed but whose answer the kill swallowed is answered 200
    # too (already landed): in the end every request is acknowledged.
    acknowledged = outcome.acknowledged
    assert len(acknowledged) == REQUESTS

    landed = landed_ids(tmp_path / ".mailers" / "landing")
    with DuckDBWarehouse(tmp_path / "warehouse.duckdb") as warehouse:
        ensure_tables(warehouse)
        # The production path: the SQL mappings first, the Python parsers for the rest.
        ingest(
            warehouse,
            tmp_path / ".mailers" / "landing",
            event_parser,
            bulk=bulk_event_parser(),
        )
        rows = warehouse.query(
            "select provider_message_id, count(*) as n from mailers.events "
            "where event_type = 'delivered' group by all"
        ).to_pylist()
        unparseable = (
            warehouse.query("select count(*) from mailers.events where event_type <> 'delivered'")
            .column(0)[0]
            .as_py()
        )
    loaded = {row["provider_message_id"]: row["n"] for row in rows}
    # Shown with -s: the numbers of a run (what the closing note reports).
    print(
        f"\n{REQUESTS} requests, {kills} kills: {unanswered} unanswered at a kill, "
        f"{len(acknowledged)} acknowledged, {len(landed) - len(set(landed))} landed twice "
        f"(retries of lost answers), {len(loaded)} loaded, "
        f"{sum(n > 1 for n in loaded.values())} loaded twice"
    )
    assert [i for i in acknowledged if i not in loaded] == []
    assert {i: n for i, n in loaded.items() if n > 1} == {}
    assert unparseable == 0  # no torn line from a killed segment was loaded
    assert set(loaded) <= {r.ident for r in requests} | {None}
