"""Jobs, schedules and the landed-events sensor.

* ``mailers_pipeline``: everything, in lineage order (what ``mailers demo`` runs);
* ``send__<workspace>__<campaign>``: one campaign's segment, audience and sends, then the
  records and marts downstream; recurring campaigns get a schedule on it, in their time
  zone, and each tick is its own send window;
* ``ingest_events``: load landed provider events and rebuild the marts, launched by the
  ``landed_events`` sensor when new files land;
* the ``deferred_due`` sensor launches a campaign's send job for a window whose messages
  the sending policy deferred, once the first of them is eligible (a backfill when the
  window is no longer the campaign's current one);
* the ``paused_resumed`` sensor launches it for a window whose messages a pause held, once
  every pause that held them is resumed.
"""

from __future__ import annotations

import json
from datetime import datetime

import dagster as dg

from adapters.serve.s3_mirror import mirror_landing
from mailers import clock
from mailers.config import Settings
from mailers.deferrals import DeferralNotes, DeferredWindow
from mailers.ingest import landed_files
from mailers.paused_windows import PausedNotes, PausedWindow
from mailers.pauses import PauseBoard
from mailers.windows import send_window
from orchestration.defs.campaigns import audience_key, segment_key, sends_key
from orchestration.defs.records import EVENTS_KEY, LEDGER_KEY, SUPPRESSIONS_KEY
from orchestration.defs.runs import ACTOR_TAG, BACKFILL_TAG, SEND_WINDOW_TAG

INGEST_JOB = "ingest_events"
SENSOR_MIRROR_OBJECTS = 1000
"""S3 objects one ``landed_events`` tick mirrors at most, to stay well within a tick's time."""


def _send_job_name(workspace: str, campaign: str) -> str:
    return f"send__{workspace}__{campaign}"


def jobs_and_schedules(settings: Settings) -> dg.Definitions:
    """A job per campaign (scheduled when recurring), the pipeline and the ingest job."""
    jobs: list[dg.UnresolvedAssetJobDefinition] = [
        dg.define_asset_job(
            "mailers_pipeline",
            selection=dg.AssetSelection.all(),
            description="Every segment, audience, send, record and mart, in lineage order.",
        ),
        dg.define_asset_job(
            INGEST_JOB,
            # The ledger's record and models too: every mart is rebuilt, also after a run
            # whose paused sends skipped them.
            selection=dg.AssetSelection.assets(
                LEDGER_KEY, EVENTS_KEY, SUPPRESSIONS_KEY
            ).downstream(),
            description="Load landed provider events, then rebuild the marts.",
        ),
    ]
    schedules = []
    for ref in settings.campaigns():
        selection = dg.AssetSelection.assets(segment_key(ref)).upstream() | (
            dg.AssetSelection.assets(audience_key(ref), sends_key(ref)).downstream()
        )
        job = dg.define_asset_job(
            _send_job_name(ref.workspace, ref.name),
            selection=selection,
            description=f"Send {ref.qualified_name} for the current window.",
            tags={"workspace": ref.workspace, "campaign": ref.name},
        )
        jobs.append(job)
        if ref.config.schedule is not None:
            schedules.append(
                dg.ScheduleDefinition(
                    name=f"{job.name}__schedule",
                    job=job,
                    cron_schedule=ref.config.schedule.cron,
                    execution_timezone=ref.config.schedule.timezone,
                    description=f"One send window of {ref.qualified_name} per tick.",
                    default_status=dg.DefaultScheduleStatus.STOPPED,
                )
            )
    sensors = [
        landed_events_sensor(settings),
        deferred_due_sensor(settings, jobs),
        paused_resumed_sensor(settings, jobs),
    ]
    return dg.Definitions(jobs=jobs, schedules=schedules, sensors=sensors)


def deferred_due_sensor(
    settings: Settings, jobs: list[dg.UnresolvedAssetJobDefinition]
) -> dg.SensorDefinition:
    """Send deferred messages once eligible: reads the deferral notes, never the warehouse.

    The run key names the window and its eligibility time, so one note launches one run;
    the next send of the window rewrites the note with its next eligible time.
    """
    by_name = {job.name: job for job in jobs}
    send_jobs = [by_name[_send_job_name(ref.workspace, ref.name)] for ref in settings.campaigns()]

    @dg.sensor(
        name="deferred_due",
        jobs=send_jobs or [by_name[INGEST_JOB]],
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Send messages deferred by warm-up curves and caps once they are eligible.",
    )
    def deferred_due(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        now = clock.utcnow()
        requests = [
            request
            for note in DeferralNotes(settings.data_dir).due(now)
            if (request := _window_request(settings, note, "deferred_due", note.eligible_at))
        ]
        if not requests:
            return dg.SensorResult(skip_reason="no deferred messages are eligible yet")
        return dg.SensorResult(run_requests=requests)

    return deferred_due


def paused_resumed_sensor(
    settings: Settings, jobs: list[dg.UnresolvedAssetJobDefinition]
) -> dg.SensorDefinition:
    """Finish windows a pause stopped once it is resumed: reads the paused-window notes and
    the pause state file, never the warehouse.

    The run key names the window and when its note was written, so one note launches one
    run; that run rewrites (or removes) the note.
    """
    by_name = {job.name: job for job in jobs}
    send_jobs = [by_name[_send_job_name(ref.workspace, ref.name)] for ref in settings.campaigns()]

    @dg.sensor(
        name="paused_resumed",
        jobs=send_jobs or [by_name[INGEST_JOB]],
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Send the messages a pause held once every pause holding them is resumed.",
    )
    def paused_resumed(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        notes = PausedNotes(settings.data_dir).resumable(PauseBoard(settings.data_dir))
        requests = [
            request
            for note in notes
            if (request := _window_request(settings, note, "paused_resumed", note.noted_at))
        ]
        if not requests:
            return dg.SensorResult(skip_reason="no paused window has been resumed")
        return dg.SensorResult(run_requests=requests)

    return paused_resumed


def _window_request(
    settings: Settings, note: DeferredWindow | PausedWindow, sensor: str, moment: datetime
) -> dg.RunRequest | None:
    """The run that sends the rest of a noted window (a backfill when it is not the
    campaign's current window); None for a campaign no longer configured."""
    try:
        ref = settings.campaign(note.qualified_campaign)
    except KeyError:
        return None
    current = send_window(ref.config.schedule, clock.now())
    tags = {SEND_WINDOW_TAG: note.send_window, ACTOR_TAG: f"sensor:{sensor}"}
    if note.send_window != current:
        tags[BACKFILL_TAG] = "true"
    return dg.RunRequest(
        run_key=f"{sensor}-{ref.qualified_name}-{note.send_window}-{moment.isoformat()}",
        job_name=_send_job_name(ref.workspace, ref.name),
        tags=tags,
    )


def landed_events_sensor(settings: Settings) -> dg.SensorDefinition:
    """Launch ingestion when new event files land (it reads the file system, not DuckDB).

    The cursor is the newest landing-file modification time seen; ingestion itself skips
    files already loaded, so a repeated request is harmless. With ``serve.landing.kind:
    s3`` it first mirrors up to :data:`SENSOR_MIRROR_OBJECTS` new objects into the
    landing dir (the run's events asset mirrors the rest).
    """

    @dg.sensor(
        name="landed_events",
        job_name=INGEST_JOB,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Ingest provider events as soon as new landing files appear.",
    )
    def landed_events(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        try:
            mirror_landing(settings, max_objects=SENSOR_MIRROR_OBJECTS)
        except Exception as err:  # S3 unreachable: local files still count, the next tick retries
            context.log.warning(f"mirroring the S3 landing zone failed: {err}")
        seen = json.loads(context.cursor) if context.cursor else {"mtime": 0.0}
        newest = seen["mtime"]
        fresh = 0
        for landed in landed_files(settings.landing_dir):
            mtime = landed.path.stat().st_mtime
            if mtime > seen["mtime"]:
                fresh += 1
                newest = max(newest, mtime)
        if not fresh:
            return dg.SensorResult(skip_reason="no new landing files")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"landed-{newest}")],
            cursor=json.dumps({"mtime": newest}),
        )

    return landed_events
