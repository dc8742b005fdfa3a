"""Dagster definitions of the `gold` domain: the daily marts built by dbt, run automatically after silver updates."""

import dagster as dg

from cryptoflow_dagster.defs.gold.assets import gold_dbt_assets

gold_automation = dg.AutomationConditionSensorDefinition(
    "gold_automation",
    target=dg.AssetSelection.assets(gold_dbt_assets),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)

defs = dg.Definitions(assets=[gold_dbt_assets], sensors=[gold_automation])
