"""Send throughput of each HTTP provider adapter against the local provider simulator.

    .venv/bin/python benchmarks/bench_providers.py --messages 5000 [--journal]

Measures the adapter and simulator together over loopback (request building, JSON/form
encoding, one pooled client per account), not the providers' real-world rate limits.
``--journal`` also writes the send ledger as a real send does (``dispatching`` rows before
every provider call, outcomes after it) into a DuckDB file, to show what journaling costs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from scratch import duckdb_file
from synthetic import bench_messages

from adapters.providers import mailgun, postmark, resend, sendgrid
from adapters.providers.postmark.sending import PostmarkProvider
from adapters.simulator import Simulator
from adapters.simulator import mailgun as mailgun_sim
from adapters.simulator import postmark as postmark_sim
from adapters.simulator import resend as resend_sim
from adapters.simulator import sendgrid as sendgrid_sim
from mailers.ledger import LedgerContext, LedgerWriter
from mailers.providers import DispatchJournal
from mailers.sending import LedgerJournal
from mailers.tables import ensure_tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--journal", action="store_true", help="write the send ledger too")
    args = parser.parse_args()
    with Simulator() as sim, ExitStack() as stack:
        warehouse = None
        if args.journal:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            warehouse = stack.enter_context(duckdb_file(folder / "bench.duckdb"))
            ensure_tables(warehouse)
        postmark_sim.register(sim, credentials={"server_token": "t"})
        mailgun_sim.register(sim, credentials={"api_key": "k", "webhook_signing_key": "s"})
        sendgrid_sim.register(sim, credentials={"api_key": "g"})
        resend_sim.register(sim, credentials={"api_key": "re_bench"})
        providers = {
            "postmark (batch of 500)": PostmarkProvider(
                "pm", postmark.PostmarkSettings(base_url=sim.base_url), server_token="t"
            ),
            "mailgun (a call per message, 4 in flight)": mailgun.MailgunProvider(
                "mg", mailgun.MailgunSettings(base_url=sim.base_url, domain="news.acme.test"), "k"
            ),
            "sendgrid (shared body: 1,000 per request)": sendgrid.SendGridProvider(
                "sg", sendgrid.SendGridSettings(base_url=sim.base_url), api_key="g"
            ),
            "resend (batch of 100, with an Idempotency-Key)": resend.ResendProvider(
                "rs", resend.ResendSettings(base_url=sim.base_url), "re_bench"
            ),
        }
        for name, provider in providers.items():
            messages = bench_messages(args.messages, shared_body=name.startswith("sendgrid"))
            start = time.perf_counter()
            results = []
            for i in range(0, len(messages), provider.max_batch_size):
                batch = messages[i : i + provider.max_batch_size]
                journal: DispatchJournal | None = None
                if warehouse is not None:
                    context = LedgerContext("acme", "lifecycle", "bench", "w", provider.account)
                    journal = LedgerJournal(LedgerWriter(warehouse, context), provider, batch)
                results += provider.send_batch(batch, journal)
            seconds = time.perf_counter() - start
            accepted = sum(r.accepted for r in results)
            rate = accepted / seconds
            print(f"{name}: {accepted:,} accepted in {seconds:.2f}s ({rate:,.0f} msg/s)")
            provider.close()


if __name__ == "__main__":
    main()
