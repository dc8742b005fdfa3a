"""Intraday gold from silver.trades, recomputed for the (exchange, market, minute range) a run touched.

Plain SQL through the lake module, inside the caller's transaction (see docs/decisions/0004-streaming-gold.md for why not
dbt here): a streaming run and a day rebuild call the same functions, with the touched ranges in a registered relation
``_ranges(exchange VARCHAR, market VARCHAR, lo TIMESTAMPTZ, hi TIMESTAMPTZ)`` (minute starts, inclusive).
"""

from __future__ import annotations

from datetime import datetime

import duckdb

RANGES = "_ranges"

# Minute starts and the 24-hour window are computed on epoch microseconds: on a TIMESTAMPTZ, date_trunc, a cast to DATE
# and interval arithmetic go through ICU's calendar, which cost more than the rest of the aggregate together (0.8 s per
# 500,000 trades for date_trunc alone, against 0.02 s for the arithmetic). The lake's sessions are in UTC, so both give
# the same minute and day. Floor division: DuckDB's % keeps the sign of the dividend.
_MINUTE_US = "(epoch_us(t.ts) - ((epoch_us(t.ts) % 60000000) + 60000000) % 60000000)"

# _ranges' bounds, once per range instead of once per trade
_BOUNDS = f"""
    SELECT exchange, market, lo, hi + INTERVAL 1 MINUTE AS hi_end,
        CAST(lo AS DATE) AS first_day, CAST(hi AS DATE) AS last_day
    FROM {RANGES}
"""

_OHLCV = f"""
    SELECT t.exchange, t.market, make_timestamptz(any_value(t.minute_us)) AS ts,
        arg_min(t.price, (t.ts, t.trade_id)) AS open, max(t.price) AS high, min(t.price) AS low,
        arg_max(t.price, (t.ts, t.trade_id)) AS close,
        sum(t.volume) AS volume, sum(t.quote_volume) AS quote_volume, count(*) AS trade_count,
        CASE WHEN sum(t.volume) > 0 THEN sum(t.quote_volume) / sum(t.volume) ELSE arg_max(t.price, (t.ts, t.trade_id)) END
            AS vwap,
        ? AS updated_at, CAST(make_timestamp(any_value(t.minute_us)) AS DATE) AS day
    FROM (SELECT t.*, {_MINUTE_US} AS minute_us FROM silver.trades t) t
    JOIN ({_BOUNDS}) r ON t.exchange = r.exchange AND t.market = r.market
    WHERE t.day BETWEEN r.first_day AND r.last_day AND t.ts >= r.lo AND t.ts < r.hi_end
    GROUP BY t.exchange, t.market, t.minute_us
"""

_STATS = f"""
    WITH latest AS (
        SELECT t.exchange, t.market, max(t.ts) AS as_of
        FROM silver.trades t JOIN (SELECT DISTINCT exchange, market, CAST(hi AS DATE) - 1 AS since_day FROM {RANGES}) r
             ON t.exchange = r.exchange AND t.market = r.market
        WHERE t.day >= r.since_day
        GROUP BY ALL
    ), window_24h AS (
        SELECT exchange, market, as_of, epoch_us(as_of) - 86400000000 AS after_us,
            CAST(make_timestamp(epoch_us(as_of) - 86400000000) AS DATE) AS first_day
        FROM latest
    )
    SELECT t.exchange, t.market, l.as_of,
        arg_min(t.price, (t.ts, t.trade_id)) AS open_24h, max(t.price) AS high_24h, min(t.price) AS low_24h,
        arg_max(t.price, (t.ts, t.trade_id)) AS last_price,
        (arg_max(t.price, (t.ts, t.trade_id)) / arg_min(t.price, (t.ts, t.trade_id)) - 1) * 100 AS change_pct,
        sum(t.volume) AS volume_24h, sum(t.quote_volume) AS quote_volume_24h,
        CASE WHEN sum(t.volume) > 0 THEN sum(t.quote_volume) / sum(t.volume) END AS vwap_24h,
        count(*) AS trade_count_24h, ? AS updated_at
    FROM silver.trades t JOIN window_24h l ON t.exchange = l.exchange AND t.market = l.market
    WHERE epoch_us(t.ts) > l.after_us AND t.day >= l.first_day
    GROUP BY t.exchange, t.market, l.as_of
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
    stats = con.execute(f"INSERT INTO gold.market_stats_24h {_STATS}", [now]).fetchone()[0]
    con.execute("DELETE FROM gold.kimchi_premium_1m WHERE ts BETWEEN ? AND ?", [span[0], span[1]])
    premium = con.execute(
        f"INSERT INTO gold.kimchi_premium_1m {_KIMCHI}", {"lo": span[0], "hi": span[1], "now": now}
    ).fetchone()[0]
    return {"ohlcv_1m": bars, "market_stats_24h": stats, "kimchi_premium_1m": premium}
