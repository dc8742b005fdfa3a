"""Market rules over a new micro-batch of trades: price move, volume spike, volatility, Korean premium.

Each rule looks at the new trades together with the recent history in ``silver.trades`` (the batch may or may not be in
silver yet: rows are de-duplicated by trade id), so an alert fires as soon as the streaming sensor sees the batch, without
waiting for any gold table. Event times come from the data, which makes re-evaluating a batch after a restart produce
the same dedupe keys: the outbox then drops the repeat.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import duckdb

from cryptoflow_dagster.alerting.model import Alert
from cryptoflow_dagster.alerting.rules import MarketRules, RuleSet

log = logging.getLogger(__name__)

_NEW = "_alert_new_trades"
_TRADES_LINK = "/assets/silver/trades"


def evaluate_market_rules(
    con: duckdb.DuckDBPyConnection, trades: Any, rules: RuleSet, now: datetime | None = None
) -> list[Alert]:
    """Alerts the new ``trades`` (a Polars/Arrow frame with silver.trades columns) trigger. Records nothing."""
    now = now or datetime.now(timezone.utc)
    if trades is None or len(trades) == 0:
        return []
    con.register(_NEW, trades)
    try:
        markets = con.execute(f"SELECT DISTINCT exchange, market FROM {_NEW} ORDER BY 1, 2").fetchall()
        alerts: list[Alert] = []
        for exchange, market in markets:
            mr = rules.for_market(exchange, market)
            for rule, evaluate in (("price_move", _price_move), ("volume_spike", _volume_spike), ("volatility", _volatility)):
                params = mr.get(rule)
                if params is not None:
                    alert = evaluate(con, mr, params, now)
                    if alert is not None:
                        alerts.append(alert)
        alerts += _kimchi_premiums(con, rules, {m for m in markets}, now)
        return alerts
    finally:
        con.unregister(_NEW)


def _history_sql() -> str:
    """Trades of one market: recent silver rows plus the new batch, one row per trade id."""
    return f"""
        SELECT trade_id, ts, price, volume FROM silver.trades
         WHERE exchange = $exchange AND market = $market AND ts >= $since AND ts <= $until
        UNION
        SELECT trade_id, ts, price, volume FROM {_NEW} WHERE exchange = $exchange AND market = $market
    """


def _batch_span(con: duckdb.DuckDBPyConnection, exchange: str, market: str) -> tuple[datetime, datetime]:
    return con.execute(
        f"SELECT min(ts), max(ts) FROM {_NEW} WHERE exchange = ? AND market = ?", [exchange, market]
    ).fetchone()


def _alert(mr: MarketRules, rule: str, event_time: datetime, value: float, threshold: float, message: str,
           now: datetime, fields: dict[str, str]) -> Alert:
    return Alert(
        rule=rule,
        exchange=mr.exchange,
        market=mr.market,
        event_time=event_time,
        triggered_at=now,
        value=value,
        threshold=threshold,
        message=message,
        dedupe_key=f"{rule}:{mr.exchange}:{mr.market}:{event_time.astimezone(timezone.utc).isoformat()}",
        cooldown_s=mr.cooldown_s,
        details={"title": f"{rule.replace('_', ' ')}: {mr.exchange} {mr.market}", "fields": fields, "link": _TRADES_LINK},
    )


def _price_move(con: duckdb.DuckDBPyConnection, mr: MarketRules, p: dict[str, float], now: datetime) -> Alert | None:
    window = int(p["window_s"])
    first, last = _batch_span(con, mr.exchange, mr.market)
    # The first trade of the batch whose price is pct% away from the low or high of the window before it.
    row = con.execute(
        f"""
        WITH h AS ({_history_sql()}),
        w AS (
            SELECT trade_id, ts, price,
                   min(price) OVER win AS lo, max(price) OVER win AS hi
              FROM h WINDOW win AS (ORDER BY ts RANGE BETWEEN INTERVAL '{window} seconds' PRECEDING AND CURRENT ROW)
        ),
        m AS (
            SELECT ts, price, lo, hi,
                   CASE WHEN price / lo - 1 >= 1 - price / hi THEN (price / lo - 1) * 100
                        ELSE (price / hi - 1) * 100 END AS move_pct
              FROM w WHERE trade_id IN (SELECT trade_id FROM {_NEW} WHERE exchange = $exchange AND market = $market)
        )
        SELECT ts, price, lo, hi, move_pct FROM m WHERE abs(move_pct) >= $pct ORDER BY ts LIMIT 1
        """,
        {"exchange": mr.exchange, "market": mr.market, "since": first - timedelta(seconds=window), "until": last,
         "pct": p["pct"]},
    ).fetchone()
    if row is None:
        return None
    ts, price, lo, hi, move = row
    ref = lo if move > 0 else hi
    return _alert(
        mr, "price_move", ts, move, p["pct"],
        f"{mr.exchange} {mr.market} moved {move:+.2f}% within {window}s ({ref:,.8g} -> {price:,.8g}); "
        f"threshold {p['pct']:.2f}%",
        now, {"Move": f"{move:+.2f}%", "Window": f"{window}s", "Price": f"{price:,.8g}", "From": f"{ref:,.8g}"},
    )


def _volume_spike(con: duckdb.DuckDBPyConnection, mr: MarketRules, p: dict[str, float], now: datetime) -> Alert | None:
    bucket, trailing = int(p["bucket_s"]), int(p["trailing_buckets"])
    first, last = _batch_span(con, mr.exchange, mr.market)
    # Buckets without trades count as zero volume; history starts at the first bucket that has any trade.
    row = con.execute(
        f"""
        WITH h AS ({_history_sql()}),
        b AS (SELECT time_bucket(INTERVAL '{bucket} seconds', ts) AS bucket, sum(volume) AS vol FROM h GROUP BY 1),
        cur AS (SELECT max(bucket) AS bucket FROM b),
        grid AS (
            SELECT unnest(generate_series((SELECT min(bucket) FROM b), (SELECT bucket FROM cur),
                                          INTERVAL '{bucket} seconds')) AS bucket
        ),
        filled AS (SELECT g.bucket, coalesce(b.vol, 0) AS vol FROM grid g LEFT JOIN b USING (bucket)),
        prev AS (SELECT vol FROM filled WHERE bucket < (SELECT bucket FROM cur))
        SELECT (SELECT bucket FROM cur), (SELECT vol FROM filled WHERE bucket = (SELECT bucket FROM cur)),
               avg(vol), stddev_samp(vol), count(*)
          FROM prev
        """,
        {"exchange": mr.exchange, "market": mr.market, "since": last - timedelta(seconds=bucket * (trailing + 1)),
         "until": last},
    ).fetchone()
    start, vol, mean, std, n = row
    if start is None or n < p["min_buckets"] or not std or std <= 0:
        return None
    z = (vol - mean) / std
    if z < p["z"]:
        return None
    return _alert(
        mr, "volume_spike", start, z, p["z"],
        f"{mr.exchange} {mr.market} volume spike: {vol:,.6g} in {bucket}s from {start:%H:%M:%S} UTC is z={z:.1f} "
        f"against the trailing {int(n)} buckets (mean {mean:,.6g}); threshold z={p['z']:.1f}",
        now, {"Volume": f"{vol:,.6g}", "Trailing mean": f"{mean:,.6g}", "z-score": f"{z:.2f}", "Buckets": str(int(n))},
    )


def _volatility(con: duckdb.DuckDBPyConnection, mr: MarketRules, p: dict[str, float], now: datetime) -> Alert | None:
    window, trailing = int(p["window_bars"]), int(p["trailing_bars"])
    first, last = _batch_span(con, mr.exchange, mr.market)
    # 1-minute closes -> log returns -> rolling stdev over `window` bars; the latest value against the earlier ones.
    row = con.execute(
        f"""
        WITH h AS ({_history_sql()}),
        bars AS (SELECT time_bucket(INTERVAL '1 minute', ts) AS minute, arg_max(price, ts) AS close FROM h GROUP BY 1),
        r AS (SELECT minute, ln(close / lag(close) OVER (ORDER BY minute)) AS ret FROM bars),
        v AS (
            SELECT minute, stddev_samp(ret) OVER (ORDER BY minute ROWS BETWEEN {window - 1} PRECEDING AND CURRENT ROW) AS vol,
                   count(ret) OVER (ORDER BY minute ROWS BETWEEN {window - 1} PRECEDING AND CURRENT ROW) AS n
              FROM r
        ),
        ok AS (SELECT minute, vol FROM v WHERE n = {window} AND vol IS NOT NULL),
        cur AS (SELECT minute, vol FROM ok ORDER BY minute DESC LIMIT 1)
        SELECT (SELECT minute FROM cur), (SELECT vol FROM cur),
               quantile_cont(vol, $q), count(*)
          FROM ok WHERE minute < (SELECT minute FROM cur)
        """,
        {"exchange": mr.exchange, "market": mr.market, "q": p["percentile"] / 100.0,
         "since": last - timedelta(minutes=trailing + window + 1), "until": last},
    ).fetchone()
    minute, vol, limit, n = row
    if minute is None or vol is None or limit is None or n < p["min_history"] or vol <= limit:
        return None
    # A minute bar is still filling while its trades arrive: only report a bar the batch actually touched.
    if minute < first.replace(second=0, microsecond=0) - timedelta(minutes=1):
        return None
    daily = vol * math.sqrt(1440)
    return _alert(
        mr, "volatility", minute, daily, limit * math.sqrt(1440),
        f"{mr.exchange} {mr.market} realized volatility {daily * 100:.2f}% (daily sigma, last {window} 1m bars) is above "
        f"the trailing p{p['percentile']:g} {limit * math.sqrt(1440) * 100:.2f}% of {int(n)} windows",
        now, {"Volatility": f"{daily * 100:.2f}%", f"p{p['percentile']:g}": f"{limit * math.sqrt(1440) * 100:.2f}%",
              "Window": f"{window} x 1m"},
    )


def _kimchi_premiums(con: duckdb.DuckDBPyConnection, rules: RuleSet, touched: set[tuple[str, str]],
                     now: datetime) -> list[Alert]:
    """Premium of each Upbit KRW-<asset> over Binance <asset>USDT x Upbit KRW-USDT, when the batch moved any leg."""
    at = con.execute(f"SELECT max(ts) FROM {_NEW}").fetchone()[0]
    if ("upbit", "KRW-USDT") in touched:
        assets = {m[4:] for m in _upbit_krw_markets(con, at - timedelta(days=1))}
    else:
        assets = {m[4:] for e, m in touched if e == "upbit" and m.startswith("KRW-")}
        assets |= {m[:-4] for e, m in touched if e == "binance" and m.endswith("USDT")}
    assets.discard("USDT")
    alerts = []
    for asset in sorted(assets):
        mr = rules.for_market("upbit", f"KRW-{asset}")
        p = mr.get("kimchi_premium")
        if p is None:
            continue
        legs = [("upbit", f"KRW-{asset}"), ("binance", f"{asset}USDT"), ("upbit", "KRW-USDT")]
        prices = []
        for exchange, market in legs:
            got = con.execute(
                f"""SELECT arg_max(price, ts), max(ts) FROM ({_history_sql()})""",
                {"exchange": exchange, "market": market, "since": at - timedelta(seconds=p["max_staleness_s"]),
                 "until": at},
            ).fetchone()
            if got[0] is None or got[1] > at:
                break
            prices.append(got[0])
        if len(prices) < 3:
            continue
        krw, usdt, usdt_krw = prices
        premium = (krw / (usdt * usdt_krw) - 1) * 100
        if premium < p["pct"]:
            continue
        minute = at.replace(second=0, microsecond=0)
        alerts.append(_alert(
            mr, "kimchi_premium", minute, premium, p["pct"],
            f"Korean premium on {asset} is {premium:.2f}% (Upbit {krw:,.8g} KRW vs Binance {usdt:,.8g} USDT x "
            f"{usdt_krw:,.6g} KRW/USDT); threshold {p['pct']:.2f}%",
            now, {"Premium": f"{premium:.2f}%", "Upbit KRW": f"{krw:,.8g}", "Binance USDT": f"{usdt:,.8g}",
                  "KRW/USDT": f"{usdt_krw:,.6g}"},
        ))
    return alerts


def _upbit_krw_markets(con: duckdb.DuckDBPyConnection, since: datetime) -> list[str]:
    rows = con.execute(
        f"SELECT market FROM {_NEW} WHERE exchange = 'upbit' AND market LIKE 'KRW-%' "
        "UNION SELECT DISTINCT market FROM silver.trades WHERE exchange = 'upbit' AND market LIKE 'KRW-%' AND ts >= ?",
        [since],
    ).fetchall()
    return [r[0] for r in rows]
