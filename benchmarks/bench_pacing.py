"""How close the pacer keeps a run to a provider's quota, against the local simulator.

    .venv/bin/python benchmarks/bench_pacing.py --provider postmark --messages 5000 --quota 400

The simulator gets a sending quota (``--quota`` messages per second, ``--burst`` at once);
the account's pacer is configured ``--over`` times above it (1.5 by default, so the quota
answers 429s), and the messages go through ``send_batch`` in the account's batches as the
core sends them. Printed: the sustained rate the simulator admitted (messages after the
first request, from the first admission to the last) and the same without the quota's
initial burst (which a quota can never exceed), their share of the quota, the busiest
second, the 429s served, and lost messages (not accepted, or accepted twice).
"""

from __future__ import annotations

import argparse
import time

from synthetic import bench_messages

from adapters.providers import mailgun, postmark
from adapters.providers.base import BatchProvider
from adapters.providers.postmark.sending import PostmarkProvider
from adapters.simulator import Quota, Simulator
from adapters.simulator import mailgun as mailgun_sim
from adapters.simulator import postmark as postmark_sim
from mailers.pacing import Pacer
from mailers.policy_config import PacingConfig


def _account(name: str, sim: Simulator, batch: int) -> BatchProvider:
    if name == "postmark":
        postmark_sim.register(sim, credentials={"server_token": "t"})
        settings = postmark.PostmarkSettings(base_url=sim.base_url)
        return PostmarkProvider("pm", settings, "t", max_batch_size=batch)
    mailgun_sim.register(sim, credentials={"api_key": "k", "webhook_signing_key": "s"})
    settings_mg = mailgun.MailgunSettings(base_url=sim.base_url, domain="news.acme.test")
    return mailgun.MailgunProvider("mg", settings_mg, "k")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--provider", choices=["postmark", "mailgun"], default="postmark")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument(
        "--quota", type=float, default=None, help="msg/s (postmark 400, mailgun 150)"
    )
    parser.add_argument("--burst", type=int, default=None, help="default: half a second of quota")
    parser.add_argument("--over", type=float, default=1.5, help="pacer rate / quota")
    parser.add_argument("--batch", type=int, default=100, help="Postmark messages per call")
    parser.add_argument("--min-backoff", type=float, default=0.1)
    args = parser.parse_args()
    quota = args.quota or (400.0 if args.provider == "postmark" else 150.0)
    burst = args.burst or max(int(quota / 2), args.batch if args.provider == "postmark" else 8)
    with Simulator() as sim:
        account = _account(args.provider, sim, args.batch)
        sim.limit(args.provider, Quota(quota, burst=burst))
        pacing = PacingConfig(
            messages_per_second=quota * args.over, min_backoff_seconds=args.min_backoff
        )
        wave = account.request_size * account.concurrency
        account.pace(Pacer.of(pacing, largest_wave=wave))
        messages = bench_messages(args.messages, prefix="paced")
        started = time.perf_counter()
        results = []
        for i in range(0, len(messages), account.max_batch_size):
            results += account.send_batch(messages[i : i + account.max_batch_size])
        seconds = time.perf_counter() - started
        account.close()
        stats = sim.quota_stats[args.provider]
        assert stats.first is not None and stats.last is not None
        span = stats.last - stats.first
        sustained = (stats.accepted - stats.admitted[0][1]) / span
        beyond_burst = stats.sustained_rate(burst)  # what the rate alone can explain
        lost = sum(not r.accepted for r in results) + sum(n - 1 for n in sim.accepted.values())
        print(
            f"{args.provider}: {args.messages:,} messages, quota {quota:g} msg/s (burst {burst}), "
            f"pacer at {args.over:g}x: sustained {sustained:,.1f} msg/s "
            f"({sustained / quota:.1%} of quota; {beyond_burst:,.1f} = "
            f"{beyond_burst / quota:.1%} beyond the burst), busiest second {stats.busiest(1.0)}, "
            f"429s served {stats.throttled}, lost {lost}, {seconds:.1f}s"
        )


if __name__ == "__main__":
    main()
