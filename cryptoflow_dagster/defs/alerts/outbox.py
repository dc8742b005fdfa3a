"""``gold/alerts``, the alert outbox, declared so the asset graph shows it: the sensors write it, nothing materializes it."""

import dagster as dg

ALERTS = dg.AssetSpec(
    ["gold", "alerts"],
    group_name="alerts",
    deps=[["silver", "trades"]],
    kinds={"ducklake", "slack"},
    description="Alert outbox: every market, check, run and sidecar alert, pending -> sent | failed, delivered at most once.",
)
