"""Dagster definitions of the `ops` domain: the operational tables as assets, and a health asset the UI plots over time.

``ops/ingested_files`` and ``ops/gaps`` are written by the streaming job and gap repair, ``gold/alerts`` by the alert
outbox: they are declared (not materialized here) so the asset graph shows where they come from. ``ops/platform_health``
is materialized every 5 minutes; its numeric metadata (lag, dead letters, open gaps, alerts) becomes charts in the UI.
"""

from datetime import datetime, timezone

import dagster as dg

from cryptoflow_dagster.ops.health import health_figures
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

defs = dg.Definitions(
    assets=[INGESTED_FILES, GAPS, ALERTS, platform_health],
    jobs=[platform_health_job],
    schedules=[
        dg.ScheduleDefinition(
            job=platform_health_job, cron_schedule="*/5 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING
        )
    ],
)
