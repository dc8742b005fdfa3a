"""Dagster definitions of the `ops` domain: the operational tables as assets, and a health asset the UI plots over time.

``ops/ingested_files`` and ``ops/gaps`` are written by the streaming job and gap repair, ``gold/alerts`` by the alert
outbox: they are declared (not materialized here) so the asset graph shows where they come from. ``ops/platform_health``
is materialized every 5 minutes; its numeric metadata (lag, dead letters, open gaps, alerts) becomes charts in the UI.
The ``landing_retention`` job deletes old landing files the lake already holds, daily at 00:45 UTC.
"""

from datetime import datetime, timedelta, timezone

import dagster as dg

from cryptoflow_dagster.ops.health import health_figures
from cryptoflow_dagster.ops.retention import prune_landing
from cryptoflow_dagster.resources import LakeResource

INGESTED_FILES = dg.AssetSpec(
    ["ops", "ingested_files"],
    group_name="ops",
    deps=[["bronze", "trades_raw"]],
    kinds={"ducklake"},
    description="Exactly-once ledger: every landing file the streaming job committed, with its row count and run id.",
)
GAPS = dg.AssetSpec(
    ["ops", "gaps"],
    group_name="ops",
    deps=[["silver", "trades"]],
    kinds={"ducklake"},
    description="Trade gaps found (Binance id holes, Upbit disconnect windows, sidecar downtime) and their REST repair.",
)
ALERTS = dg.AssetSpec(
    ["gold", "alerts"],
    group_name="alerts",
    deps=[["silver", "trades"]],
    kinds={"ducklake", "slack"},
    description="Alert outbox: every market, check, run and sidecar alert, pending -> sent | failed, delivered at most once.",
)


@dg.asset(
    key=["ops", "platform_health"],
    group_name="ops",
    deps=[INGESTED_FILES.key, GAPS.key, ALERTS.key],
    kinds={"duckdb"},
    description="Health figures of the platform, recorded as numeric metadata so the UI plots them over time.",
)
def platform_health(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    settings = lake.settings()
    with lake.connect() as con:
        figures = health_figures(con, datetime.now(timezone.utc), settings.landing_dir)
    context.log.info("platform health: %s", figures)
    return dg.MaterializeResult(metadata={name: dg.MetadataValue.float(float(v)) for name, v in figures.items()})


platform_health_job = dg.define_asset_job("platform_health", selection=[platform_health.key])


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

defs = dg.Definitions(
    assets=[INGESTED_FILES, GAPS, ALERTS, platform_health],
    jobs=[platform_health_job, landing_retention_job],
    schedules=[
        dg.ScheduleDefinition(
            job=landing_retention_job, cron_schedule="45 0 * * *", default_status=dg.DefaultScheduleStatus.RUNNING
        ),
        dg.ScheduleDefinition(
            job=platform_health_job, cron_schedule="*/5 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING
        )
    ],
)
