"""``gold/alerts``, the alert outbox, declared so the asset graph shows it: the sensors write it, nothing materializes it."""

import dagster as dg

from cryptoflow_dagster.defs.lake_tables import table_metadata

ALERTS = dg.AssetSpec(
    ["gold", "alerts"],
    group_name="alerts",
    deps=[["silver", "trades"]],
    kinds={"ducklake", "slack"},
    metadata=table_metadata("gold.alerts"),
    description="Alert outbox: every market, check, run and sidecar alert, pending -> sent | failed, delivered at most once.",
)
