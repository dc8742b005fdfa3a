"""Bronze -> silver with Polars: parse raw_json, type, deduplicate (latest ingest wins), validate.

Rows that fail validation come back as dead letters with the reason; nothing is dropped silently. Fields are read by
JSON path, so a field the exchange adds tomorrow is ignored instead of breaking the load, and one that goes missing
turns into a dead letter naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

# Where each silver column sits in each exchange's raw item: Upbit objects by name, Binance kline arrays by position.
CANDLE_FIELDS = {
    "open": ("$.opening_price", "$[1]"),
    "high": ("$.high_price", "$[2]"),
    "low": ("$.low_price", "$[3]"),
    "close": ("$.trade_price", "$[4]"),
    "volume": ("$.candle_acc_trade_volume", "$[5]"),
    "quote_volume": ("$.candle_acc_trade_price", "$[7]"),
}
PRICES = ("open", "high", "low", "close")
FEAR_GREED_CLASSES = ("Extreme Fear", "Fear", "Neutral", "Greed", "Extreme Greed")

DEAD_LETTER_SCHEMA = {
    "received_at": pl.Datetime("us", "UTC"),
    "source": pl.String,
    "batch_file": pl.String,
    "raw": pl.Binary,
    "error": pl.String,
    "exchange": pl.String,
    "market": pl.String,
    "ingest_run_id": pl.String,
    "day": pl.Date,
}


@dataclass(frozen=True)
class SilverResult:
    rows: pl.DataFrame
    dead_letters: pl.DataFrame
    duplicates_dropped: int


def latest_per_key(frame: pl.DataFrame, keys: list[str]) -> tuple[pl.DataFrame, int]:
    """One row per key, the most recently ingested; also how many older copies were dropped."""
    deduped = frame.sort("ingest_time", maintain_order=True).unique(subset=keys, keep="last", maintain_order=True)
    return deduped, frame.height - deduped.height


def _field(column: str) -> pl.Expr:
    upbit_path, binance_path = CANDLE_FIELDS[column]
    raw = pl.col("raw_json")
    text = pl.when(pl.col("exchange") == "upbit").then(raw.str.json_path_match(upbit_path)).otherwise(raw.str.json_path_match(binance_path))
    return text.cast(pl.Float64, strict=False).alias(column)


def candle_rejection() -> pl.Expr:
    """The first rule a parsed candle breaks, as a readable reason; null when it is valid."""
    missing = pl.concat_str(
        [pl.when(pl.col(c).is_null()).then(pl.lit(c + " ")).otherwise(pl.lit("")) for c in CANDLE_FIELDS]
    ).str.strip_chars()
    lo, hi = pl.min_horizontal("open", "close"), pl.max_horizontal("open", "close")
    return (
        pl.when(missing != "")
        .then(pl.lit("missing or non-numeric field(s): ") + missing)
        .when(pl.any_horizontal([pl.col(c) <= 0 for c in PRICES]))
        .then(pl.lit("price <= 0"))
        .when((pl.col("volume") < 0) | (pl.col("quote_volume") < 0))
        .then(pl.lit("volume < 0"))
        .when(pl.col("low") > lo)
        .then(pl.lit("low above open/close"))
        .when(pl.col("high") < hi)
        .then(pl.lit("high below open/close"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )


def _dead_letters(rejected: pl.DataFrame, source: str, run_id: str, day_col: str = "day") -> pl.DataFrame:
    if rejected.is_empty():
        return pl.DataFrame(schema=DEAD_LETTER_SCHEMA)
    return rejected.select(
        pl.col("ingest_time").alias("received_at"),
        pl.lit(source).alias("source"),
        pl.lit(None, dtype=pl.String).alias("batch_file"),
        pl.col("raw_json").cast(pl.Binary).alias("raw"),
        pl.col("reason").alias("error"),
        (pl.col("exchange") if "exchange" in rejected.columns else pl.lit(None, dtype=pl.String)).alias("exchange"),
        (pl.col("market") if "market" in rejected.columns else pl.lit(None, dtype=pl.String)).alias("market"),
        pl.lit(run_id).alias("ingest_run_id"),
        pl.col(day_col).alias("day"),
    ).cast(DEAD_LETTER_SCHEMA)


def candles(bronze: pl.DataFrame, interval: str, *, run_id: str) -> SilverResult:
    """``silver.candles_1m`` (interval ``1m``) or ``silver.candles_1d`` (``1d``) from ``bronze.candles_raw`` rows."""
    # The UTC day comes from the candle itself, so dead letters carry their partition whatever columns bronze sent.
    frame = bronze.filter(pl.col("interval") == interval).with_columns(day=pl.col("candle_start").dt.date())
    frame, duplicates = latest_per_key(frame, ["exchange", "market", "candle_start"])
    parsed = frame.with_columns(*[_field(c) for c in CANDLE_FIELDS]).with_columns(reason=candle_rejection())
    good = parsed.filter(pl.col("reason").is_null())
    if interval == "1d":
        keys = [pl.col("candle_start").dt.date().alias("day")]
    else:
        keys = [pl.col("candle_start").alias("ts")]
    rows = good.select(
        "exchange", "market", *keys, *CANDLE_FIELDS, "ingest_time",
        *([pl.col("candle_start").dt.date().alias("day")] if interval != "1d" else []),
    ).sort("exchange", "market", "ts" if interval != "1d" else "day")
    source = f"silver.candles_{interval}"
    return SilverResult(rows, _dead_letters(parsed.filter(pl.col("reason").is_not_null()), source, run_id), duplicates)


def fear_greed(bronze: pl.DataFrame, *, run_id: str) -> SilverResult:
    """``silver.fear_greed`` from ``bronze.fear_greed_raw``: value 0..100, one of the five published classes."""
    frame, duplicates = latest_per_key(bronze, ["day"])
    raw = pl.col("raw_json")
    parsed = frame.with_columns(
        value=raw.str.json_path_match("$.value").cast(pl.Int32, strict=False),
        classification=raw.str.json_path_match("$.value_classification"),
    ).with_columns(
        reason=pl.when(pl.col("value").is_null())
        .then(pl.lit("missing or non-integer value"))
        .when((pl.col("value") < 0) | (pl.col("value") > 100))
        .then(pl.lit("value outside 0..100"))
        .when(~pl.col("classification").is_in(FEAR_GREED_CLASSES) | pl.col("classification").is_null())
        .then(pl.lit("unknown classification"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    rows = parsed.filter(pl.col("reason").is_null()).select("day", "value", "classification", "ingest_time").sort("day")
    return SilverResult(rows, _dead_letters(parsed.filter(pl.col("reason").is_not_null()), "silver.fear_greed", run_id), duplicates)


def missing_minutes(rows_1m: pl.DataFrame, expected: int) -> pl.DataFrame:
    """Per (exchange, market, day): candles present and minutes without one (no trades: left absent, never invented)."""
    return (
        rows_1m.group_by("exchange", "market", "day")
        .agg(pl.len().alias("candles"))
        .with_columns(missing=pl.lit(expected) - pl.col("candles"))
        .sort("exchange", "market", "day")
    )
