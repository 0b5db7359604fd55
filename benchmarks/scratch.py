"""Scratch warehouses for the benchmarks, opened through the config like any other."""

from __future__ import annotations

from pathlib import Path

from adapters.warehouses import OpenWarehouse, connect
from mailers.config import DuckDBWarehouseConfig


def duckdb_file(path: Path) -> OpenWarehouse:
    """A DuckDB warehouse in the file ``path`` (created when missing)."""
    return connect(DuckDBWarehouseConfig(path=str(path)), path.parent)
