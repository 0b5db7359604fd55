"""Warehouse adapters, one module per engine, each implementing ``mailers.warehouse.Warehouse``.

:func:`open_warehouse` is the one place that picks an engine (from ``warehouse.kind``);
nothing else names one. An engine's module, and the SDK it needs, is imported only when a
warehouse of that kind is opened.

Adding an engine: a module here with its ``Dialect``, its warehouse class and its
``CAPABILITIES``; a config model in :mod:`mailers.config`; a branch below; the warehouse
contract tests (``tests/adapters/test_warehouse_contract.py``) run against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Self

from mailers.bigquery_config import BigQueryWarehouseConfig
from mailers.config import (
    DuckDBWarehouseConfig,
    PostgresWarehouseConfig,
    Settings,
    WarehouseConfig,
)
from mailers.snowflake_config import SnowflakeWarehouseConfig
from mailers.warehouse import Warehouse


class OpenWarehouse(Warehouse, Protocol):
    """A connected warehouse: use it in a ``with`` block, or :meth:`close` it."""

    def close(self) -> None:
        """Release the connection (a DuckDB file's lock with it)."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


def open_warehouse(settings: Settings, *, read_only: bool = False) -> OpenWarehouse:
    """Connect to the warehouse the config names.

    ``read_only`` opens it for reading (a DuckDB file without taking the writer's lock; a
    Postgres session whose transactions are read-only; a Snowflake or BigQuery session
    that refuses Mailers' writes). Raises
    :class:`~mailers.errors.WarehouseBusy` when a DuckDB file's writer lock is held,
    :class:`~mailers.errors.WarehouseError` when it cannot connect,
    :class:`~mailers.errors.SecretMissing` when a password's or key's variable is unset, and
    :class:`~mailers.errors.ConfigError` naming the extra to install when the engine's
    driver is missing.
    """
    return connect(settings.config.warehouse, settings.data_dir, read_only=read_only)


def connect(config: WarehouseConfig, data_dir: Path, *, read_only: bool = False) -> OpenWarehouse:
    """Connect to the warehouse of ``config`` (a relative DuckDB path is under ``data_dir``)."""
    if isinstance(config, DuckDBWarehouseConfig):
        from adapters.warehouses.duckdb import DuckDBWarehouse

        in_memory = config.path == ":memory:"
        path = config.path if in_memory else (data_dir / config.path).resolve()
        return DuckDBWarehouse(path, read_only=read_only)
    if isinstance(config, PostgresWarehouseConfig):
        from adapters.warehouses.postgres import open_postgres

        password = (
            None if config.password is None else config.password.resolve("warehouse.password")
        )
        return open_postgres(config, password, read_only=read_only)
    if isinstance(config, BigQueryWarehouseConfig):
        from adapters.warehouses.bigquery import open_bigquery

        return open_bigquery(config, read_only=read_only)
    if isinstance(config, SnowflakeWarehouseConfig):
        from adapters.warehouses.snowflake import open_snowflake

        return open_snowflake(config, read_only=read_only)
    raise AssertionError(f"unhandled warehouse kind {config.kind!r}")


def warehouse_exists(settings: Settings) -> bool:
    """Whether there is a warehouse to read: a DuckDB file exists (opening a missing one
    read-only fails, and read-write creates it); a database server always is."""
    config = settings.config.warehouse
    if isinstance(config, DuckDBWarehouseConfig):
        return settings.warehouse_path.is_file()
    return True


def describe_warehouse(settings: Settings) -> str:
    """The warehouse, for messages: a DuckDB file's path, or a server's database and host
    (never a password)."""
    config = settings.config.warehouse
    if isinstance(config, DuckDBWarehouseConfig):
        return str(settings.warehouse_path)
    if isinstance(config, BigQueryWarehouseConfig):
        return f"BigQuery project {config.project} ({config.location})"
    if isinstance(config, SnowflakeWarehouseConfig):
        return config.describe()
    if config.dsn is not None:
        return "the Postgres database of warehouse.dsn"
    return f"Postgres database {config.database} on {config.host}:{config.port}"
