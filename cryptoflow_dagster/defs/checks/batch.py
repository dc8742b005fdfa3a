"""Asset checks on the batch bronze and silver tables, per partition (the run's days), numbers and samples in metadata.

The checks are declared on the assets themselves (``check_specs``) and evaluated at the end of the asset's own step,
on the connection that just wrote the data: a separate ``@asset_check`` costs a step process each, and with ten checks
that dominated a backfill run's time. Blocking checks still guard what builds downstream: a failure stops the run there.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import dagster as dg
import duckdb

from cryptoflow_dagster.batch import quality

BRONZE_CANDLES = dg.AssetKey(["bronze", "candles_raw"])
CANDLES_1M = dg.AssetKey(["silver", "candles_1m"])
CANDLES_1D = dg.AssetKey(["silver", "candles_1d"])
FEAR_GREED = dg.AssetKey(["silver", "fear_greed"])

Measure = Callable[[duckdb.DuckDBPyConnection, date, date], quality.Outcome]


@dataclass(frozen=True)
class BatchCheck:
    asset: dg.AssetKey
    name: str
    description: str
    measure: Measure
    blocking: bool = True

    @property
    def severity(self) -> dg.AssetCheckSeverity:
        return dg.AssetCheckSeverity.ERROR if self.blocking else dg.AssetCheckSeverity.WARN

    def spec(self) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(self.name, asset=self.asset, description=self.description, blocking=self.blocking)

    def evaluate(self, con: duckdb.DuckDBPyConnection, first: date, last: date) -> dg.AssetCheckResult:
        outcome = self.measure(con, first, last)
        metadata = dict(outcome.metadata)
        if outcome.offending:
            metadata["sample"] = dg.MetadataValue.json(outcome.offending)
        return dg.AssetCheckResult(
            asset_key=self.asset, check_name=self.name, passed=outcome.passed, severity=self.severity, metadata=metadata
        )


CHECKS = [
    BatchCheck(
        BRONZE_CANDLES, "unique_key", "No unique_key twice in the partition (a rebuild replaces, never appends).",
        lambda con, a, b: quality.duplicates(con, "bronze.candles_raw", ["unique_key"], a, b),
    ),
    BatchCheck(
        CANDLES_1M, "row_count",
        "Per market-day: silver rows + dead letters = minutes the exchange returned a candle for, at most the day's minutes.",
        quality.candles_1m_row_count,
    ),
    BatchCheck(
        CANDLES_1M, "unique_ts", "One row per (exchange, market, ts).",
        lambda con, a, b: quality.duplicates(con, "silver.candles_1m", ["exchange", "market", "ts"], a, b),
    ),
    BatchCheck(
        CANDLES_1M, "ohlc_consistent", "Prices > 0, volumes >= 0, low <= open, close <= high.",
        lambda con, a, b: quality.ohlc_consistency(con, "silver.candles_1m", "ts", a, b),
    ),
    BatchCheck(
        CANDLES_1M, "dead_letter_rate", f"At most {quality.DEAD_LETTER_RATE_MAX:.0%} of the bronze 1m rows rejected.",
        lambda con, a, b: quality.dead_letter_rate(
            con, "silver.candles_1m", "SELECT count(*) FROM bronze.candles_raw WHERE interval = '1m' AND day BETWEEN ? AND ?", a, b
        ),
    ),
    BatchCheck(
        CANDLES_1M, "freshness",
        f"The newest day in silver.candles_1m is at most {quality.FRESHNESS_DAYS} days old (warns, does not block).",
        lambda con, a, b: quality.freshness(con, "silver.candles_1m"), blocking=False,
    ),
    BatchCheck(
        CANDLES_1D, "unique_day", "One row per (exchange, market, day).",
        lambda con, a, b: quality.duplicates(con, "silver.candles_1d", ["exchange", "market", "day"], a, b),
    ),
    BatchCheck(
        CANDLES_1D, "ohlc_consistent", "Prices > 0, volumes >= 0, low <= open, close <= high.",
        lambda con, a, b: quality.ohlc_consistency(con, "silver.candles_1d", "day", a, b),
    ),
    BatchCheck(
        CANDLES_1D, "matches_1m",
        "Each day candle equals its 1-minute candles: first open, max high, min low, last close, summed volume.",
        quality.day_matches_minutes,
    ),
    BatchCheck(
        FEAR_GREED, "unique_day", "One value per day.",
        lambda con, a, b: quality.duplicates(con, "silver.fear_greed", ["day"], a, b),
    ),
    BatchCheck(FEAR_GREED, "value_range", "Values within 0..100.", quality.fear_greed_values),
]


def specs_for(asset: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [check.spec() for check in CHECKS if check.asset == asset]


def results_for(asset: dg.AssetKey, con: duckdb.DuckDBPyConnection, first: date, last: date) -> list[dg.AssetCheckResult]:
    return [check.evaluate(con, first, last) for check in CHECKS if check.asset == asset]
