"""How dbt nodes become Dagster assets: silver sources keep the silver assets' keys, every model is a gold asset."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtProject

from cryptoflow_dagster.defs.freshness import DAILY_FRESHNESS

GOLD_GROUP = "gold"

# Gold follows silver: a model runs after any of its silver inputs was updated (any partition; a backfill of many days
# in one run triggers one gold run when it is done), and waits while silver or itself is still running. Unlike
# AutomationCondition.eager() it does not wait for every silver partition to exist: gold is unpartitioned over daily
# partitioned silver, and eager()'s "no missing dependency" would block it for as long as any old day is missing.
GOLD_AUTOMATION = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after_silver_updates")


def gold_asset_key(resource_type: str, name: str) -> dg.AssetKey:
    """``source`` silver.<table> -> ["silver", <table>]; a model -> ["gold", <model>] (the contract's table name)."""
    if resource_type == "source":
        return dg.AssetKey(["silver", name])
    return dg.AssetKey(["gold", name])


class GoldDbtTranslator(DagsterDbtTranslator):
    def __init__(self) -> None:
        super().__init__(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        return gold_asset_key(dbt_resource_props["resource_type"], dbt_resource_props["name"])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return GOLD_GROUP if dbt_resource_props["resource_type"] != "source" else None

    def get_automation_condition(self, dbt_resource_props: Mapping[str, Any]) -> dg.AutomationCondition | None:
        return GOLD_AUTOMATION if dbt_resource_props["resource_type"] == "model" else None

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        # The marts are rebuilt after silver's daily run: they share its daily freshness policy (defs/freshness.py).
        spec = super().get_asset_spec(manifest, unique_id, project)
        if self.get_resource_props(manifest, unique_id)["resource_type"] == "model":
            spec = spec.replace_attributes(freshness_policy=DAILY_FRESHNESS)
        return spec
