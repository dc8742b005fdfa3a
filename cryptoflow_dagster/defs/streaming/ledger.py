"""The streaming path's operational tables, declared so the asset graph shows where they come from.

The streaming job and gap repair write them (never materialized on their own).
"""

import dagster as dg

from cryptoflow_dagster.defs.lake_tables import table_metadata

INGESTED_FILES = dg.AssetSpec(
    ["ops", "ingested_files"],
    group_name="ops",
    deps=[["bronze", "trades_raw"]],
    kinds={"ducklake"},
    metadata=table_metadata("ops.ingested_files"),
    description="Exactly-once ledger: every landing file the streaming job committed, with its row count and run id.",
)
GAPS = dg.AssetSpec(
    ["ops", "gaps"],
    group_name="ops",
    deps=[["silver", "trades"]],
    kinds={"ducklake"},
    metadata=table_metadata("ops.gaps"),
    description="Trade gaps found (Binance id holes, Upbit disconnect windows, sidecar downtime) and their REST repair.",
)
