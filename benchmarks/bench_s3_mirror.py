"""What S3 landing costs: uploading closed segments, and mirroring as the bucket grows.

    .venv/bin/python benchmarks/bench_s3_mirror.py --segments 2000 --lines 100

Runs moto's S3 on loopback (``ThreadedMotoServer``: real HTTP, so the numbers include
botocore's request cost but not a real network's). Lands ``--segments`` segments of
``--lines`` payloads each for one account through :class:`~adapters.serve.s3_store.
S3Segments` and prints uploads per second; mirrors them all into a landing dir and prints
objects per second; then uploads ten more and mirrors again, printing how many keys that
listing returned (the overlap window plus the ten, not the bucket's history) and its time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from adapters.serve.s3_mirror import mirror_landing
from adapters.serve.s3_store import S3Segments, s3_client
from mailers import clock
from mailers.config import MailersConfig, Settings
from mailers.serve_config import LandingStoreConfig, ServeConfig
from tests.serve.helpers import config_document, webhook_accounts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--segments", type=int, default=2000)
    parser.add_argument("--lines", type=int, default=100)
    args = parser.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench-events")
    landing: dict[str, Any] = {
        "kind": "s3",
        "bucket": "bench-events",
        "endpoint_url": endpoint,
        "mirror_overlap_seconds": 60,
    }
    config = LandingStoreConfig.model_validate(landing)
    line = b'{"RecordType":"Delivery","MessageID":"m","Recipient":"a@example.com"}\n'
    # A clock that moves a second per segment: an hour of landing spread over the bucket.
    moving = clock.FixedClock(clock.now())
    with tempfile.TemporaryDirectory() as tmp, clock.use_clock(moving):
        root = Path(tmp)
        store = S3Segments(
            config, root / "spool", ServeConfig(segment_max_age_seconds=0), background=False
        )
        started = time.perf_counter()
        for _ in range(args.segments):
            store.commit({("postmark", "pm"): [line] * args.lines})
            store.rotate_due()
            store.upload_closed()
            moving.advance(1)
        took = time.perf_counter() - started
        print(f"landed and uploaded {args.segments} segments: {args.segments / took:,.0f}/s")

        unsubscribe = {"base_url": "https://u.example", "signing_key": {"env": "UNUSED"}}
        document = config_document(webhook_accounts("BENCH"), unsubscribe, {"landing": landing})
        settings = Settings(
            config=MailersConfig.model_validate(document),
            path=root / "mailers.yaml",
            config_hash="-",
            data_dir=root,
        )
        client = s3_client(config)
        listed: list[int] = []
        client.meta.events.register(
            "after-call.s3.ListObjectsV2",
            lambda parsed, **_: listed.append(len(parsed.get("Contents", []))),
        )
        started = time.perf_counter()
        placed = mirror_landing(settings, client)
        took = time.perf_counter() - started
        print(f"first mirror: {placed} objects in {took:.2f} s ({placed / took:,.0f}/s)")

        moving.advance(3600)
        for _ in range(10):
            store.commit({("postmark", "pm"): [line] * args.lines})
            store.rotate_due()
            store.upload_closed()
        listed.clear()
        started = time.perf_counter()
        placed = mirror_landing(settings, client)
        took = time.perf_counter() - started
        print(
            f"next mirror: {placed} new objects, {sum(listed)} keys listed of "
            f"{args.segments + 10} in the bucket, {took * 1000:.0f} ms"
        )
        store.close()
    server.stop()


if __name__ == "__main__":
    main()
