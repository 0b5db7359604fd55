"""Two assets per configured campaign: its audience, then its sends.

Keys are ``[workspace, campaign, "audience"]`` and ``[workspace, campaign, "sends"]``; the
audience depends on the campaign's dbt segment model, so lineage in the UI reads
contacts → segment → audience → sends → ledger → events → marts.
"""

from collections.abc import Iterator

import dagster as dg

from adapters.providers.registry import event_parser
from mailers.audience import AudienceSpec, disposition_counts, resolve
from mailers.audit import AuditAction, AuditRecord, append_audit
from mailers.claims import WindowClaim
from mailers.config import CampaignRef, Settings
from mailers.control import ControlJournal, load_control
from mailers.deferrals import DeferralNotes, deferred_in_window
from mailers.errors import MailersError
from mailers.identity_changes import record_identity_changes
from mailers.late_suppressions import LandedSuppressions
from mailers.ledger import LedgerContext, LedgerStatus, LedgerWriter
from mailers.ledger_journal import send_warehouse
from mailers.outcomes import window_outcome
from mailers.pause_rules import LiveRules
from mailers.paused_windows import PausedNotes
from mailers.pauses import PauseBoard
from mailers.preflight import require_environment
from mailers.send_control import SendControl
from mailers.sending import CampaignSender, SendContext
from mailers.suppression_blocks import PendingBlocks
from mailers.warehouse import WORK_SCHEMA, Warehouse
from orchestration.defs.checks import sends_check_results, sends_check_specs, unfinished_failure
from orchestration.defs.resources import WAREHOUSE_POOL, MailersResource
from orchestration.defs.runs import run_actor, run_send_window, run_window


def audience_key(campaign: CampaignRef) -> dg.AssetKey:
    return dg.AssetKey([campaign.workspace, campaign.name, "audience"])


def sends_key(campaign: CampaignRef) -> dg.AssetKey:
    return dg.AssetKey([campaign.workspace, campaign.name, "sends"])


def segment_key(campaign: CampaignRef) -> dg.AssetKey:
    return dg.AssetKey(["segments", campaign.config.segment])


def campaign_assets(campaign: CampaignRef) -> list[dg.AssetsDefinition]:
    """The audience and sends assets of one campaign."""
    qualified = campaign.qualified_name
    tags = {"workspace": campaign.workspace, "stream": str(campaign.config.stream)}

    @dg.asset(
        key=audience_key(campaign),
        deps=[segment_key(campaign)],
        group_name=campaign.workspace,
        pool=WAREHOUSE_POOL,
        kinds={"duckdb"},
        tags=tags,
        description=f"Who {qualified} sends to this window, and who it skips and why.",
    )
    def audience(
        context: dg.AssetExecutionContext, mailers: MailersResource
    ) -> dg.MaterializeResult:
        settings = mailers.settings()
        ref = settings.campaign(qualified)
        window = run_window(context, ref)
        with mailers.warehouse(settings) as warehouse:
            ledger = LedgerWriter(warehouse, LedgerContext.of(ref, window, context.run.run_id))
            table = resolve(warehouse, AudienceSpec.of(ref, window), ledger.settled_keys_sql())
            counts = disposition_counts(warehouse, table)
        context.log.info(f"{qualified} window {window}: {counts}")
        return dg.MaterializeResult(metadata={"send_window": window, "table": table, **counts})

    @dg.asset(
        key=sends_key(campaign),
        deps=[audience_key(campaign)],
        group_name=campaign.workspace,
        pool=WAREHOUSE_POOL,
        kinds={"duckdb", "email"},
        tags=tags,
        description=f"Messages of {qualified} rendered, routed and handed to providers.",
        check_specs=sends_check_specs(sends_key(campaign)),
    )
    def sends(
        context: dg.AssetExecutionContext, mailers: MailersResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        settings = mailers.settings()
        ref = settings.campaign(qualified)
        request = run_send_window(context, ref)
        window = request.window
        actor = run_actor(context)
        require_environment(settings, [ref])
        spec = AudienceSpec.of(ref, window)
        with (
            mailers.warehouse(settings) as opened,
            WindowClaim.acquire(opened, LedgerContext.of(ref, window, context.run.run_id)) as claim,
            send_warehouse(opened, settings, context.run.run_id) as warehouse,
        ):
            record_identity_changes(warehouse, settings, actor=actor, run_id=context.run.run_id)
            if claim.took_over is not None:
                context.log.warning(
                    f"run {claim.took_over.run_id} stopped renewing its claim on window {window} "
                    f"of {qualified} (lease lapsed at "
                    f"{claim.took_over.expires_at:%Y-%m-%dT%H:%M:%SZ}): this run took the window "
                    "over and settles what that run left dispatching as unknown"
                )
            table = _resolved_audience(warehouse, spec, window, qualified)
            control = send_control(settings, warehouse, ref)
            audience_counts = disposition_counts(warehouse, table)
            context_ = SendContext(
                settings=settings,
                campaign=ref,
                send_window=window,
                run_id=context.run.run_id,
                unsubscribe_key=_unsubscribe_key(settings, ref),
                actor=actor,
            )
            with mailers.providers(settings, ref.workspace) as providers:
                sender = CampaignSender(
                    warehouse,
                    context_,
                    providers,
                    before_dispatch=claim.ensure_held,
                    lookups=mailers.lookups(settings, ref.workspace),
                    quotas=mailers.daily_quotas(settings, ref.workspace),
                    control=control,
                )
                report = sender.run(table)
            # Pauses and resumes written while the send held the warehouse land now.
            load_control(warehouse, control.board.journal)
            counts = {**audience_counts, **report.as_counts()}
            detail: dict[str, object] = {
                "accepted_by_account": dict(report.accounts),
                "accounts_down": report.down_accounts,
                "backfill": request.is_backfill,
            }
            if request.is_backfill:
                detail["backfill_requested_by"] = actor
            if claim.took_over is not None:
                detail["took_over_window_from"] = claim.took_over.run_id
            if report.paused_by:
                detail["paused_by"] = {k: p.describe() for k, p in report.paused_by.items()}
            window_ledger = LedgerWriter(
                warehouse, LedgerContext.of(ref, window, context.run.run_id)
            )
            outcome = window_outcome(window_ledger)
            # The run summary: what the run did (counts) and where the window stands after.
            record = AuditRecord(
                run_id=context.run.run_id,
                actor=actor,
                action=AuditAction.SEND,
                config_hash=settings.config_hash,
                counts=counts,
                detail=detail,
                workspace=ref.workspace,
                stream=str(ref.config.stream),
                campaign=ref.name,
                send_window=window,
                scope=f"campaign:{ref.workspace}.{ref.name}",
                reason=f"backfill of window {window} requested by {actor}"
                if request.is_backfill
                else f"send of window {window}",
                after=outcome.by_status(),
            )
            append_audit(warehouse, [record])
            deferred = deferred_in_window(warehouse, window_ledger)
            DeferralNotes(settings.data_dir).update(ref.workspace, ref.name, window, deferred)
            PausedNotes(settings.data_dir).update(
                ref.workspace,
                ref.name,
                window,
                outcome.count(LedgerStatus.PAUSED),
                report.paused_by,
            )
        metadata: dict[str, str | int | bool] = {
            "send_window": window,
            "backfill": request.is_backfill,
            **counts,
            **{f"accepted_via_{name}": n for name, n in report.accounts.items()},
        }
        if counts.get("reconciled_unknown"):
            context.log.warning(
                f"{counts['reconciled_unknown']} messages of {qualified} (window {window}) "
                "were in flight when an earlier run of this window died: settled as unknown "
                "and not re-sent (reconciliation or provider events settle them)"
            )
        if deferred is not None:
            metadata["deferred_waiting"] = deferred.messages
            metadata["deferred_next_eligible_utc"] = deferred.eligible_at.isoformat()
            context.log.info(
                f"{deferred.messages} messages of {qualified} (window {window}) are deferred "
                f"by the sending policy; the first become eligible at "
                f"{deferred.eligible_at:%Y-%m-%d %H:%M} UTC (the deferred_due sensor sends them)"
            )
        if counts.get("unknown"):
            context.log.warning(
                f"{counts['unknown']} messages of {qualified} have an unknown outcome; they "
                "will not be re-sent (provider events settle them)"
            )
        for pause in report.paused_by.values():
            context.log.warning(
                f"{qualified} (window {window}): {pause.describe()}; its messages are recorded "
                f"paused, nothing of them was handed over (mailers resume {pause.scope.key} "
                "--reason ... lifts it; the paused_resumed sensor then finishes the window)"
            )
        failure = unfinished_failure(outcome, qualified, window, metadata, report.paused_by)
        if failure is None:
            yield dg.MaterializeResult(metadata=metadata)
        # Checks follow the materialization they judge; a failing run still reports them.
        yield from sends_check_results(sends_key(ref), outcome)
        if failure is not None:
            raise failure

    return [audience, sends]


def _resolved_audience(
    warehouse: Warehouse, spec: AudienceSpec, window: str, qualified: str
) -> str:
    """The audience table of ``spec``, once sure it was resolved for this window."""
    if warehouse.columns(WORK_SCHEMA, spec.table) is None:
        raise MailersError(
            f"the audience of {qualified} has not been resolved yet: materialize its "
            "audience asset first"
        )
    table = warehouse.relation(WORK_SCHEMA, spec.table)
    windows = warehouse.query(f"select distinct mailers_send_window as w from {table}")[
        "w"
    ].to_pylist()
    if windows and windows != [window]:
        raise MailersError(
            f"the audience of {qualified} was resolved for window {windows[0]}, but this run "
            f"sends window {window}: materialize the audience asset in this run first"
        )
    return table


def send_control(settings: Settings, warehouse: Warehouse, ref: CampaignRef) -> SendControl:
    """The pause board and late checks of a send of ``ref``, with pending control records
    (pauses written while no run held the warehouse) loaded first: before every batch the
    automatic pause rules judge the feedback landed so far."""
    journal = ControlJournal(settings.data_dir)
    board = PauseBoard(settings.data_dir, journal)
    load_control(warehouse, journal)
    board.restore(warehouse)
    rules = LiveRules(warehouse, settings, board, event_parser)
    return SendControl(
        board,
        ref.workspace,
        str(ref.config.stream),
        ref.name,
        checks=[rules.check],
        blockers=[
            PendingBlocks(journal).reasons,
            LandedSuppressions(warehouse, rules.feedback).reasons,
        ],
    )


def _unsubscribe_key(settings: Settings, campaign: CampaignRef) -> str | None:
    if not campaign.config.stream.needs_unsubscribe:
        return None
    return settings.config.unsubscribe.signing_key.resolve("unsubscribe.signing_key")


def all_campaign_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    """Audience and sends assets for every configured campaign."""
    return [asset for ref in settings.campaigns() for asset in campaign_assets(ref)]
