"""The resource every Mailers asset uses: config, warehouse and providers, from one place.

DuckDB allows one writer process per file, so every asset that writes the warehouse runs
in the :data:`WAREHOUSE_POOL` concurrency pool; the instance config shipped in
``.dagster/dagster.yaml`` limits pools to one step at a time, across runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import dagster as dg

from adapters.providers.registry import account_quotas, build_providers, message_lookups
from adapters.settings import load
from adapters.warehouses import OpenWarehouse, open_warehouse
from mailers.config import Settings
from mailers.ledger_journal import journal_dir, recover_journals
from mailers.providers import Provider
from mailers.reconcile import MessageLookup
from mailers.tables import ensure_tables

WAREHOUSE_POOL = "mailers_warehouse"


class MailersResource(dg.ConfigurableResource):
    """Mailers' config file and what it points at.

    ``config_path`` defaults to ``$MAILERS_CONFIG`` or ``./mailers.yaml``.
    """

    config_path: str | None = None

    def settings(self) -> Settings:
        """The validated config (read afresh, so an edited file takes effect next run)."""
        return load(self.config_path)

    @contextmanager
    def warehouse(self, settings: Settings) -> Iterator[OpenWarehouse]:
        """An open warehouse with Mailers' tables in place; closed on exit."""
        with open_warehouse(settings) as warehouse:
            ensure_tables(warehouse)
            # Ledger rows a killed send left in its journal reach the warehouse (and dbt).
            recover_journals(warehouse, journal_dir(settings.data_dir))
            yield warehouse

    def lookups(self, settings: Settings, workspace: str) -> Mapping[str, MessageLookup]:
        """The provider records of one workspace's accounts that can settle doubt."""
        return message_lookups(settings, workspace)

    def daily_quotas(self, settings: Settings, workspace: str) -> dict[str, int]:
        """Daily quotas the providers publish for accounts with ``quota_from_provider``."""
        accounts = settings.config.workspaces[workspace].provider_accounts
        if not any(a.pacing.quota_from_provider for a in accounts.values()):
            return {}
        return {
            name: quota.max_24_hour_send
            for name, quota in account_quotas(settings, workspace).items()
            if quota.max_24_hour_send is not None and accounts[name].pacing.quota_from_provider
        }

    @contextmanager
    def providers(self, settings: Settings, workspace: str) -> Iterator[Mapping[str, Provider]]:
        """The provider accounts of one workspace; their connections close on exit."""
        providers = build_providers(settings, workspace)
        try:
            yield providers
        finally:
            for provider in providers.values():
                close = getattr(provider, "close", None)
                if close is not None:
                    close()
