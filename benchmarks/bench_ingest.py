"""Loading landed webhook events: events/s, peak memory, and per-file cost as history grows.

    .venv/bin/python benchmarks/bench_ingest.py --files 1000 --per-file 1000 --history 10000000
    .venv/bin/python benchmarks/bench_ingest.py --mix mailgun=40,sendgrid=30,ses=30 --history 0

Lands ``--files`` files of ``--per-file`` events (by default Postmark deliveries and
bounces and Resend deliveries; ``--mix mailgun=40,sendgrid=30,ses=30`` draws the
providers by weight, each event in the form the webhook service lands it, SendGrid's
1 to 5 to a request), a few percent duplicated across files as provider retries are,
and loads them all with :func:`mailers.ingest.ingest` into a fresh DuckDB file, parsed
by the providers' SQL mappings (``--python``: by their Python parsers only): events/s,
CPU seconds and peak RSS.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scratch import duckdb_file

from adapters.providers.registry import bulk_event_parser, event_parser
from mailers.ingest import ingest
from mailers.landing import land
from mailers.tables import ensure_tables
from mailers.warehouse import Warehouse

START = datetime(2026, 1, 5, 10, 0, 0)


DEFAULT_MIX = "postmark=50,resend=50"
"""The providers the benchmark lands by default (its figures before ``--mix`` existed)."""


def _landed(body: object) -> bytes:
    """A webhook body as ``mailers serve`` lands it (compact JSON)."""
    return json.dumps(body, separators=(",", ":")).encode()


def _mailgun(n: int, at: datetime) -> bytes:
    failed = n % 10 == 0
    event: dict[str, object] = {
        "event": "failed" if failed else "delivered",
        "id": f"mg-{n:022d}",
        "timestamp": at.replace(tzinfo=UTC).timestamp() + (n % 1000) / 1000,
        "log-level": "error" if failed else "info",
        "recipient": f"r{n}@example.com",
        "recipient-domain": "example.com",
        "domain": {"name": "mg.acme.test"},
        "message": {
            "headers": {
                "to": f"r{n}@example.com",
                "message-id": f"{n}.5d3c0a1b2e4f6a7b@mg.acme.test",
                "from": "Acme <news@mg.acme.test>",
                "subject": "Three ways to get more from Acme",
            }
        },
        "tags": [],
        "campaigns": [],
        "user-variables": {"mailers_message_key": f"k-{n}", "mailers_workspace": "acme"},
        "flags": {"is-authenticated": True, "is-test-mode": False},
        "envelope": {"sender": "bounce@mg.acme.test", "targets": f"r{n}@example.com"},
        "delivery-status": {"code": 550 if failed else 250, "message": "OK", "attempt-no": 1},
    }
    if failed:
        event |= {"severity": "permanent", "reason": "bounce"}
    signature = {"timestamp": "1795420802", "token": f"{n:050d}", "signature": "0" * 64}
    return _landed({"signature": signature, "event-data": event})


def _sendgrid(n: int, at: datetime, count: int) -> bytes:
    return _landed(
        [
            {
                "email": f"r{n}-{i}@example.com",
                "timestamp": int(at.replace(tzinfo=UTC).timestamp()),
                "smtp-id": f"<{n}.{i}@ismtpd-555>",
                "event": "bounce" if (n + i) % 10 == 0 else "delivered",
                "sg_event_id": f"sg-{n}-{i}",
                "sg_message_id": f"{n}.filter0001.16648.0",
                "response": "250 OK",
                "mailers_message_key": f"k-{n}-{i}",
                "mailers_workspace": "globex",
            }
            for i in range(count)
        ]
    )


def _ses(n: int, at: datetime) -> bytes:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    bounce = n % 10 == 0
    record: dict[str, object] = {
        "eventType": "Bounce" if bounce else "Delivery",
        "mail": {
            "timestamp": stamp,
            "source": "news@acme.test",
            "messageId": f"ses-{n}",
            "destination": [f"r{n}@example.com"],
            "headers": [
                {"name": "From", "value": "news@acme.test"},
                {"name": "X-Mailers-Message-Key", "value": f"k-{n}"},
            ],
            "tags": {"mailers_workspace": ["acme"], "ses:from-domain": ["acme.test"]},
        },
    }
    if bounce:
        record["bounce"] = {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {"emailAddress": f"r{n}@example.com", "status": "5.1.1", "diagnosticCode": "550"}
            ],
            "timestamp": stamp,
            "feedbackId": f"fb-{n}",
        }
    else:
        record["delivery"] = {
            "timestamp": stamp,
            "recipients": [f"r{n}@example.com"],
            "smtpResponse": "250 2.6.0 Message received",
        }
    envelope = {
        "Type": "Notification",
        "MessageId": f"sns-{n}",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
        "Message": json.dumps(record),
        "Timestamp": stamp,
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
    }
    return _landed(envelope)


def _weights(mix: str) -> tuple[list[str], list[float]]:
    """``kind=weight,...`` as the kinds and their weights."""
    pairs = [item.split("=", 1) for item in mix.split(",") if item]
    kinds = [kind.strip() for kind, _ in pairs]
    known = {"postmark", "resend", "mailgun", "sendgrid", "ses"}
    if not kinds or set(kinds) - known:
        raise SystemExit(f"--mix: expected kind=weight,... of {sorted(known)}, got {mix!r}")
    return kinds, [float(weight) for _, weight in pairs]


def _line(n: int, rng: random.Random, mix: tuple[list[str], list[float]]) -> tuple[str, bytes]:
    """One landed line: its kind and text (SendGrid's holding several events)."""
    at = START + timedelta(seconds=n // 50)
    kind = rng.choices(*mix)[0]
    if kind == "mailgun":
        return kind, _mailgun(n, at)
    if kind == "sendgrid":
        return kind, _sendgrid(n, at, 1 + n % 5)
    if kind == "ses":
        return kind, _ses(n, at)
    if kind == "resend":
        return kind, _resend(n, at.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return kind, _postmark(n, at.strftime("%Y-%m-%dT%H:%M:%SZ"), rng)


def _resend(n: int, at: str) -> bytes:
    body = {
        "type": "email.delivered",
        "created_at": at,
        "data": {"email_id": f"rs-{n}", "to": [f"r{n}@example.com"], "created_at": at},
    }
    return json.dumps(body).encode()


def _postmark(n: int, at: str, rng: random.Random) -> bytes:
    if rng.random() < 0.9:
        body: dict[str, object] = {
            "RecordType": "Delivery",
            "MessageID": f"pm-{n}",
            "Recipient": f"r{n}@example.com",
            "DeliveredAt": at,
            "Tag": "lifecycle",
            "Metadata": {"message_key": f"k-{n}"},
        }
    else:
        body = {
            "RecordType": "Bounce",
            "ID": n,
            "Type": "HardBounce",
            "MessageID": f"pm-{n}",
            "Email": f"r{n}@example.com",
            "BouncedAt": at,
            "Description": "The server was unable to deliver your message",
        }
    return json.dumps(body).encode()


def land_files(
    landing: Path, files: int, per_file: int, first: int, seed: int, mix: str = DEFAULT_MIX
) -> int:
    """Land the files; every 50th line repeats the one before it (a provider retry)."""
    weights = _weights(mix)
    n = first
    for _ in range(files):
        by_kind: dict[str, list[bytes]] = {}
        events = 0
        while events < per_file:
            retry = events and n % 50 == 0
            kind, line = _line(n - 1 if retry else n, random.Random(f"{seed}:{n - retry}"), weights)
            by_kind.setdefault(kind, []).append(line)
            events += 1 + (n - retry) % 5 if kind == "sendgrid" else 1
            n += 1
        for kind, lines in by_kind.items():
            land(landing, kind, kind[:2], lines)
    return n


def grow_history(warehouse: Warehouse, rows: int) -> None:
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
    """Load ``landing`` into a warehouse at ``path``: wall and CPU seconds (this process, all
    threads), files, events."""
    with duckdb_file(path) as warehouse, bulk_event_parser() as bulk:
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
    parser.add_argument(
        "--mix",
        default=DEFAULT_MIX,
        help="providers to land, kind=weight,... of postmark, resend, mailgun, sendgrid, ses "
        f"(default {DEFAULT_MIX})",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        landing = root / "landing"
        land_files(landing, args.files, args.per_file, 0, seed=1, mix=args.mix)
        elapsed, cpu, files, events = _load(root / "bulk.duckdb", landing, args.python)
        total = args.files * args.per_file
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{total:,} landed events ({args.mix}) in {files} files: {elapsed:.1f} s")
        print(f"  {total / elapsed:,.0f} events/s, {events:,} events loaded, peak RSS {rss:.0f} MB")
        # CPU of all threads per event: less swayed than wall time by other load
        print(f"  {cpu / total * 1e6:.1f} µs CPU per event ({cpu / elapsed:.2f} cores busy)")
        if not args.history:
            return

        probe = root / "probe"
        land_files(probe, args.probe_files, args.per_file, 10**9, seed=2, mix=args.mix)
        empty_elapsed, _, probe_files, _ = _load(root / "empty.duckdb", probe, args.python)
        grown = root / "grown.duckdb"
        with duckdb_file(grown) as warehouse:
            ensure_tables(warehouse)
            grow_history(warehouse, args.history)
        grown_elapsed, _, _, _ = _load(grown, probe, args.python)
        print(f"per-file cost over {probe_files} probe files:")
        print(f"  empty table:          {empty_elapsed / probe_files * 1000:.1f} ms/file")
        print(f"  after {args.history:,} events: {grown_elapsed / probe_files * 1000:.1f} ms/file")


if __name__ == "__main__":
    main()
