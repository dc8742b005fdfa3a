"""The gold marts built by dbt (dbt_project/), one Dagster asset per model; dbt data tests are their asset checks."""

import dagster as dg
from dagster_dbt import DbtCliResource, dbt_assets

from cryptoflow_dagster.dbt_project import (
    dbt_environment,
    ensure_manifest,
    gold_dbt_project,
    prepare_lake,
    run_target_path,
)
from cryptoflow_dagster.defs.gold.translator import GoldDbtTranslator
from cryptoflow_dagster.settings import load_settings

# Parsed here once when the dbt files changed (a stat of each file otherwise), never on every run.
ensure_manifest()


@dbt_assets(
    manifest=gold_dbt_project.manifest_path,
    project=gold_dbt_project,
    dagster_dbt_translator=GoldDbtTranslator(),
    name="gold_dbt",
    # one dbt writer at a time on the lake: DuckLake on SQLite refuses concurrent commits
    pool="gold_dbt",
)
def gold_dbt_assets(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    settings = load_settings()
    prepare_lake(settings)
    with dbt_environment(settings):
        invocation = dbt.cli(
            ["build"], context=context, target_path=run_target_path(settings, context.run.run_id)
        )
    yield from invocation.stream()
