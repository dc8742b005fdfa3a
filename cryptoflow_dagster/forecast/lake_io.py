"""The forecasts' way in and out of the lake: 1-minute bars from ``silver.candles_1m`` in, rows of
``gold.volatility_forecast`` and ``gold.volatility_forecast_eval`` out (one transaction per day, through the lake module)."""

from __future__ import annotations

import json
import math
from datetime import date, datetime, time, timedelta, timezone

import duckdb
import pandas as pd
import polars as pl

from cryptoflow_dagster import lake
from cryptoflow_dagster.forecast.daily import DayForecasts
from cryptoflow_dagster.forecast.evaluation import Score
from cryptoflow_dagster.forecast.realized import Realized, daily_realized

INTERVAL = timedelta(minutes=1)  # silver.candles_1m's bars
FORECAST_TABLE = "gold.volatility_forecast"
EVAL_TABLE = "gold.volatility_forecast_eval"

FORECAST_SCHEMA = {
    "exchange": pl.String, "market": pl.String, "day": pl.Date, "model": pl.String, "horizon_days": pl.Int32,
    "forecast_vol": pl.Float64, "forecast_variance": pl.Float64, "train_start": pl.Date, "train_end": pl.Date,
    "made_at": pl.Datetime("us", "UTC"), "params_json": pl.String,
}
EVAL_SCHEMA = {
    "exchange": pl.String, "market": pl.String, "as_of": pl.Date, "model": pl.String, "horizon_days": pl.Int32,
    "n": pl.Int64, "qlike": pl.Float64, "mse": pl.Float64, "qlike_ratio": pl.Float64, "mse_ratio": pl.Float64,
    "dm_stat": pl.Float64, "dm_pvalue": pl.Float64, "dm_stat_mse": pl.Float64, "dm_pvalue_mse": pl.Float64,
}


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), timezone.utc)


def markets(con: duckdb.DuckDBPyConnection, before: date) -> list[tuple[str, str]]:
    """Every (exchange, market) with 1-minute bars before ``before``."""
    return [tuple(r) for r in con.execute(
        "SELECT DISTINCT exchange, market FROM silver.candles_1m WHERE ts < ? ORDER BY 1, 2", [_midnight(before)]
    ).fetchall()]


def realized(con: duckdb.DuckDBPyConnection, exchange: str, market: str, before: date) -> Realized:
    """Daily realized variance of one market from its 1-minute bars strictly before ``before`` (00:00 UTC)."""
    bars = con.execute(
        "SELECT ts, close FROM silver.candles_1m WHERE exchange = ? AND market = ? AND ts < ? ORDER BY ts",
        [exchange, market, _midnight(before)],
    ).pl().to_pandas()  # through Polars: DuckDB's own .df() trips a pandas deprecation warning
    return daily_realized(bars, INTERVAL)


def forecast_frame(exchange: str, market: str, result: DayForecasts, made_at: datetime) -> pl.DataFrame:
    rows = []
    for f in result.forecasts:
        if not (math.isfinite(f.variance) and f.variance > 0):
            # never written: a model that produced this is broken, and the check would fail on it anyway
            raise ValueError(f"{exchange} {market} {result.day} {f.model} h={f.horizon_days}: variance {f.variance}")
        rows.append({
            "exchange": exchange, "market": market, "day": result.day, "model": f.model, "horizon_days": f.horizon_days,
            "forecast_vol": math.sqrt(f.variance), "forecast_variance": f.variance, "train_start": f.train_start,
            "train_end": f.train_end, "made_at": made_at, "params_json": json.dumps(f.params, sort_keys=True),
        })
    return pl.DataFrame(rows, schema=FORECAST_SCHEMA)


def write_forecasts(con: duckdb.DuckDBPyConnection, day: date, frame: pl.DataFrame) -> int:
    """Replace the day's forecasts (every market) in one transaction."""
    return lake.replace_rows(con, FORECAST_TABLE, "day = ?", [day], frame)


def read_forecasts(con: duckdb.DuckDBPyConnection, exchange: str, market: str, through: date) -> pd.DataFrame:
    return con.execute(
        "SELECT day, model, horizon_days, forecast_variance FROM gold.volatility_forecast "
        "WHERE exchange = ? AND market = ? AND day <= ? ORDER BY day",
        [exchange, market, through],
    ).pl().to_pandas().assign(day=lambda f: pd.to_datetime(f["day"]).dt.date)


def eval_frame(exchange: str, market: str, as_of: date, scores: list[Score]) -> pl.DataFrame:
    rows = [{"exchange": exchange, "market": market, "as_of": as_of, "model": s.model, "horizon_days": s.horizon,
             "n": s.n, "qlike": s.qlike, "mse": s.mse, "qlike_ratio": s.qlike_ratio, "mse_ratio": s.mse_ratio,
             "dm_stat": s.dm_stat, "dm_pvalue": s.dm_pvalue, "dm_stat_mse": s.dm_stat_mse,
             "dm_pvalue_mse": s.dm_pvalue_mse} for s in scores]
    return pl.DataFrame(rows, schema=EVAL_SCHEMA)


def write_eval(con: duckdb.DuckDBPyConnection, as_of: date, frame: pl.DataFrame) -> int:
    return lake.replace_rows(con, EVAL_TABLE, "as_of = ?", [as_of], frame)
