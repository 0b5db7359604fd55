"""Batched ingestion: several files per transaction, exactly once across a failed batch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from adapters.providers.registry import event_parser
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.ingest import ingest
from mailers.providers import EventParser
from mailers.tables import LANDED_FILES_TABLE, ensure_tables
from tests.core.test_ingest import event, land


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[DuckDBWarehouse]:
    with DuckDBWarehouse(tmp_path / "warehouse.duckdb") as wh:
        ensure_tables(wh)
        yield wh


def count(warehouse: DuckDBWarehouse, sql: str) -> int:
    return int(warehouse.query(sql).column(0)[0].as_py())


def test_a_failed_batch_loads_nothing_and_a_rerun_loads_each_file_once(
    warehouse: DuckDBWarehouse, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    for n in range(6):
        # Each file repeats its predecessor's last event: duplicates across files.
        land(landing, f"f{n}.jsonl", event(f"sbx-{n}", "delivered"), event(f"sbx-{n + 1}", "open"))
    calls = {"n": 0}

    def failing_after_two_batches(kind: str) -> EventParser:
        calls["n"] += 1
        if calls["n"] > 4:  # two batches of two files, then the third batch fails
            raise RuntimeError("injected crash")
        return event_parser(kind)

    with pytest.raises(RuntimeError, match="injected crash"):
        ingest(warehouse, landing, failing_after_two_batches, files_per_batch=2)
    assert count(warehouse, "select count(*) from mailers.landed_files") == 4
    assert count(warehouse, "select count(*) from mailers.events") == 5

    report = ingest(warehouse, landing, event_parser, files_per_batch=2)

    assert report.counts["files"] == 2
    assert count(warehouse, "select count(*) from mailers.landed_files") == 6
    assert count(warehouse, "select count(distinct source_file) from mailers.landed_files") == 6
    assert count(warehouse, "select count(*) from mailers.events") == 7
    assert count(warehouse, "select count(distinct event_id) from mailers.events") == 7
    assert ingest(warehouse, landing, event_parser).counts["files"] == 0


def test_duplicates_within_and_across_files_of_one_batch_load_once(
    warehouse: DuckDBWarehouse, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    land(landing, "b.jsonl", event("sbx-1", "bounce"), event("sbx-2", "delivered"))
    land(landing, "a.jsonl", event("sbx-1", "bounce"), event("sbx-1", "bounce"))

    report = ingest(warehouse, landing, event_parser, files_per_batch=10)

    assert report.counts["events_new"] == 2
    assert report.counts["events_duplicate"] == 2
    assert report.counts["suppressions_added"] == 1
    assert count(warehouse, "select count(*) from mailers.suppressions") == 1
    # the repeated event is kept from the first file in name order, beside the batch's others
    kept = warehouse.query("select source_file from mailers.events order by event_type")
    assert [name.rsplit("/", 1)[-1] for name in kept["source_file"].to_pylist()] == [
        "a.jsonl",
        "b.jsonl",
    ]


def test_batches_are_bounded_by_bytes_as_well_as_by_files(
    warehouse: DuckDBWarehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing = tmp_path / "landing"
    for n in range(5):
        land(landing, f"f{n}.jsonl", event(f"sbx-{n}", "delivered"))
    size = next(landing.rglob("f0.jsonl")).stat().st_size
    monkeypatch.setattr("mailers.ingest.BATCH_MAX_BYTES", 2 * size + 1)
    batches: list[int] = []

    report = ingest(warehouse, landing, event_parser, files_per_batch=50, progress=batches.append)

    assert batches == [2, 2, 1]  # two files fit the byte bound, a third does not
    assert report.counts["files"] == 5
    assert count(warehouse, "select count(*) from mailers.events") == 5


def test_a_failed_load_leaves_the_batch_parsed_ahead_pending(tmp_path: Path) -> None:
    """The next batch is parsed while one loads; when that load fails, neither it nor the
    batch parsed ahead is recorded, and a rerun loads both once."""
    landing = tmp_path / "landing"
    for n in range(6):
        land(landing, f"f{n}.jsonl", event(f"sbx-{n}", "delivered"))

    class FailingSecondManifest(DuckDBWarehouse):
        manifests = 0

        def append(self, schema: str, table: str, data: pa.Table) -> None:
            if table == LANDED_FILES_TABLE:
                FailingSecondManifest.manifests += 1
                if FailingSecondManifest.manifests == 2:
                    raise RuntimeError("injected load failure")
            super().append(schema, table, data)

    with FailingSecondManifest(tmp_path / "warehouse.duckdb") as failing:
        ensure_tables(failing)
        with pytest.raises(RuntimeError, match="injected load failure"):
            ingest(failing, landing, event_parser, files_per_batch=2)
        assert count(failing, "select count(*) from mailers.landed_files") == 2
        assert count(failing, "select count(*) from mailers.events") == 2
        assert count(failing, "select count(*) from mailers.suppressions") == 0

        report = ingest(failing, landing, event_parser, files_per_batch=2)

        assert report.counts["files"] == 4
        assert count(failing, "select count(distinct source_file) from mailers.landed_files") == 6
        assert count(failing, "select count(distinct event_id) from mailers.events") == 6
        assert count(failing, "select count(*) from mailers.events") == 6
