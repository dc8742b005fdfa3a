"""The intraday marts as daily-partitioned assets: a backfill of a day recomputes them whole from ``silver.trades``.

The streaming job refreshes the same tables in each micro-batch's transaction (ADR 0004); this is the day rebuild.
"""

from datetime import datetime, timezone

import dagster as dg

from cryptoflow_core.settings import Settings, load_settings
from cryptoflow_dagster.defs.freshness import STREAMING_FRESHNESS
from cryptoflow_dagster.defs.lake_tables import add_row_counts, spec_metadata
from cryptoflow_dagster.defs.partitions import backfill_policy, daily_partitions, partition_days
from cryptoflow_dagster.defs.silver.trades import SILVER_TRADES
from cryptoflow_dagster.streaming.day_rebuild import rebuild_gold_day
from cryptoflow_dagster.resources import LakeResource

GOLD_KEYS = [dg.AssetKey(["gold", t]) for t in ("ohlcv_1m_from_trades", "market_stats_24h", "kimchi_premium_1m")]


def intraday_gold_from_trades(context: dg.AssetExecutionContext, lake: LakeResource):
    """1-minute OHLCV, 24-hour stats and the kimchi premium recomputed for whole days from silver.trades."""
    totals: dict[str, int] = {}
    days = partition_days(context)
    with lake.connect() as con:
        for day in days:
            for table, n in rebuild_gold_day(con, day, datetime.now(timezone.utc)).items():
                totals[table] = totals.get(table, 0) + n
        for key in GOLD_KEYS:
            add_row_counts(context, con, key, days)
    for key in GOLD_KEYS:
        yield dg.MaterializeResult(asset_key=key, metadata={"rows_by_table": dg.MetadataValue.json(totals)})


def intraday_gold_assets(settings: Settings) -> dg.AssetsDefinition:
    return dg.multi_asset(
        specs=[
            dg.AssetSpec(key, deps=[SILVER_TRADES], group_name="gold", kinds={"duckdb"}, metadata=spec_metadata(key),
                         freshness_policy=STREAMING_FRESHNESS)
            for key in GOLD_KEYS
        ],
        partitions_def=daily_partitions(settings, through_today=True),
        backfill_policy=backfill_policy(settings),
    )(intraday_gold_from_trades)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[intraday_gold_assets(load_settings())])
