"""Intraday gold from silver.trades, recomputed for the (exchange, market, minute range) a run touched.

Plain SQL through the lake module, inside the caller's transaction (see docs/decisions/0004-streaming-gold.md for why not
dbt here): a streaming run and a day rebuild call the same functions, with the touched ranges in a registered relation
``_ranges(exchange VARCHAR, market VARCHAR, lo TIMESTAMPTZ, hi TIMESTAMPTZ)`` (minute starts, inclusive).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

RANGES = "_ranges"
_US, _MINUTE, _DAY = timedelta(microseconds=1), timedelta(minutes=1), timedelta(days=1)

# Minute starts and the 24-hour window are computed on epoch microseconds: on a TIMESTAMPTZ, date_trunc, a cast to DATE
# and interval arithmetic go through ICU's calendar, which cost more than the rest of the aggregate together (0.8 s per
# 500,000 trades for date_trunc alone, against 0.02 s for the arithmetic). The lake's sessions are in UTC, so both give
# the same minute and day. Floor division: DuckDB's % keeps the sign of the dividend.
_MINUTE_US = "(epoch_us(t.ts) - ((epoch_us(t.ts) % 60000000) + 60000000) % 60000000)"

# A trade's place in time, (ts, trade_id), as one HUGEINT: ts in the high 64 bits, trade_id (any BIGINT) in the low
# ones, so it orders exactly as the pair does. arg_min/arg_max on it cost ~20 % less per bar than on a (ts, trade_id)
# struct (0.60-0.73 s against 0.79-0.89 s for a day of 5 M trades); ties in ts are common (Binance stamps in ms).
TRADE_ORDER = "(CAST(epoch_us(t.ts) AS HUGEINT) * CAST(18446744073709551616 AS HUGEINT) + t.trade_id)"

# _ranges' bounds, once per range instead of once per trade
_BOUNDS = f"""
    SELECT exchange, market, lo, hi + INTERVAL 1 MINUTE AS hi_end,
        CAST(lo AS DATE) AS first_day, CAST(hi AS DATE) AS last_day
    FROM {RANGES}
"""

_OHLCV = f"""
    SELECT t.exchange, t.market, make_timestamptz(any_value(t.minute_us)) AS ts,
        arg_min(t.price, {TRADE_ORDER}) AS open, max(t.price) AS high, min(t.price) AS low,
        arg_max(t.price, {TRADE_ORDER}) AS close,
        sum(t.volume) AS volume, sum(t.quote_volume) AS quote_volume, count(*) AS trade_count,
        CASE WHEN sum(t.volume) > 0 THEN sum(t.quote_volume) / sum(t.volume) ELSE arg_max(t.price, {TRADE_ORDER}) END
            AS vwap,
        ? AS updated_at, CAST(make_timestamp(any_value(t.minute_us)) AS DATE) AS day
    FROM (SELECT t.*, {_MINUTE_US} AS minute_us FROM silver.trades t) t
    JOIN ({_BOUNDS}) r ON t.exchange = r.exchange AND t.market = r.market
    WHERE t.day BETWEEN r.first_day AND r.last_day AND t.ts >= r.lo AND t.ts < r.hi_end
    GROUP BY t.exchange, t.market, t.minute_us
"""

# The 24-hour stats are read from the 1-minute bars, not from the day of trades behind them: every bar after the minute
# the window starts in lies wholly inside (as_of - 24 h, as_of], so only that first minute's trades (those after the
# window's start) and the last minute's (for as_of itself) are read from silver. A micro-batch's refresh thus reads
# ~1,440 bars and two minutes of trades per market, not a whole day (86 M trades at 1,000 messages/s); the bars are
# refreshed first, in the same transaction, for every range silver changed. Sums come out in another order than a sum
# over the trades (volume_24h within ~1e-15 relative); first and last follow (ts, trade_id) as the bars do.
#
# Step 1: each market's latest bar (where its latest trade is) since the day before its range ends.
_LAST_BARS_SQL = f"""
    SELECT b.exchange, b.market, max(b.ts) AS minute
    FROM gold.ohlcv_1m_from_trades b
    JOIN (SELECT DISTINCT exchange, market, CAST(hi AS DATE) - 1 AS since_day FROM {RANGES}) r
         ON b.exchange = r.exchange AND b.market = r.market
    WHERE b.day >= r.since_day
    GROUP BY ALL
"""
_LAST_BARS = "_last_bars"  # step 1's rows, registered for step 2

# Step 2, over step 1's rows. The $-bounds hold for every market at once (from step 1's
# earliest and latest minute): constant filters let the lake skip the files of other days, which a per-market join
# condition cannot.
_STATS = f"""
    WITH latest AS (
        SELECT t.exchange, t.market, max(t.ts) AS as_of
        FROM silver.trades t JOIN {_LAST_BARS} l ON t.exchange = l.exchange AND t.market = l.market AND t.ts >= l.minute
        WHERE t.day >= $last_day AND t.ts >= $last_minute
        GROUP BY ALL
    ), window_24h AS (
        SELECT exchange, market, as_of, after_us,
            after_us - ((after_us % 60000000) + 60000000) % 60000000 + 60000000 AS full_us  -- first whole bar inside
        FROM (SELECT *, epoch_us(as_of) - 86400000000 AS after_us FROM latest)
    ), edge AS (
        SELECT t.exchange, t.market, arg_min(t.price, {TRADE_ORDER}) AS open, max(t.price) AS high,
            min(t.price) AS low, sum(t.volume) AS volume, sum(t.quote_volume) AS quote_volume, count(*) AS trades
        FROM silver.trades t JOIN window_24h w ON t.exchange = w.exchange AND t.market = w.market
        WHERE t.day BETWEEN $edge_first_day AND $edge_last_day AND t.ts > $edge_after AND t.ts < $edge_before
            AND epoch_us(t.ts) > w.after_us AND epoch_us(t.ts) < w.full_us
        GROUP BY ALL
    ), bars AS (
        SELECT b.exchange, b.market, arg_min(b.open, b.ts) AS open, max(b.high) AS high, min(b.low) AS low,
            arg_max(b.close, b.ts) AS close, sum(b.volume) AS volume, sum(b.quote_volume) AS quote_volume,
            sum(b.trade_count) AS trades
        FROM gold.ohlcv_1m_from_trades b JOIN window_24h w ON b.exchange = w.exchange AND b.market = w.market
        WHERE b.day >= $edge_first_day AND epoch_us(b.ts) >= w.full_us
        GROUP BY ALL
    )
    SELECT w.exchange, w.market, w.as_of, COALESCE(e.open, b.open) AS open_24h, greatest(b.high, e.high) AS high_24h,
        least(b.low, e.low) AS low_24h, b.close AS last_price, (b.close / COALESCE(e.open, b.open) - 1) * 100 AS change_pct,
        b.volume + COALESCE(e.volume, 0) AS volume_24h, b.quote_volume + COALESCE(e.quote_volume, 0) AS quote_volume_24h,
        CASE WHEN b.volume + COALESCE(e.volume, 0) > 0
             THEN (b.quote_volume + COALESCE(e.quote_volume, 0)) / (b.volume + COALESCE(e.volume, 0)) END AS vwap_24h,
        b.trades + COALESCE(e.trades, 0) AS trade_count_24h, $now AS updated_at
    FROM window_24h w JOIN bars b ON w.exchange = b.exchange AND w.market = b.market
    LEFT JOIN edge e ON w.exchange = e.exchange AND w.market = e.market
"""

# The premium is Upbit's KRW price over the Binance USDT price converted with Upbit's own KRW-USDT price, each the
# latest 1-minute close at or before the Upbit minute (ASOF), looked up no further back than a day.
_KIMCHI = """
    WITH u AS (
        SELECT ts, substr(market, 5) AS asset, close FROM gold.ohlcv_1m_from_trades
        WHERE exchange = 'upbit' AND market LIKE 'KRW-%' AND market <> 'KRW-USDT' AND ts BETWEEN $lo AND $hi
    ), b AS (
        SELECT ts, substr(market, 1, length(market) - 4) AS asset, close FROM gold.ohlcv_1m_from_trades
        WHERE exchange = 'binance' AND market LIKE '%USDT' AND ts BETWEEN $lo - INTERVAL 1 DAY AND $hi
    ), k AS (
        SELECT ts, close FROM gold.ohlcv_1m_from_trades
        WHERE exchange = 'upbit' AND market = 'KRW-USDT' AND ts BETWEEN $lo - INTERVAL 1 DAY AND $hi
    )
    SELECT u.ts, u.asset, u.close AS upbit_krw, b.close AS binance_usdt, k.close AS usdt_krw,
        (u.close / (b.close * k.close) - 1) * 100 AS premium_pct, $now AS updated_at, CAST(u.ts AS DATE) AS day
    FROM u ASOF JOIN b ON u.asset = b.asset AND u.ts >= b.ts ASOF JOIN k ON u.ts >= k.ts
    WHERE u.ts - b.ts <= INTERVAL 1 DAY AND u.ts - k.ts <= INTERVAL 1 DAY
"""


def refresh(con: duckdb.DuckDBPyConnection, now: datetime) -> dict[str, int]:
    """Recompute the three intraday gold tables over ``_ranges`` (inside the caller's transaction). Returns row counts."""
    span = con.execute(f"SELECT min(lo), max(hi) FROM {RANGES}").fetchone()
    if span[0] is None:
        return {}
    con.execute(
        f"""DELETE FROM gold.ohlcv_1m_from_trades g USING {RANGES} r
            WHERE g.exchange = r.exchange AND g.market = r.market AND g.ts BETWEEN r.lo AND r.hi"""
    )
    bars = con.execute(f"INSERT INTO gold.ohlcv_1m_from_trades {_OHLCV}", [now]).fetchone()[0]
    con.execute(
        f"""DELETE FROM gold.market_stats_24h g USING (SELECT DISTINCT exchange, market FROM {RANGES}) r
            WHERE g.exchange = r.exchange AND g.market = r.market"""
    )
    stats = _insert_stats(con, now)
    con.execute("DELETE FROM gold.kimchi_premium_1m WHERE ts BETWEEN ? AND ?", [span[0], span[1]])
    premium = con.execute(
        f"INSERT INTO gold.kimchi_premium_1m {_KIMCHI}", {"lo": span[0], "hi": span[1], "now": now}
    ).fetchone()[0]
    return {"ohlcv_1m": bars, "market_stats_24h": stats, "kimchi_premium_1m": premium}


def _insert_stats(con: duckdb.DuckDBPyConnection, now: datetime) -> int:
    """gold.market_stats_24h for _ranges' markets, from their bars (refreshed just before) and the edge minutes' trades."""
    last = con.execute(_LAST_BARS_SQL).to_arrow_table()
    if last.num_rows == 0:
        return 0
    minutes = last.column("minute").to_pylist()
    first, latest = min(minutes), max(minutes)
    # as_of lies in [minute, minute + 1 min) of its market's last bar, so the edge minute's trades in the window lie
    # in (first - 24 h, latest + 1 min - 24 h) for every market
    edge_after, edge_before = first - _DAY, latest + _MINUTE - _DAY
    con.register(_LAST_BARS, last)
    try:
        return con.execute(f"INSERT INTO gold.market_stats_24h {_STATS}", {
            "last_minute": first, "last_day": first.date(), "edge_after": edge_after, "edge_before": edge_before,
            "edge_first_day": edge_after.date(), "edge_last_day": (edge_before - _US).date(), "now": now,
        }).fetchone()[0]
    finally:
        con.unregister(_LAST_BARS)
