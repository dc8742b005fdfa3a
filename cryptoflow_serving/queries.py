"""The SQL of every read endpoint: one :class:`Resource` per lake table (its contract columns, its keyset order, the
column a time range filters) and :func:`page_sql`, which builds a page's SELECT from those constants with every value
a client sent as a ``?`` parameter. Table and column names come only from the resources below, never from a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from cryptoflow_serving.params import Cursor

_BARS = ("open", "high", "low", "close", "volume", "quote_volume")
_DBT = "dbt (the gold assets): materialize them in the Dagster UI, or run `make demo`, which does"
_STREAM = "the streaming job's intraday gold (it starts with the first trades ingested: `cryptoflow demo` or `up`)"


@dataclass(frozen=True)
class Resource:
    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # unique per row, the ORDER BY of a page and what a cursor holds
    time: str  # the column start/end filter
    builds: str  # what creates the table (the 503 says it when the table is not there yet)
    markets: bool = True  # has exchange and market columns
    filters: tuple[str, ...] = ()  # extra equality filters: the parameter is named like the column
    missing_status: int = 503  # 404 for tables that are optional features

    @property
    def daily(self) -> bool:
        return self.time in ("day", "as_of") and self.table != "gold.market_stats_24h"


RESOURCES: dict[str, Resource] = {
    "bars_1m_trades": Resource(
        "gold.ohlcv_1m_from_trades", ("exchange", "market", "ts", *_BARS, "trade_count", "vwap"),
        ("exchange", "market", "ts"), "ts", _STREAM),
    "bars_1m_exchange": Resource(
        "silver.candles_1m", ("exchange", "market", "ts", *_BARS), ("exchange", "market", "ts"), "ts",
        "the silver candle assets (REST candles: a backfill or `make demo`)"),
    "bars_1d_exchange": Resource(
        "silver.candles_1d", ("exchange", "market", "day", *_BARS), ("exchange", "market", "day"), "day",
        "the silver candle assets (REST candles: a backfill or `make demo`)"),
    "stats_24h": Resource(
        "gold.market_stats_24h",
        ("exchange", "market", "as_of", "open_24h", "high_24h", "low_24h", "last_price", "change_pct", "volume_24h",
         "quote_volume_24h", "vwap_24h", "trade_count_24h"),
        ("exchange", "market", "as_of"), "as_of", _STREAM),
    "indicators_daily": Resource(
        "gold.indicators_daily",
        ("exchange", "market", "day", "close", "sma_5", "sma_20", "sma_60", "sma_120", "ema_12", "ema_26", "macd",
         "macd_signal", "rsi_14", "atr_14", "cross"),
        ("exchange", "market", "day"), "day", _DBT),
    "volatility_daily": Resource(
        "gold.volatility_daily",
        ("exchange", "market", "day", "close_to_close", "parkinson", "garman_klass", "rogers_satchell", "yang_zhang",
         "bars"),
        ("exchange", "market", "day"), "day", _DBT),
    "volatility_rolling": Resource(
        "gold.volatility_rolling",
        ("exchange", "market", "day", "window", "close_to_close", "parkinson", "garman_klass", "rogers_satchell",
         "yang_zhang"),
        ("exchange", "market", "day", "window"), "day", _DBT, filters=("window",)),
    "volatility_forecast": Resource(
        "gold.volatility_forecast",
        ("exchange", "market", "day", "model", "horizon_days", "forecast_vol", "forecast_variance", "train_start",
         "train_end", "made_at"),
        ("exchange", "market", "day", "model", "horizon_days"), "day",
        "the volatility forecast assets (gold.volatility_forecast: HAR-RV, GARCH, naive)",
        filters=("model", "horizon_days"), missing_status=404),
    "volatility_forecast_eval": Resource(
        "gold.volatility_forecast_eval",
        ("exchange", "market", "as_of", "model", "horizon_days", "n", "qlike", "mse", "qlike_ratio", "mse_ratio",
         "dm_stat", "dm_pvalue"),
        ("exchange", "market", "as_of", "model", "horizon_days"), "as_of",
        "the volatility forecast evaluation asset (gold.volatility_forecast_eval)",
        filters=("model", "horizon_days"), missing_status=404),
    "kimchi_premium": Resource(
        "gold.kimchi_premium_1m", ("ts", "asset", "upbit_krw", "binance_usdt", "usdt_krw", "premium_pct"),
        ("asset", "ts"), "ts", _STREAM, markets=False, filters=("asset",)),
    "sentiment_daily": Resource(
        "gold.sentiment_daily",
        ("exchange", "market", "day", "close", "return_1d", "fear_greed", "classification"),
        ("exchange", "market", "day"), "day", _DBT),
    "alerts": Resource(
        "gold.alerts",
        ("alert_id", "rule", "exchange", "market", "event_time", "triggered_at", "value", "threshold", "message",
         "status", "attempts", "delivered_at"),
        ("triggered_at", "alert_id"), "triggered_at",
        "the alert sensors (the table is created with the lake's schema by any ingestion)",
        filters=("rule", "status")),
}


@dataclass(frozen=True)
class Filters:
    exchange: str | None = None
    markets: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    extra: tuple[tuple[str, Any], ...] = ()  # (column, value) of the resource's own filters


def _where(resource: Resource, f: Filters) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if resource.markets:
        if f.exchange is not None:
            clauses.append("exchange = ?")
            params.append(f.exchange)
        if f.markets:
            clauses.append("market IN (" + ", ".join("?" for _ in f.markets) + ")")
            params.extend(f.markets)
    for column, value in f.extra:
        if column not in resource.filters:
            raise ValueError(f"{column} is no filter of {resource.table}")
        clauses.append(f'"{column}" = ?')
        params.append(value)
    lo, hi = time_bounds(resource, f)
    if lo is not None:
        clauses.append(f"{resource.time} >= ?")
        params.append(lo)
    if hi is not None:
        clauses.append(f"{resource.time} < ?")
        params.append(hi)
    return clauses, params


def time_bounds(resource: Resource, f: Filters) -> tuple[Any, Any]:
    """``[lo, hi)`` on the resource's time column as the SQL compares it: a daily row is in range when its day
    overlaps ``[start, end)``."""
    lo, hi = f.start, f.end
    if resource.daily:
        return (lo.date() if lo is not None else None), (_day_after_last(hi) if hi is not None else None)
    return lo, hi


def changed_range_sql(resource: Resource) -> str:
    """The earliest and latest time among a table's rows changed between two snapshots (``?`` catalog, schema, table,
    first and last snapshot): inserts, deletes and both images of updates."""
    return (f"SELECT min({resource.time}), max({resource.time}), count(*) "
            "FROM ducklake_table_changes(?, ?, ?, ?, ?)")


def _day_after_last(end: datetime) -> date:
    """The first day not in ``[.., end)``: end's own day when end is its midnight, else the day after."""
    return end.date() if end.time() == datetime.min.time() else end.date() + timedelta(days=1)


def page_sql(resource: Resource, f: Filters, *, order: str, limit: int, after: Cursor | None) -> tuple[str, list[Any]]:
    """A page of ``resource``: the rows matching ``f`` after the cursor's key, in key order, at most ``limit``."""
    clauses, params = _where(resource, f)
    key = ", ".join(f'"{c}"' for c in resource.key)
    if after is not None:
        marks = ", ".join("?" for _ in resource.key)
        clauses.append(f"({key}) {'>' if order == 'asc' else '<'} ({marks})")
        params.extend(after.key)
    direction = "ASC" if order == "asc" else "DESC"
    sql = (
        "SELECT " + ", ".join(f'"{c}"' for c in resource.columns) + f" FROM {resource.table}"
        + (" WHERE " + " AND ".join(clauses) if clauses else "")
        + " ORDER BY " + ", ".join(f'"{c}" {direction}' for c in resource.key)
        + " LIMIT ?"
    )
    params.append(limit)
    return sql, params


def latest_sql(resource: Resource, f: Filters) -> tuple[str, list[Any]]:
    """The newest row per market (by the resource's time column): what "current" means for 24-hour stats."""
    clauses, params = _where(resource, f)
    sql = (
        "SELECT " + ", ".join(f'"{c}"' for c in resource.columns) + f" FROM {resource.table}"
        + (" WHERE " + " AND ".join(clauses) if clauses else "")
        + f" QUALIFY row_number() OVER (PARTITION BY exchange, market ORDER BY {resource.time} DESC) = 1"
        + " ORDER BY exchange, market"
    )
    return sql, params


# The latest trade per market, for the live feed's price table (seeded once, then kept from the trade change feed).
LATEST_TRADES = """
    SELECT exchange, market, arg_max(price, (ts, trade_id)) AS last_price, max(ts) AS last_trade_ts,
        arg_max(trade_id, (ts, trade_id)) AS last_trade_id
    FROM silver.trades GROUP BY exchange, market ORDER BY exchange, market
"""
