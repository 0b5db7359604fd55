"""S3 landing against moto's S3 over real HTTP: the service lands, ingestion mirrors and loads.

Each test runs its own ``ThreadedMotoServer`` on a loopback port of its own (moto keeps
its buckets in the process, so each test also uses buckets of its own and resets them).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import httpx
import pytest
from moto.server import ThreadedMotoServer

from adapters.providers.registry import event_parser
from adapters.serve.embedded import EmbeddedServer
from adapters.serve.s3_mirror import MIRROR_STATE, mirror_landing
from adapters.serve.s3_store import S3Segments, s3_client, spool_dir
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers import clock
from mailers.config import Settings
from mailers.ingest import ingest
from mailers.serve_config import LandingStoreConfig, ServeConfig
from mailers.tables import ensure_tables
from orchestration.defs.automation import landed_events_sensor
from orchestration.defs.records import EVENTS_KEY, provider_events
from orchestration.defs.resources import MailersResource
from tests.serve.helpers import mailgun_request, postmark_request, serve_settings
from tests.serve.live import ENV, write_config

BUCKET = "mailers-events"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A moto S3 endpoint with an empty ``BUCKET``; credentials only in the environment."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test-access-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        httpx.post(f"{endpoint}/moto-api/reset")
        server.stop()


def _landing(endpoint: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "s3",
        "bucket": BUCKET,
        "endpoint_url": endpoint,
        "connect_timeout_seconds": 2,
        "read_timeout_seconds": 5,
        "max_attempts": 2,
        **extra,
    }


def _objects(endpoint: str, bucket: str = BUCKET) -> dict[str, bytes]:
    client = boto3.client("s3", endpoint_url=endpoint)
    keys = [
        entry["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for entry in page.get("Contents", [])
    ]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def _compact(body: bytes) -> bytes:
    return json.dumps(json.loads(body), separators=(",", ":")).encode()


def _loaded(settings: Settings) -> tuple[dict[str, int], list[dict[str, Any]]]:
    with DuckDBWarehouse(settings.data_dir / "warehouse.duckdb") as warehouse:
        ensure_tables(warehouse)
        report = ingest(warehouse, settings.landing_dir, event_parser)
        rows = warehouse.query(
            "select event_id, provider_message_id from mailers.events"
        ).to_pylist()
    return report.counts, rows


def test_the_service_lands_in_s3_and_ingestion_loads_every_acknowledged_event_once(
    s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = serve_settings(tmp_path, monkeypatch, landing=_landing(s3))
    postmarks = [postmark_request(f"pm-{n}") for n in range(20)]
    mailguns = [mailgun_request(id=f"mg-{n}") for n in range(5)]
    with EmbeddedServer(settings) as server:
        answers = [
            httpx.post(server.url_for("acme", "pm"), content=r.body, headers=dict(r.headers))
            for r in postmarks
        ] + [
            httpx.post(server.url_for("acme", "mg"), content=r.body, headers=dict(r.headers))
            for r in mailguns
        ]
    assert [a.status_code for a in answers] == [200] * 25

    # Every closed segment is an object; nothing is left in the spool, nothing was landed
    # in the local landing dir by the service.
    objects = _objects(s3)
    assert objects and all(
        key.startswith(("landing/postmark/pm/", "landing/mailgun/mg/")) for key in objects
    )
    lines = sorted(line for body in objects.values() for line in body.splitlines())
    assert lines == sorted(_compact(r.body) for r in postmarks + mailguns)
    assert not list(spool_dir(settings).glob("*/*/*.jsonl"))
    assert not list(settings.landing_dir.glob("*/*/*.jsonl"))

    assert mirror_landing(settings) == len(objects)
    assert mirror_landing(settings) == 0  # nothing new: a no-op
    counts, rows = _loaded(settings)
    assert (counts["files"], counts["events_new"]) == (len(objects), 25)
    assert len({row["event_id"] for row in rows}) == len(rows) == 25
    assert {row["provider_message_id"] for row in rows} >= {f"pm-{n}" for n in range(20)}

    # A mirror that lost its notes (and a local file) places the file again under its
    # name; the load manifest keeps it from loading twice.
    mirrored = sorted(settings.landing_dir.glob("postmark/pm/*.jsonl"))
    mirrored[0].unlink()
    for state in settings.landing_dir.glob(f"*/*/{MIRROR_STATE}"):
        state.unlink()
    assert mirror_landing(settings) == 1
    counts, rows = _loaded(settings)
    assert (counts["files"], counts["events_new"]) == (0, 0)
    assert len(rows) == 25


def _store(endpoint: str, spool: Path, **landing: Any) -> S3Segments:
    config = LandingStoreConfig.model_validate(_landing(endpoint, **landing))
    return S3Segments(config, spool, ServeConfig(segment_max_age_seconds=0), background=False)


def _land(store: S3Segments, *lines: bytes) -> None:
    before = len(store.pending())
    assert store.commit({("postmark", "pm"): [line + b"\n" for line in lines]}) == {}
    assert len(store.pending()) == before + 1  # age 0: closed inside the commit
    assert store.rotate_due() == 0


def test_a_failed_upload_keeps_the_segment_and_a_later_pass_uploads_it(
    s3: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    store = _store(s3, spool, bucket="mailers-late")  # no such bucket yet
    _land(store, b'{"n":1}')
    assert store.upload_closed() == 0 and store.upload_failures == 1
    [kept] = store.pending()
    assert kept.read_bytes() == b'{"n":1}\n'

    boto3.client("s3", endpoint_url=s3).create_bucket(Bucket="mailers-late")
    _land(store, b'{"n":2}', b'{"n":3}')
    assert store.upload_closed() == 2 and store.pending() == []
    assert sorted(_objects(s3, "mailers-late").values()) == [b'{"n":1}\n', b'{"n":2}\n{"n":3}\n']
    store.close()


def test_the_service_acknowledges_after_the_local_fsync_while_s3_refuses_uploads(
    s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = serve_settings(tmp_path, monkeypatch, landing=_landing(s3, bucket="mailers-down"))
    requests = [postmark_request(f"pm-{n}") for n in range(3)]
    # One segment that stays open until shutdown: what is in it was fsync'd before the 200s.
    serve = settings.config.serve.model_copy(update={"segment_max_age_seconds": 3600.0})
    with EmbeddedServer(settings, serve=serve) as server:
        assert httpx.get(server.base_url + "/readyz").status_code == 200
        answers = [
            httpx.post(server.url_for("acme", "pm"), content=r.body, headers=dict(r.headers))
            for r in requests
        ]
        assert [a.status_code for a in answers] == [200] * 3
        [kept] = spool_dir(settings).glob("postmark/pm/.*.jsonl.partial")
        assert sorted(kept.read_bytes().splitlines()) == sorted(_compact(r.body) for r in requests)
        boto3.client("s3", endpoint_url=s3).create_bucket(Bucket="mailers-down")
    # Stopping closes the segment, and the store makes a last upload pass.
    assert not list(spool_dir(settings).glob("*/*/*.jsonl*"))
    lines = sorted(b for body in _objects(s3, "mailers-down").values() for b in body.splitlines())
    assert lines == sorted(_compact(r.body) for r in requests)


def test_an_upload_slower_than_half_the_overlap_is_redone_under_a_new_key(
    s3: str, tmp_path: Path, fixed_clock: clock.FixedClock
) -> None:
    config = LandingStoreConfig.model_validate(_landing(s3, mirror_overlap_seconds=60))
    client = s3_client(config)
    stalls = [31.0]  # the first PUT returns 31 s after its key's stamp

    def stall(**_: Any) -> None:
        if stalls:
            fixed_clock.advance(stalls.pop())

    client.meta.events.register("before-send.s3.PutObject", stall)
    store = S3Segments(
        config,
        tmp_path / "spool",
        ServeConfig(segment_max_age_seconds=0),
        client=client,
        background=False,
    )
    _land(store, b'{"n":1}')
    assert store.upload_closed() == 0 and len(store.pending()) == 1
    assert store.upload_closed() == 1 and store.pending() == []
    objects = _objects(s3)
    assert list(objects.values()) == [b'{"n":1}\n'] * 2 and len(set(objects)) == 2
    store.close()


def test_s3_unreachable_keeps_segments_and_closing_uploads_them_once_it_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3: str
) -> None:
    """The uploader thread retries on its own; close() makes a last pass."""
    dead = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    dead.start()
    host, port = dead.get_host_and_port()
    dead.stop()  # nothing listens on this port now
    config = LandingStoreConfig.model_validate(
        _landing(f"http://{host}:{port}", retry_seconds=0.05, max_attempts=1)
    )
    store = S3Segments(config, tmp_path / "spool", ServeConfig(segment_max_age_seconds=0))
    _land(store, b'{"n":1}')
    _land(store, b'{"n":2}')
    assert len(store.pending()) == 2
    revived = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    revived.start()  # moto's buckets live in the process: BUCKET is there again
    try:
        store.close()
        assert store.pending() == [] and store.uploaded == 2
        assert sorted(_objects(f"http://{host}:{port}").values()) == [b'{"n":1}\n', b'{"n":2}\n']
    finally:
        revived.stop()


def test_the_mirror_lists_each_folder_after_the_newest_name_it_mirrored(
    s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixed_clock: clock.FixedClock
) -> None:
    fixed_clock.set(datetime(2026, 5, 4, 10, 0, tzinfo=UTC))
    settings = serve_settings(
        tmp_path, monkeypatch, landing=_landing(s3, mirror_overlap_seconds=60)
    )
    store = _store(s3, tmp_path / "spool")

    def land_at(hour: int, count: int) -> None:
        fixed_clock.set(datetime(2026, 5, 4, hour, 0, tzinfo=UTC))
        for _ in range(count):
            _land(store, b'{"at":%d}' % hour)
        assert store.upload_closed() == count

    client = s3_client(settings.config.serve.landing)
    listings: list[dict[str, Any]] = []
    returned: list[int] = []

    def listed(params: dict[str, Any], **_: Any) -> None:
        listings.append(dict(params))

    def answered(parsed: dict[str, Any], **_: Any) -> None:
        returned.append(len(parsed.get("Contents", [])))

    client.meta.events.register("provide-client-params.s3.ListObjectsV2", listed)
    client.meta.events.register("after-call.s3.ListObjectsV2", answered)

    def mirror() -> tuple[int, int, str | None]:
        """Objects placed, keys listed, and the StartAfter of the account's listing."""
        listings.clear()
        returned.clear()
        placed = mirror_landing(settings, client)
        [folder] = [p for p in listings if p["Prefix"] == "landing/postmark/pm/"]
        return placed, sum(returned), folder.get("StartAfter")

    land_at(10, 3)
    land_at(11, 3)
    assert mirror() == (6, 6, None)  # the first mirror lists the folder from its start
    land_at(12, 2)
    # From a minute (the overlap) before the newest name mirrored: 11:00's three again
    # (skipped, not fetched) and the two new ones, never 10:00's.
    assert mirror() == (2, 5, "landing/postmark/pm/20260504T105900000000")
    assert mirror() == (0, 2, "landing/postmark/pm/20260504T115900000000")
    assert sorted(path.read_bytes() for path in settings.landing_dir.glob("*/*/*.jsonl")) == (
        [b'{"at":10}\n'] * 3 + [b'{"at":11}\n'] * 3 + [b'{"at":12}\n'] * 2
    )
    store.close()


def test_a_bounded_or_failed_mirror_goes_on_where_it_stopped(
    s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = serve_settings(tmp_path, monkeypatch, landing=_landing(s3))
    store = _store(s3, tmp_path / "spool")
    for n in range(5):
        _land(store, b'{"n":%d}' % n)
    assert store.upload_closed() == 5
    client = s3_client(settings.config.serve.landing)
    assert [mirror_landing(settings, client, max_objects=2) for _ in range(4)] == [2, 2, 1, 0]

    for n in range(5, 8):
        _land(store, b'{"n":%d}' % n)
    assert store.upload_closed() == 3
    store.close()
    doomed = max(_objects(s3))

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if params["Key"] == doomed:
            raise RuntimeError("S3 went away")

    client.meta.events.register("provide-client-params.s3.GetObject", refuse)
    with pytest.raises(RuntimeError, match="S3 went away"):
        mirror_landing(settings, client)
    assert len(list(settings.landing_dir.glob("*/*/*.jsonl"))) == 7  # the others placed
    client.meta.events.unregister("provide-client-params.s3.GetObject", refuse)
    assert mirror_landing(settings, client) == 1
    assert sorted(p.read_bytes() for p in settings.landing_dir.glob("*/*/*.jsonl")) == sorted(
        b'{"n":%d}\n' % n for n in range(8)
    )


def test_the_mirror_places_only_objects_of_the_landing_layout(
    s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = serve_settings(tmp_path, monkeypatch, landing=_landing(s3))
    client = boto3.client("s3", endpoint_url=s3)
    good = "landing/postmark/pm/20260504T100000000000-a.jsonl"
    for key in (
        good,
        "landing/postmark/pm/nested/20260504T100000000000-b.jsonl",
        "landing/postmark/pm/not-stamped.jsonl",
        "landing/postmark/pm/20260504T100000000000-c.txt",
        "landing/.hidden/pm/20260504T100000000000-d.jsonl",
        "landing/postmark/../20260504T100000000000-e.jsonl",
        "elsewhere/postmark/pm/20260504T100000000000-f.jsonl",
    ):
        client.put_object(Bucket=BUCKET, Key=key, Body=b'{"k":1}\n')
    assert mirror_landing(settings) == 1
    placed = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".txt")]
    assert placed == [settings.landing_dir / good.removeprefix("landing/")]


def test_the_sensor_and_the_events_asset_mirror_s3_before_ingesting(
    s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    path = write_config(tmp_path, {"landing": _landing(s3)})
    store = _store(s3, tmp_path / "spool")
    _land(store, _compact(postmark_request("pm-a").body), _compact(postmark_request("pm-b").body))
    assert store.upload_closed() == 1
    resource = MailersResource(config_path=str(path))
    settings = resource.settings()

    sensor = landed_events_sensor(settings)
    first = sensor(dg.build_sensor_context())
    assert len(first.run_requests) == 1
    assert len(list(settings.landing_dir.glob("postmark/pm/*.jsonl"))) == 1

    _land(store, _compact(postmark_request("pm-c").body))
    assert store.upload_closed() == 1
    result = dg.materialize(
        [provider_events], resources={"mailers": resource}, instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    [materialization] = [
        m for m in result.get_asset_materialization_events() if m.asset_key == EVENTS_KEY
    ]
    metadata = materialization.materialization.metadata
    assert metadata["s3_objects_mirrored"].value == 1
    assert (metadata["files"].value, metadata["events_new"].value) == (2, 3)
    store.close()

    # S3 unreachable: the run still ingests what is local and its poll_errors check fails.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    write_config(tmp_path, {"landing": _landing(dead, max_attempts=1)})
    result = dg.materialize(
        [provider_events], resources={"mailers": resource}, instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and "s3_landing" in str(check.description)
    assert "test-secret-key" not in str({k: v.value for k, v in check.metadata.items()})
