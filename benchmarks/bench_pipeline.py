"""Throughput of the hot paths on this machine: audience resolution, sending, ingestion.

    .venv/bin/python benchmarks/bench_pipeline.py --contacts 50000
    .venv/bin/python benchmarks/bench_pipeline.py --contacts 10000000 --audience-only

Seeds N synthetic contacts (set-based, inside DuckDB), resolves one campaign's audience,
sends it through a sandbox account (every message rendered and written as an .eml file),
and ingests the resulting events; prints rows per second and peak memory for each stage,
and the warehouse write statements the send made (per 100k messages). ``--journal``
records the send's ledger through the ledger journal (:mod:`mailers.ledger_journal`), as
remote warehouses do, instead of one append per provider call.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from adapters.providers.registry import build_providers, bulk_event_parser, event_parser
from adapters.settings import load
from adapters.warehouses import open_warehouse
from mailers.audience import AudienceSpec, disposition_counts, resolve
from mailers.ingest import ingest
from mailers.ledger import LedgerContext, LedgerWriter
from mailers.ledger_journal import send_warehouse
from mailers.sending import CampaignSender, SendContext
from mailers.tables import ensure_tables
from mailers.warehouse import Warehouse

REPO = Path(__file__).resolve().parents[1]

WRITES = ("insert", "update", "delete", "merge", "create", "alter", "drop")


class CountingWarehouse:
    """A warehouse that counts the write statements (and bulk appends) that reach it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def execute(self, sql: str, params: Any = ()) -> int:
        if sql.lstrip().lower().startswith(WRITES):
            self.writes += 1
        return int(self.inner.execute(sql, params))

    def append(self, schema: str, table: str, data: Any) -> None:
        self.writes += 1
        self.inner.append(schema, table, data)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _config(root: Path, *, policy: bool = False, contacts: int = 0, journal: bool = False) -> Path:
    config = yaml.safe_load((REPO / "examples" / "sandbox.yaml").read_text())
    if journal:
        config["ledger"] = {"journal": "on"}
    if policy:
        # Every message meets caps, a warm-up curve with room for all, a domain route and
        # sticky routing: the send pays for the whole policy without deferring anything.
        acme = config["workspaces"]["acme"]
        acme["policy"] = {"daily_cap": 10 * contacts + 10}
        for identity in acme["identities"].values():
            identity["warmup"] = {"daily": [10 * contacts + 10]}
            identity["daily_cap"] = 10 * contacts + 10
        for account in acme["provider_accounts"].values():
            account["pacing"] = {**account.get("pacing", {}), "daily_cap": 10 * contacts + 10}
        routing = acme["streams"]["lifecycle"]["routing"]
        routing["sticky"] = True
        routing["domain_routes"] = [
            {
                "mailbox_provider": "gmail",
                "accounts": routing.get("accounts", list(routing.get("weights", {})))[:1],
            }
        ]
    config["data_dir"] = str(root / "data")
    config["dbt_project_dir"] = str(REPO / "dbt_project")
    config["templates_dir"] = str(REPO / "templates")
    path = root / "mailers.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _seed(warehouse: Warehouse, contacts: int) -> None:
    warehouse.execute("create schema if not exists segments")
    warehouse.execute(
        f"""
        create or replace table segments.seg_acme_active_pro as
        select
            case when i % 97 = 0 then 'broken-' || i
                 when i % 89 = 0 then ' User' || i || '@EXAMPLE.com '
                 else 'user' || i || '@example.com' end as email,
            'Name' || (i % 1000) as first_name,
            case when i % 3 = 0 then 'pro' else 'trial' end as plan,
            'DE' as country,
            i as contact_id
        from range({contacts}) as t(i)
        """
    )
    warehouse.execute(
        f"""
        insert into mailers.suppressions
            (suppression_id, address, scope, workspace, stream, source, reason, event_id,
             created_at)
        select 'bench-' || i, 'user' || i || '@example.com', 'global', null, null, 'manual',
               'bench', null, now()::timestamp
        from range(0, {contacts}, 50) as t(i)
        """
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument(
        "--audience-only", action="store_true", help="time audience resolution alone"
    )
    parser.add_argument(
        "--policy",
        action="store_true",
        help="send under daily caps, a warm-up curve, a domain route and sticky routing",
    )
    parser.add_argument(
        "--journal", action="store_true", help="record the send's ledger through the journal"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load(
            _config(Path(tmp), policy=args.policy, contacts=args.contacts, journal=args.journal)
        )
        ref = settings.campaign("acme.pro_tips")
        spec = AudienceSpec.of(ref, "bench")
        with open_warehouse(settings) as warehouse:
            ensure_tables(warehouse)
            _seed(warehouse, args.contacts)
            ledger = LedgerWriter(warehouse, LedgerContext.of(ref, "bench", run_id="bench"))
            start = time.perf_counter()
            table = resolve(warehouse, spec, ledger.settled_keys_sql())
            counts = disposition_counts(warehouse, table)
            audience_s = time.perf_counter() - start
            print(
                f"audience: {args.contacts:,} segment rows in {audience_s:.2f}s "
                f"({args.contacts / audience_s:,.0f} rows/s); {counts}"
            )
            if args.audience_only:
                return
            counting = CountingWarehouse(warehouse)
            start = time.perf_counter()
            with send_warehouse(counting, settings, "bench") as recorded:  # type: ignore[arg-type]
                sender = CampaignSender(
                    recorded,
                    SendContext(settings, ref, "bench", "bench", "bench-key"),
                    build_providers(settings, "acme"),
                )
                report = sender.run(table)
            send_s = time.perf_counter() - start
            sent = report.counts["accepted"]
            print(
                f"send: {sent:,} messages rendered, routed, ledgered and written as .eml in "
                f"{send_s:.2f}s ({sent / send_s:,.0f} msg/s); peak RSS {_peak_mib():,.0f} MiB"
            )
            per_100k = counting.writes * 100_000 / max(sent, 1)
            print(
                f"  warehouse writes during the send ({'journal' if args.journal else 'direct'}):"
                f" {counting.writes:,} ({per_100k:,.0f} per 100k messages)"
            )
            start = time.perf_counter()
            with bulk_event_parser() as bulk:
                ingested = ingest(warehouse, settings.landing_dir, event_parser, bulk=bulk)
            ingest_s = time.perf_counter() - start
            events = ingested.counts["events_new"]
            print(
                f"ingest: {events:,} events from {ingested.counts['files']:,} files in "
                f"{ingest_s:.2f}s ({events / ingest_s:,.0f} events/s)"
            )


if __name__ == "__main__":
    main()
