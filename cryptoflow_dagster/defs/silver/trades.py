"""``silver/trades`` as a daily-partitioned asset: a backfill of a day rebuilds the day from bronze.

The streaming job writes the same table incrementally (defs/streaming/jobs.py); this asset is how a day is made whole
again after a fix (a parser change, a repaired gap, a bad run): delete the day, recompute it, in one transaction,
idempotently. ``bronze/trades_raw`` is declared beside it: the stream and gap repair write it, nothing materializes it.
"""

from datetime import datetime, timezone

import dagster as dg

from cryptoflow_core.settings import Settings, load_settings
from cryptoflow_dagster.defs.freshness import STREAMING_FRESHNESS
from cryptoflow_dagster.defs.lake_tables import add_row_counts, spec_metadata
from cryptoflow_dagster.defs.partitions import backfill_policy, daily_partitions, partition_days
from cryptoflow_dagster.streaming.day_rebuild import rebuild_silver_day
from cryptoflow_dagster.resources import LakeResource

BRONZE_TRADES = dg.AssetKey(["bronze", "trades_raw"])
SILVER_TRADES = dg.AssetKey(["silver", "trades"])


def silver_trades(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    rows = 0
    days = partition_days(context)
    with lake.connect() as con:
        for day in days:
            n = rebuild_silver_day(con, day, datetime.now(timezone.utc))
            context.log.info("silver.trades %s rebuilt: %d rows", day, n)
            rows += n
        add_row_counts(context, con, SILVER_TRADES, days)
    return dg.MaterializeResult(metadata={"rows": rows})


def trade_assets(settings: Settings) -> list:
    # The batch layers' UTC days plus today: the stream writes today as it goes, and a rebuild of today (after a
    # repair, say) must be possible before the day is over.
    daily = daily_partitions(settings, through_today=True)
    return [
        dg.AssetSpec(
            BRONZE_TRADES,
            group_name="raw",
            partitions_def=daily,
            kinds={"ducklake"},
            metadata=spec_metadata(BRONZE_TRADES),
            freshness_policy=STREAMING_FRESHNESS,
            description="Every trade message as received (WebSocket micro-batches and REST gap repair), append-only.",
        ),
        dg.asset(
            key=SILVER_TRADES,
            deps=[BRONZE_TRADES],
            partitions_def=daily,
            backfill_policy=backfill_policy(settings),
            group_name="silver",
            kinds={"duckdb"},
            metadata=spec_metadata(SILVER_TRADES),
            freshness_policy=STREAMING_FRESHNESS,
            description="One row per (exchange, market, trade_id): typed, deduplicated trades (streaming job + day rebuilds).",
        )(silver_trades),
    ]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=trade_assets(load_settings()))
