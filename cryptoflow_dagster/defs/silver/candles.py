"""Silver candles and Fear & Greed from bronze with Polars: typed, deduplicated, validated, one transaction per day."""


from datetime import date
from typing import TYPE_CHECKING

import dagster as dg
import duckdb

from cryptoflow_dagster import lake as lakehouse
from cryptoflow_dagster.defs.checks.batch import CANDLES_1D, CANDLES_1M, FEAR_GREED, results_for, specs_for
from cryptoflow_dagster.defs.freshness import DAILY_FRESHNESS
from cryptoflow_dagster.defs.lake_tables import add_row_counts, spec_metadata
from cryptoflow_dagster.defs.partitions import backfill_policy, daily_partitions, partition_days
from cryptoflow_dagster.resources import LakeResource
from cryptoflow_core.settings import Settings, load_settings

# The Polars batch code (batch.silver, batch.bronze, polars) is imported when an asset runs, not when the code
# location loads.
if TYPE_CHECKING:
    import polars as pl

    from cryptoflow_dagster.batch import silver


def rebuild_day(con: duckdb.DuckDBPyConnection, table: str, day: date, result: "silver.SilverResult") -> None:
    """Replace the day's silver rows and the dead letters this table rejected that day, together or not at all."""

    def work(c: duckdb.DuckDBPyConnection) -> None:
        c.execute(f"DELETE FROM {table} WHERE day = ?", [day])
        c.execute("DELETE FROM bronze.dead_letters WHERE source = ? AND day = ?", [table, day])
        lakehouse.insert(c, table, result.rows)
        lakehouse.insert(c, "bronze.dead_letters", result.dead_letters)

    lakehouse.write(con, work)


def _bronze_candles(con: duckdb.DuckDBPyConnection, day: date, interval: str) -> "pl.DataFrame":
    return con.execute(
        "SELECT exchange, market, interval, candle_start, raw_json, ingest_time FROM bronze.candles_raw "
        "WHERE day = ? AND interval = ?",
        [day, interval],
    ).pl()


def _build_candles(context: dg.AssetExecutionContext, lake: LakeResource, interval: str) -> dg.MaterializeResult:
    from cryptoflow_dagster.batch import silver  # see the TYPE_CHECKING import above
    from cryptoflow_dagster.batch.bronze import expected_minutes

    table = f"silver.candles_{interval}"
    key = CANDLES_1M if interval == "1m" else CANDLES_1D
    days = partition_days(context)
    totals = {"rows": 0, "dead_letters": 0, "duplicates_dropped": 0, "minutes_without_candle": 0}
    with lake.connect() as con:
        for n, day in enumerate(days, start=1):
            result = silver.candles(_bronze_candles(con, day, interval), interval, run_id=context.run.run_id)
            rebuild_day(con, table, day, result)
            totals["rows"] += result.rows.height
            totals["dead_letters"] += result.dead_letters.height
            totals["duplicates_dropped"] += result.duplicates_dropped
            if interval == "1m" and result.rows.height:
                gaps = silver.missing_minutes(result.rows, expected_minutes(day))
                totals["minutes_without_candle"] += int(gaps["missing"].sum())
            context.log.info(
                f"{table} {n}/{len(days)} days ({day}): {result.rows.height} rows, "
                f"{result.dead_letters.height} dead letters, {result.duplicates_dropped} older duplicates dropped"
            )
        checks = results_for(key, con, days[0], days[-1])
        add_row_counts(context, con, key, days)
    if interval == "1d":
        totals.pop("minutes_without_candle")
    return dg.MaterializeResult(metadata={**totals, "days": len(days)}, check_results=checks)


def candles_1m(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    return _build_candles(context, lake, "1m")


def candles_1d(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    return _build_candles(context, lake, "1d")


def fear_greed(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    import polars as pl  # see the TYPE_CHECKING import above

    from cryptoflow_dagster.batch import silver

    days = partition_days(context)
    with lake.connect() as con:
        bronze_rows = con.execute(
            "SELECT day, raw_json, ingest_time FROM bronze.fear_greed_raw WHERE day >= ? AND day <= ?", [days[0], days[-1]]
        ).pl()
        result = silver.fear_greed(bronze_rows, run_id=context.run.run_id)
        for day in days:
            rebuild_day(
                con,
                "silver.fear_greed",
                day,
                silver.SilverResult(
                    result.rows.filter(pl.col("day") == day), result.dead_letters.filter(pl.col("day") == day), 0
                ),
            )
        checks = results_for(FEAR_GREED, con, days[0], days[-1])
        add_row_counts(context, con, FEAR_GREED, days)
    return dg.MaterializeResult(
        metadata={"rows": result.rows.height, "dead_letters": result.dead_letters.height, "days": len(days)},
        check_results=checks,
    )


def silver_candle_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    """Silver candles and Fear & Greed, partitioned by the settings' UTC days."""
    common = dict(
        group_name="silver",
        partitions_def=daily_partitions(settings),
        backfill_policy=backfill_policy(settings),
        kinds={"polars", "duckdb"},
        freshness_policy=DAILY_FRESHNESS,
    )
    return [
        dg.asset(
            key=CANDLES_1M,
            metadata=spec_metadata(CANDLES_1M),
            deps=[["bronze", "candles_raw"]],
            check_specs=specs_for(CANDLES_1M),
            description=(
                "1-minute OHLCV per (exchange, market, ts) from bronze.candles_raw: latest ingest wins, invalid rows go to "
                "bronze.dead_letters with the reason. Minutes without trades stay absent and are counted."
            ),
            **common,
        )(candles_1m),
        dg.asset(
            key=CANDLES_1D,
            metadata=spec_metadata(CANDLES_1D),
            # After candles_1m, which it is checked against: day candles must equal their 1-minute candles.
            deps=[["bronze", "candles_raw"], CANDLES_1M],
            check_specs=specs_for(CANDLES_1D),
            description=(
                "Day candles (00:00 UTC) per (exchange, market, day) from bronze.candles_raw, validated like the 1-minute ones "
                "and checked against them."
            ),
            **common,
        )(candles_1d),
        dg.asset(
            key=FEAR_GREED,
            metadata=spec_metadata(FEAR_GREED),
            deps=[["bronze", "fear_greed_raw"]],
            check_specs=specs_for(FEAR_GREED),
            description="Fear & Greed per day: integer value 0..100 and its classification.",
            **common,
        )(fear_greed),
    ]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=silver_candle_assets(load_settings()))
