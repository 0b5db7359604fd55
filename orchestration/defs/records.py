"""The record-keeping assets: the send ledger after sends, and event ingestion."""

from collections.abc import Iterator, Sequence

import dagster as dg

from adapters.providers.registry import (
    backfill_targets,
    bulk_event_parser,
    event_parser,
    poll_targets,
)
from adapters.serve.s3_mirror import mirror_landing
from mailers.audit import AUDIT_TABLE, AuditAction, AuditRecord, append_audit
from mailers.backfill import backfill_into_landing, open_windows
from mailers.config import Settings
from mailers.ingest import ingest
from mailers.ledger import LEDGER_TABLE, latest_rows_sql
from mailers.polling import poll_into_landing
from mailers.warehouse import MAILERS_SCHEMA, Warehouse
from orchestration.defs.checks import poll_errors_result, provider_events_check_specs
from orchestration.defs.resources import WAREHOUSE_POOL, MailersResource
from orchestration.defs.runs import run_actor

LEDGER_KEY = dg.AssetKey([MAILERS_SCHEMA, LEDGER_TABLE])
EVENTS_KEY = dg.AssetKey([MAILERS_SCHEMA, "events"])
SUPPRESSIONS_KEY = dg.AssetKey([MAILERS_SCHEMA, "suppressions"])
AUDIT_KEY = dg.AssetKey([MAILERS_SCHEMA, AUDIT_TABLE])
CONTACTS_KEY = dg.AssetKey(["crm", "contacts"])

external_tables = [
    dg.AssetSpec(
        CONTACTS_KEY,
        group_name="sources",
        description="Contacts from your CRM sync (the demo seeds example rows).",
    ),
    dg.AssetSpec(
        AUDIT_KEY,
        group_name="records",
        description="Append-only audit log: one row per send or ingestion action.",
    ),
]


def ledger_asset(sends: Sequence[dg.AssetKey]) -> dg.AssetsDefinition:
    """The send ledger, observed after every campaign's sends."""

    @dg.asset(
        key=LEDGER_KEY,
        deps=list(sends),
        group_name="records",
        pool=WAREHOUSE_POOL,
        kinds={"duckdb"},
        description=(
            "Append-only send ledger: every send decision, before and after each provider "
            "call. Materializing reports messages by latest status, in-doubt ones included."
        ),
    )
    def send_ledger(mailers: MailersResource) -> dg.MaterializeResult:
        settings = mailers.settings()
        with mailers.warehouse(settings) as warehouse:
            rows = warehouse.query(
                f"select status, count(*) as n from ({latest_rows_sql(warehouse)}) as latest "
                "group by status"
            ).to_pylist()
        by_status = {f"messages_{row['status']}": row["n"] for row in rows}
        return dg.MaterializeResult(
            metadata={"messages": sum(row["n"] for row in rows), **by_status}
        )

    return send_ledger


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            EVENTS_KEY,
            deps=[LEDGER_KEY],
            group_name="records",
            kinds={"duckdb"},
            description="Canonical provider events, append-only, unique by event id.",
        ),
        dg.AssetSpec(
            SUPPRESSIONS_KEY,
            deps=[LEDGER_KEY],
            group_name="records",
            kinds={"duckdb"},
            description=(
                "Central suppression list, append-only: operator entries, imports, hard "
                "bounces and complaints (workspace), unsubscribes (stream), and removals."
            ),
        ),
    ],
    check_specs=provider_events_check_specs(EVENTS_KEY),
    pool=WAREHOUSE_POOL,
)
def provider_events(
    context: dg.AssetExecutionContext, mailers: MailersResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Load landed provider event files into events and suppressions, exactly once each."""
    settings = mailers.settings()
    polled, poll_errors = _poll_providers(context, settings)
    mirrored = _mirror_s3_landing(context, settings, poll_errors)
    with mailers.warehouse(settings) as warehouse:
        backfilled = _backfill_providers(context, settings, warehouse, poll_errors)
        with bulk_event_parser() as bulk:
            report = ingest(warehouse, settings.landing_dir, event_parser, bulk=bulk)
        report.counts["events_polled"] = polled
        report.counts["events_backfilled"] = backfilled
        report.counts["s3_objects_mirrored"] = mirrored
        report.counts["poll_errors"] = len(poll_errors)
        append_audit(
            warehouse,
            [
                AuditRecord(
                    run_id=context.run.run_id,
                    actor=run_actor(context),
                    action=AuditAction.INGEST_EVENTS,
                    config_hash=settings.config_hash,
                    counts=report.counts,
                    detail={"events_by_type": report.by_type, "poll_errors": poll_errors},
                )
            ],
        )
    context.log.info(f"ingested {report.counts}")
    yield dg.MaterializeResult(
        asset_key=EVENTS_KEY,
        metadata={**report.counts, **{f"type_{k}": v for k, v in report.by_type.items()}},
    )
    yield dg.MaterializeResult(
        asset_key=SUPPRESSIONS_KEY,
        metadata={"suppressions_added": report.counts["suppressions_added"]},
    )
    yield poll_errors_result(EVENTS_KEY, poll_errors)


def _poll_providers(
    context: dg.AssetExecutionContext, settings: Settings
) -> tuple[int, dict[str, str]]:
    """Poll every account with ``poll_events``; one failing account does not stop the rest."""
    polled, errors = 0, {}
    for target in poll_targets(settings):
        try:
            polled += poll_into_landing(settings.landing_dir, target)
        except Exception as err:  # any provider failure: report it, keep polling the others
            errors[target.account] = f"{type(err).__name__}: {err}"
            context.log.warning(f"polling {target.account} failed: {err}")
    return polled, errors


def _mirror_s3_landing(
    context: dg.AssetExecutionContext, settings: Settings, errors: dict[str, str]
) -> int:
    """Copy webhooks landed in S3 (``serve.landing.kind: s3``) into the landing dir; a
    failure joins ``errors`` (the files already local are still ingested)."""
    try:
        return mirror_landing(settings)
    except Exception as err:  # S3 unreachable: nothing is lost, the next run lists again
        errors["s3_landing"] = f"{type(err).__name__}: {err}"
        context.log.warning(f"mirroring the S3 landing zone failed: {err}")
        return 0


def _backfill_providers(
    context: dg.AssetExecutionContext,
    settings: Settings,
    warehouse: Warehouse,
    errors: dict[str, str],
) -> int:
    """Fetch the events of messages still without a final event from the providers'
    events APIs into the landing zone (:mod:`mailers.backfill`); failures join ``errors``."""
    windows = open_windows(warehouse, settings.config.completeness)
    if not windows:
        return 0
    report = backfill_into_landing(settings.landing_dir, backfill_targets(settings), windows)
    for account, error in report.errors.items():
        errors[account] = f"backfill: {error}"
        context.log.warning(f"backfilling {account} failed: {error}")
    return report.total
