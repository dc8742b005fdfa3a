"""What the batch asset checks measure, as SQL over the lake for a range of days; Dagster wiring lives in defs/checks.

Each function returns a :class:`Outcome` with the numbers and a few offending rows, so a failed check in the UI
shows what is wrong without a query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import duckdb

SAMPLE = 5
DEAD_LETTER_RATE_MAX = 0.01
FRESHNESS_DAYS = 2
# Volumes are sums of floats on both sides; prices are copied, so they must agree to rounding noise only.
REL_TOL = 1e-6


@dataclass
class Outcome:
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    offending: list[dict[str, Any]] = field(default_factory=list)


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [{n: (v.isoformat() if hasattr(v, "isoformat") else v) for n, v in zip(names, row)} for row in cursor.fetchall()]


def _offending(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any], **numbers: Any) -> Outcome:
    count = con.execute(f"SELECT count(*) FROM ({sql})", params).fetchone()[0]
    sample = _rows(con, f"SELECT * FROM ({sql}) LIMIT {SAMPLE}", params) if count else []
    return Outcome(count == 0, {"offending_rows": count, **numbers}, sample)


def _scanned(con: duckdb.DuckDBPyConnection, table: str, first: date, last: date) -> int:
    return con.execute(f"SELECT count(*) FROM {table} WHERE day BETWEEN ? AND ?", [first, last]).fetchone()[0]


def duplicates(con: duckdb.DuckDBPyConnection, table: str, keys: list[str], first: date, last: date) -> Outcome:
    cols = ", ".join(keys)
    sql = f"SELECT {cols}, count(*) AS copies FROM {table} WHERE day BETWEEN ? AND ? GROUP BY {cols} HAVING count(*) > 1"
    return _offending(con, sql, [first, last], rows_scanned=_scanned(con, table, first, last))


def ohlc_consistency(con: duckdb.DuckDBPyConnection, table: str, key: str, first: date, last: date) -> Outcome:
    sql = (
        f"SELECT exchange, market, {key}, open, high, low, close, volume FROM {table} WHERE day BETWEEN ? AND ? AND NOT "
        "(open > 0 AND high > 0 AND low > 0 AND close > 0 AND volume >= 0 AND quote_volume >= 0 "
        "AND low <= least(open, close) AND greatest(open, close) <= high)"
    )
    return _offending(con, sql, [first, last], rows_scanned=_scanned(con, table, first, last))


def candles_1m_row_count(con: duckdb.DuckDBPyConnection, first: date, last: date, now: datetime | None = None) -> Outcome:
    """Per market-day: silver rows + rejected rows = the minutes the exchange returned a candle for, and never more
    minutes than the day has had. Minutes with no candle (no trades) are reported, not failed."""
    now = now or datetime.now(timezone.utc)
    sql = """
        WITH b AS (SELECT exchange, market, day, count(DISTINCT candle_start) AS exchange_minutes
                   FROM bronze.candles_raw WHERE interval = '1m' AND day BETWEEN ? AND ? GROUP BY ALL),
             s AS (SELECT exchange, market, day, count(*) AS silver_rows FROM silver.candles_1m
                   WHERE day BETWEEN ? AND ? GROUP BY ALL),
             d AS (SELECT exchange, market, day, count(*) AS dead_letters FROM bronze.dead_letters
                   WHERE source = 'silver.candles_1m' AND day BETWEEN ? AND ? GROUP BY ALL)
        SELECT b.exchange, b.market, b.day, b.exchange_minutes, coalesce(s.silver_rows, 0) AS silver_rows,
               coalesce(d.dead_letters, 0) AS dead_letters,
               least(1440, greatest(0, date_diff('minute', b.day::TIMESTAMPTZ, ?::TIMESTAMPTZ))) AS day_minutes
        FROM b LEFT JOIN s USING (exchange, market, day) LEFT JOIN d USING (exchange, market, day)
    """
    params = [first, last] * 3 + [now]
    per_market = _rows(con, sql + " ORDER BY ALL", params)
    bad = f"SELECT * FROM ({sql}) WHERE silver_rows + dead_letters <> exchange_minutes OR exchange_minutes > day_minutes"
    outcome = _offending(con, bad, params)
    outcome.metadata.update(
        market_days=len(per_market),
        silver_rows=sum(r["silver_rows"] for r in per_market),
        minutes_without_candle=sum(r["day_minutes"] - r["exchange_minutes"] for r in per_market),
    )
    return outcome


def dead_letter_rate(con: duckdb.DuckDBPyConnection, source: str, bronze_sql: str, first: date, last: date) -> Outcome:
    scanned = con.execute(bronze_sql, [first, last]).fetchone()[0]
    sql = "SELECT day, exchange, market, error, CAST(raw AS VARCHAR) AS raw FROM bronze.dead_letters WHERE source = ? AND day BETWEEN ? AND ?"
    dead = con.execute(f"SELECT count(*) FROM ({sql})", [source, first, last]).fetchone()[0]
    rate = dead / scanned if scanned else 0.0
    sample = _rows(con, f"{sql} LIMIT {SAMPLE}", [source, first, last]) if dead else []
    return Outcome(rate <= DEAD_LETTER_RATE_MAX, {"dead_letters": dead, "bronze_rows": scanned, "rate": rate, "max_rate": DEAD_LETTER_RATE_MAX}, sample)


def freshness(con: duckdb.DuckDBPyConnection, table: str, today: date | None = None) -> Outcome:
    """The newest day in the table is at most FRESHNESS_DAYS old (yesterday is collected at 00:10 UTC)."""
    today = today or datetime.now(timezone.utc).date()
    newest = con.execute(f"SELECT max(day) FROM {table}").fetchone()[0]
    lag = (today - newest).days if newest else None
    return Outcome(lag is not None and lag <= FRESHNESS_DAYS, {"newest_day": str(newest), "lag_days": lag if lag is not None else -1, "max_lag_days": FRESHNESS_DAYS})


def day_matches_minutes(con: duckdb.DuckDBPyConnection, first: date, last: date) -> Outcome:
    """Each day candle equals its day's 1-minute candles: first open, max high, min low, last close, summed volumes."""
    sql = f"""
        WITH m AS (
            SELECT exchange, market, day, arg_min(open, ts) AS open, max(high) AS high, min(low) AS low,
                   arg_max(close, ts) AS close, sum(volume) AS volume, sum(quote_volume) AS quote_volume, count(*) AS minutes
            FROM silver.candles_1m WHERE day BETWEEN ? AND ? GROUP BY ALL)
        SELECT d.exchange, d.market, d.day, d.open, m.open AS open_1m, d.high, m.high AS high_1m, d.low, m.low AS low_1m,
               d.close, m.close AS close_1m, d.volume, m.volume AS volume_1m, m.minutes
        FROM silver.candles_1d d JOIN m USING (exchange, market, day)
        WHERE d.day BETWEEN ? AND ? AND NOT (
            abs(d.open - m.open) <= {REL_TOL} * d.open AND abs(d.high - m.high) <= {REL_TOL} * d.high
            AND abs(d.low - m.low) <= {REL_TOL} * d.low AND abs(d.close - m.close) <= {REL_TOL} * d.close
            AND abs(d.volume - m.volume) <= {REL_TOL} * greatest(d.volume, 1e-12))
    """
    compared = con.execute(
        "SELECT count(*) FROM silver.candles_1d d WHERE day BETWEEN ? AND ? AND EXISTS "
        "(SELECT 1 FROM silver.candles_1m m WHERE m.exchange = d.exchange AND m.market = d.market AND m.day = d.day)",
        [first, last],
    ).fetchone()[0]
    return _offending(con, sql, [first, last, first, last], day_candles_compared=compared)


def fear_greed_values(con: duckdb.DuckDBPyConnection, first: date, last: date) -> Outcome:
    sql = "SELECT day, value, classification FROM silver.fear_greed WHERE day BETWEEN ? AND ? AND NOT (value BETWEEN 0 AND 100)"
    return _offending(con, sql, [first, last], rows_scanned=_scanned(con, "silver.fear_greed", first, last))
