"""``ops/platform_health``, materialized every 5 minutes: its numeric metadata (lag, dead letters, open gaps, alerts)
becomes charts in the UI."""

from datetime import datetime, timezone

import dagster as dg

from cryptoflow_dagster.defs.alerts.outbox import ALERTS
from cryptoflow_dagster.defs.streaming.ledger import GAPS, INGESTED_FILES
from cryptoflow_dagster.health import health_figures
from cryptoflow_dagster.resources import LakeResource


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
platform_health_schedule = dg.ScheduleDefinition(
    job=platform_health_job, cron_schedule="*/5 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)
