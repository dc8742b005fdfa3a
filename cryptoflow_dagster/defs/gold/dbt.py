"""The gold marts built by dbt (dbt_project/), one Dagster asset per model; dbt data tests are their asset checks."""

import dagster as dg
from dagster_dbt import DbtCliInvocation, DbtCliResource, dbt_assets
from dagster_dbt.errors import DagsterDbtCliRuntimeError

from cryptoflow_core.retry import jittered
from cryptoflow_dagster import lake
from cryptoflow_dagster.dbt_project import (
    dbt_environment,
    ensure_manifest,
    gold_dbt_project,
    prepare_lake,
    run_target_path,
)
from cryptoflow_dagster.defs.gold.translator import GoldDbtTranslator
from cryptoflow_dagster.defs.lake_tables import COLUMN_SCHEMA, ROW_COUNT, table_of, table_rows
from cryptoflow_dagster.resources import LakeResource

def gold_dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource, lake: LakeResource):
    settings = lake.settings()
    prepare_lake(settings)
    with dbt_environment(settings):
        invocation = dbt.cli(
            ["build"], context=context, target_path=run_target_path(settings, context.run.run_id)
        )
    try:
        for event in invocation.stream():
            yield with_table_metadata(context, lake, event)
    except DagsterDbtCliRuntimeError as exc:
        if not only_lost_races(invocation):
            raise
        # Like lake.write, which dbt's commits do not go through: the build is run again after a jittered pause (table
        # models are rebuilt whole, so a rerun leaves the same tables). tests/test_concurrency_backfill.py found this.
        raise dg.RetryRequested(max_retries=LOST_RACE_RETRIES, seconds_to_wait=5 + jittered(10.0, "full")) from exc


def with_table_metadata(context: dg.AssetExecutionContext, lake_resource: LakeResource, event):
    """A model's output with ``dagster/row_count`` and ``dagster/column_schema`` read from the lake once dbt built it.

    dagster-dbt's own ``fetch_row_counts()`` / ``fetch_column_metadata()`` cannot reach this lake: they open dbt's
    adapter in-process with the profile's ``path`` made absolute and read-only, and the profile's ``:memory:`` database
    (the lake is ATTACHed to it) becomes a file ``dbt_project/:memory:`` that does not exist. Counted here through
    the lake module instead, right after each model's event (the table is committed; dbt goes on with the next).
    """
    if not isinstance(event, dg.Output):
        return event
    table = table_of(context.asset_key_for_output(event.output_name))
    schema_name, _, name = table.partition(".")
    try:
        with lake_resource.connect() as con:
            rows = table_rows(con, table)
            columns = con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = ? AND schema_name = ? "
                "AND table_name = ? ORDER BY column_index", [lake.CATALOG, schema_name, name]).fetchall()
    except Exception as exc:  # metadata only: a failed count never fails the build
        context.log.warning(f"row count and columns of {table} left out: {exc}")
        return event
    schema = dg.TableSchema(columns=[dg.TableColumn(c, t) for c, t in columns])
    return event.with_metadata({**event.metadata, ROW_COUNT: rows, COLUMN_SCHEMA: schema})


# A model whose commit collided with another lake writer's (a backfill or streaming run) fails with "database is locked".
LOST_RACE_RETRIES = 5


def only_lost_races(invocation: DbtCliInvocation) -> bool:
    """Did the build fail only because commits lost a race (no failed data test, no other error)?"""
    try:
        results = invocation.get_artifact("run_results.json")["results"]
    except (OSError, ValueError, KeyError):
        return False
    failed = [r for r in results if r.get("status") in ("error", "fail", "runtime error")]
    return bool(failed) and all(r.get("status") == "error" and lake.is_retryable(r.get("message") or "") for r in failed)


def gold_dbt_assets() -> dg.AssetsDefinition:
    """One asset per dbt model, from the manifest, which is parsed here when the dbt files changed since it was
    written (a stat of each file otherwise): when the code location loads, never at import or on every run."""
    ensure_manifest()
    return dbt_assets(
        manifest=gold_dbt_project.manifest_path,
        project=gold_dbt_project,
        dagster_dbt_translator=GoldDbtTranslator(),
        name="gold_dbt",
        # one dbt writer at a time on the lake: DuckLake on SQLite refuses concurrent commits
        pool="gold_dbt",
    )(gold_dbt)


@dg.definitions
def defs() -> dg.Definitions:
    assets = gold_dbt_assets()
    automation = dg.AutomationConditionSensorDefinition(
        "gold_automation",
        target=dg.AssetSelection.assets(assets),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
    )
    return dg.Definitions(assets=[assets], sensors=[automation])
