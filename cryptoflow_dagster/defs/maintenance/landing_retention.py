"""The ``landing_retention`` job: deletes old landing files the lake already holds, daily at 00:45 UTC."""

from datetime import datetime, timedelta, timezone

import dagster as dg

from cryptoflow_dagster.maintenance.landing_retention import prune_landing
from cryptoflow_dagster.resources import LakeResource


@dg.op(description="Deletes landing files older than CRYPTOFLOW_LANDING_RETENTION_DAYS that ops.ingested_files holds.")
def prune_landing_files(context: dg.OpExecutionContext, lake: LakeResource) -> None:
    settings = lake.settings()
    if settings.landing_retention_days <= 0:
        context.log.info("CRYPTOFLOW_LANDING_RETENTION_DAYS=0: every landing file is kept")
        return
    cutoff = datetime.now(timezone.utc) - timedelta(days=settings.landing_retention_days)
    with lake.connect() as con:
        report = prune_landing(con, settings.landing_dir, cutoff)
    context.log.info(
        f"landing retention (before {cutoff:%Y-%m-%d %H:%M} UTC): deleted {report.deleted_files} files "
        f"({report.deleted_bytes / 1e6:.1f} MB) and {report.removed_dirs} empty day folders; "
        f"kept {report.kept_not_ingested} old files that are not in the lake yet"
    )


@dg.job(name="landing_retention", description="Daily housekeeping of the landing folder (never deletes un-ingested files).")
def landing_retention_job() -> None:
    prune_landing_files()


landing_retention_schedule = dg.ScheduleDefinition(
    job=landing_retention_job, cron_schedule="45 0 * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)
