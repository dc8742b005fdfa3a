"""Lake maintenance (docs/decisions/0017): the asset ``ops/lake_health`` runs maintenance steps and records what they
did and the lake's state as numeric metadata, so the UI plots them over time.

Two jobs materialize it, on schedules from the settings (UTC, running by default), never two at a time (the run
queue's ``cryptoflow/lake-maintenance`` limit, and a host lock for instances whose dagster.yaml predates that limit):

- ``lake_maintenance`` (``CRYPTOFLOW_LAKE_MAINTENANCE_CRON``, every 10 minutes): old files deleted, inlined rows
  flushed, delete-heavy files rewritten, small files merged, snapshots older than the retention expired and those
  older than the thin-after setting thinned to the last of each minute;
- ``lake_catalog_upkeep`` (``CRYPTOFLOW_LAKE_CATALOG_UPKEEP_CRON``, daily): orphaned files deleted, the catalog
  vacuumed and analyzed.

Materialized from the UI without config it runs the ``lake_maintenance`` steps.
"""

import time

import dagster as dg

from cryptoflow_core.host_lock import HostLock
from cryptoflow_core.settings import Settings, load_settings
from cryptoflow_dagster.defs.lake_tables import table_metadata
from cryptoflow_dagster.defs.streaming.ledger import INGESTED_FILES
from cryptoflow_dagster.instance import LAKE_MAINTENANCE_TAG
from cryptoflow_dagster.maintenance import lake_upkeep
from cryptoflow_dagster.resources import LakeResource

INGEST_COMMITS = dg.AssetSpec(
    ["ops", "ingest_commits"],
    group_name="ops",
    deps=[INGESTED_FILES.key],
    kinds={"ducklake"},
    metadata=table_metadata("ops.ingest_commits"),
    description="Commit times of the lake transactions that ingested landing files, copied from DuckLake's snapshots "
    "by lake maintenance before it expires them: `cryptoflow slo` reads them after expiry.",
)


class LakeMaintenanceConfig(dg.Config):
    steps: list[str] = list(lake_upkeep.COMPACT_STEPS)  # of COMPACT_STEPS and CATALOG_STEPS, run in this order


@dg.asset(
    key=["ops", "lake_health"],
    group_name="ops",
    deps=[INGEST_COMMITS.key],
    kinds={"ducklake"},
    description="Lake maintenance steps (compaction, snapshot expiry, file cleanup, catalog upkeep) and the lake's "
    "health after them: live files per table, snapshots, catalog size; numeric metadata the UI plots over time.",
)
def lake_health(
    context: dg.AssetExecutionContext, config: LakeMaintenanceConfig, lake: LakeResource
) -> dg.MaterializeResult:
    settings = lake.settings()
    with _one_pass_at_a_time(settings, context):
        with lake.connect() as con:
            report = lake_upkeep.run_steps(con, settings, config.steps)
            health = lake_upkeep.lake_health(con)
    context.log.info(
        f"lake maintenance ({', '.join(config.steps)}): merged {report.files_merged} files, rewrote "
        f"{report.files_rewritten}, flushed {report.rows_flushed} inlined rows, expired {report.snapshots_expired} "
        f"snapshots, deleted {report.files_deleted + report.orphans_deleted} files ({report.bytes_freed / 1e6:.1f} MB) "
        f"in {report.seconds:.1f} s; {report.turns} writer turns, the longest {report.longest_turn_s:.2f} s; "
        f"{health['live_files']} live files, {health['snapshots']} snapshots, "
        f"catalog {health['catalog_bytes'] / 1e6:.1f} MB"
    )
    metadata: dict[str, dg.MetadataValue] = {
        name: dg.MetadataValue.float(value) for name, value in report.figures().items()
    }
    metadata.update({name: dg.MetadataValue.float(float(value)) for name, value in health.items()})
    metadata["steps"] = dg.MetadataValue.text(",".join(config.steps))
    return dg.MaterializeResult(metadata=metadata)


class _one_pass_at_a_time:
    """A host lock beside the lake: a second maintenance pass waits for the first (logged when it had to)."""

    def __init__(self, settings: Settings, context: dg.AssetExecutionContext) -> None:
        self.lock = HostLock(settings.home / "locks" / "lake-maintenance.lock")
        self.context = context

    def __enter__(self) -> None:
        started = time.monotonic()
        self.lock.hold(what="lake maintenance", warn_every_s=60.0)
        if time.monotonic() - started > 1.0:
            self.context.log.info(f"waited {time.monotonic() - started:.1f} s for another lake maintenance pass")

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


_TAGS = {LAKE_MAINTENANCE_TAG: "true"}
_OP = "ops__lake_health"

lake_maintenance_job = dg.define_asset_job(
    "lake_maintenance",
    selection=[lake_health.key],
    config=dg.RunConfig(ops={_OP: LakeMaintenanceConfig(steps=list(lake_upkeep.COMPACT_STEPS))}),
    tags=_TAGS,
    description="Lake compaction and expiry: old files deleted, inlined rows flushed, delete-heavy files rewritten, "
    "small files merged, snapshots past the retention expired and older ones than an hour (the thin-after setting) "
    "thinned to one a minute (each step a table or a bounded batch per writer turn).",
)
lake_catalog_upkeep_job = dg.define_asset_job(
    "lake_catalog_upkeep",
    selection=[lake_health.key],
    config=dg.RunConfig(ops={_OP: LakeMaintenanceConfig(steps=list(lake_upkeep.CATALOG_STEPS))}),
    tags=_TAGS,
    description="Orphaned lake files deleted, then the catalog vacuumed and analyzed (SQLite or Postgres).",
)


def schedules(settings: Settings) -> list[dg.ScheduleDefinition]:
    return [
        dg.ScheduleDefinition(name="lake_maintenance_schedule", job=lake_maintenance_job,
                              cron_schedule=settings.lake_maintenance_cron, execution_timezone="UTC",
                              default_status=dg.DefaultScheduleStatus.RUNNING),
        dg.ScheduleDefinition(name="lake_catalog_upkeep_schedule", job=lake_catalog_upkeep_job,
                              cron_schedule=settings.lake_catalog_upkeep_cron, execution_timezone="UTC",
                              default_status=dg.DefaultScheduleStatus.RUNNING),
    ]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[INGEST_COMMITS, lake_health],
        jobs=[lake_maintenance_job, lake_catalog_upkeep_job],
        schedules=schedules(load_settings()),
    )
