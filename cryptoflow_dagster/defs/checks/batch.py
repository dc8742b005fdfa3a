"""Asset checks on the batch bronze and silver tables, per partition (the run's days), numbers and samples in metadata.

Blocking checks guard what gold builds on: a failure stops downstream assets in the same run.
"""


from collections.abc import Callable

import dagster as dg

from cryptoflow_dagster.batch import quality
from cryptoflow_dagster.defs.raw.partitions import partition_days
from cryptoflow_dagster.resources import LakeResource

BRONZE_CANDLES = dg.AssetKey(["bronze", "candles_raw"])
CANDLES_1M = dg.AssetKey(["silver", "candles_1m"])
CANDLES_1D = dg.AssetKey(["silver", "candles_1d"])
FEAR_GREED = dg.AssetKey(["silver", "fear_greed"])


def _result(outcome: quality.Outcome, severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    metadata = {k: v for k, v in outcome.metadata.items()}
    if outcome.offending:
        metadata["sample"] = dg.MetadataValue.json(outcome.offending)
    return dg.AssetCheckResult(passed=outcome.passed, severity=severity, metadata=metadata)


def _range_check(
    name: str,
    asset: dg.AssetKey,
    description: str,
    measure: Callable,
    *,
    blocking: bool = True,
    additional_deps: list[dg.AssetKey] | None = None,
) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        name=name, asset=asset, blocking=blocking, description=description, additional_deps=additional_deps or []
    )
    def _check(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        days = partition_days(context)
        with lake.connect(read_only=True) as con:
            return _result(measure(con, days[0], days[-1]))

    return _check


checks = [
    _range_check(
        "unique_key", BRONZE_CANDLES, "No unique_key twice in the partition (a rebuild replaces, never appends).",
        lambda con, a, b: quality.duplicates(con, "bronze.candles_raw", ["unique_key"], a, b),
    ),
    _range_check(
        "row_count", CANDLES_1M,
        "Per market-day: silver rows + dead letters = minutes the exchange returned a candle for, at most the day's minutes.",
        quality.candles_1m_row_count,
    ),
    _range_check(
        "unique_ts", CANDLES_1M, "One row per (exchange, market, ts).",
        lambda con, a, b: quality.duplicates(con, "silver.candles_1m", ["exchange", "market", "ts"], a, b),
    ),
    _range_check(
        "ohlc_consistent", CANDLES_1M, "Prices > 0, volumes >= 0, low <= open, close <= high.",
        lambda con, a, b: quality.ohlc_consistency(con, "silver.candles_1m", "ts", a, b),
    ),
    _range_check(
        "dead_letter_rate", CANDLES_1M, f"At most {quality.DEAD_LETTER_RATE_MAX:.0%} of the bronze 1m rows rejected.",
        lambda con, a, b: quality.dead_letter_rate(
            con, "silver.candles_1m", "SELECT count(*) FROM bronze.candles_raw WHERE interval = '1m' AND day BETWEEN ? AND ?", a, b
        ),
    ),
    _range_check(
        "unique_day", CANDLES_1D, "One row per (exchange, market, day).",
        lambda con, a, b: quality.duplicates(con, "silver.candles_1d", ["exchange", "market", "day"], a, b),
    ),
    _range_check(
        "ohlc_consistent", CANDLES_1D, "Prices > 0, volumes >= 0, low <= open, close <= high.",
        lambda con, a, b: quality.ohlc_consistency(con, "silver.candles_1d", "day", a, b),
    ),
    _range_check(
        "matches_1m", CANDLES_1D,
        "Each day candle equals its 1-minute candles: first open, max high, min low, last close, summed volume.",
        quality.day_matches_minutes, additional_deps=[CANDLES_1M],
    ),
    _range_check(
        "unique_day", FEAR_GREED, "One value per day.",
        lambda con, a, b: quality.duplicates(con, "silver.fear_greed", ["day"], a, b),
    ),
    _range_check("value_range", FEAR_GREED, "Values within 0..100.", quality.fear_greed_values),
]


@dg.asset_check(
    name="freshness", asset=CANDLES_1M, blocking=False,
    description=f"The newest day in silver.candles_1m is at most {quality.FRESHNESS_DAYS} days old (warns, does not block).",
)
def candles_1m_freshness(lake: LakeResource) -> dg.AssetCheckResult:
    with lake.connect(read_only=True) as con:
        return _result(quality.freshness(con, "silver.candles_1m"), dg.AssetCheckSeverity.WARN)


checks.append(candles_1m_freshness)
