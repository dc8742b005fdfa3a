"""Bronze assets over REST: every candle and Fear & Greed entry exactly as the API returned it, plus trace columns."""


import time
from datetime import datetime, timezone

import dagster as dg
from pydantic import Field

from cryptoflow_dagster import lake as lakehouse
from cryptoflow_dagster.batch.collect import INTERVALS, MarketDay, collect_days, fetch_candles, replace_day, select_markets
from cryptoflow_dagster.clients.resources import BinanceResource, FearGreedResource, UpbitResource
from cryptoflow_dagster.defs.checks.batch import BRONZE_CANDLES, results_for, specs_for
from cryptoflow_dagster.defs.freshness import DAILY_FRESHNESS
from cryptoflow_dagster.defs.lake_tables import add_row_counts, spec_metadata
from cryptoflow_dagster.defs.partitions import backfill_policy, daily_partitions, partition_days
from cryptoflow_dagster.resources import LakeResource
from cryptoflow_core.settings import Settings, load_settings

BRONZE_FEAR_GREED = dg.AssetKey(["bronze", "fear_greed_raw"])


class CandlesConfig(dg.Config):
    markets: list[str] = Field(
        default_factory=list,
        description="Upbit codes (KRW-BTC) and/or Binance symbols (BTCUSDT) to collect; empty = every configured market.",
    )
    workers: int = Field(default=4, description="Markets fetched at once; the clients keep all of them within the rate limits.")


def candles_raw(
    context: dg.AssetExecutionContext,
    config: CandlesConfig,
    lake: LakeResource,
    upbit: UpbitResource,
    binance: BinanceResource,
) -> dg.MaterializeResult:
    from cryptoflow_dagster.batch import bronze  # Polars: imported when the asset runs, not when the code location loads

    settings = lake.settings()
    pairs = select_markets(settings, config.markets)
    days = partition_days(context)
    run_id = context.run.run_id
    totals = {"rows": 0, "market_days": 0}
    started = time.monotonic()
    with upbit.client() as up, binance.client() as bn, lake.connect() as con:

        def fetch(md: MarketDay):
            pages = {interval: fetch_candles(md, interval, up, bn) for interval in INTERVALS}
            now = datetime.now(timezone.utc)
            frames = [bronze.candle_rows(md.exchange, md.market, i, p, run_id=run_id, ingest_time=now) for i, p in pages.items()]
            return frames[0].vstack(frames[1])

        # One queue of (day, market) for all workers; each finished day is written while the workers fetch on.
        for n, (day, fetched) in enumerate(collect_days(days, pairs, fetch, workers=config.workers), start=1):
            day_rows = replace_day(con, day, pairs, [frame for _, frame in fetched])
            totals["rows"] += day_rows
            totals["market_days"] += len(pairs)
            elapsed = time.monotonic() - started
            sent = up.http.stats["requests"] + bn.http.stats["requests"]
            context.log.info(
                f"bronze.candles_raw {n}/{len(days)} days ({day}): {day_rows} candles for {len(pairs)} markets, "
                f"{elapsed:.1f}s elapsed, {sent} requests ({sent / max(elapsed, 1e-9):.1f}/s)"
            )
        requests = {"upbit": up.http.stats["requests"], "binance": bn.http.stats["requests"]}
        limited = {"upbit_429": up.http.stats["429"], "binance_429": bn.http.stats["429"]}
        checks = results_for(BRONZE_CANDLES, con, days[0], days[-1])
        add_row_counts(context, con, BRONZE_CANDLES, days)
    return dg.MaterializeResult(
        check_results=checks,
        metadata={
            "rows": totals["rows"],
            "days": len(days),
            "markets": ", ".join(m for _, m in pairs),
            "requests": dg.MetadataValue.json(requests),
            "responses_429": dg.MetadataValue.json(limited),
        }
    )


def fear_greed_raw(context: dg.AssetExecutionContext, lake: LakeResource, fear_greed: FearGreedResource) -> dg.MaterializeResult:
    from cryptoflow_dagster.batch import bronze  # Polars: imported when the asset runs, not when the code location loads

    days = partition_days(context)
    with fear_greed.client() as client:
        page = client.days(days[0], days[-1])
    frame = bronze.fear_greed_rows(page, run_id=context.run.run_id, ingest_time=datetime.now(timezone.utc))
    with lake.connect() as con:
        for day in days:
            lakehouse.replace_rows(con, "bronze.fear_greed_raw", "day = ?", [day], frame.filter(frame["day"] == day))
        add_row_counts(context, con, BRONZE_FEAR_GREED, days)
    missing = sorted(set(days) - set(frame["day"].to_list()))
    if missing:
        context.log.warning(f"Fear & Greed has no entry for {len(missing)} day(s): {', '.join(map(str, missing[:10]))}")
    return dg.MaterializeResult(metadata={"rows": frame.height, "days": len(days), "days_without_entry": len(missing)})


def raw_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    """The bronze REST assets, partitioned by the settings' UTC days."""
    daily, policy = daily_partitions(settings), backfill_policy(settings)
    return [
        dg.asset(
            key=BRONZE_CANDLES,
            group_name="raw",
            check_specs=specs_for(BRONZE_CANDLES),
            partitions_def=daily,
            backfill_policy=policy,
            kinds={"python", "duckdb"},
            metadata=spec_metadata(BRONZE_CANDLES),
            freshness_policy=DAILY_FRESHNESS,
            description=(
                "Upbit 1-minute and day candles and Binance 1m/1d klines per UTC day and market, each response item verbatim in "
                "raw_json with the request parameters, ingest time and run id. A rebuild replaces each day's rows of the run's "
                "markets in one transaction. Run config `markets` selects a subset."
            ),
        )(candles_raw),
        dg.asset(
            key=BRONZE_FEAR_GREED,
            group_name="raw",
            partitions_def=daily,
            backfill_policy=policy,
            kinds={"python", "duckdb"},
            metadata=spec_metadata(BRONZE_FEAR_GREED),
            freshness_policy=DAILY_FRESHNESS,
            description="The alternative.me Fear & Greed index per UTC day, each entry as received; one transaction per day.",
        )(fear_greed_raw),
    ]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=raw_assets(load_settings()))
