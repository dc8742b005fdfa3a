"""Market rules over a new micro-batch of trades: price move, volume spike, volatility, Korean premium.

Per batch the lake is read twice: the recent ``silver.trades`` of the markets involved (one query, partition-pruned by
``day``) and the 1-minute bars of ``gold.ohlcv_1m_from_trades`` for the volatility history. Everything else runs in
memory, so an alert fires as soon as the streaming path sees the batch, without waiting for any gold work. The batch may
or may not be in silver yet: rows are de-duplicated by trade id. Event times come from the data, so re-evaluating a batch
after a restart gives the same dedupe keys and the outbox drops the repeat.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import duckdb
import pyarrow as pa

from cryptoflow_dagster.alerting.model import Alert
from cryptoflow_dagster.alerting.rules import MarketRules, RuleSet

log = logging.getLogger(__name__)

_NEW, _RANGES, _HIST, _BARS = "_alert_new_trades", "_alert_ranges", "_alert_hist", "_alert_gold_bars"
_TRADES_LINK = "/assets/silver/trades"


def evaluate_market_rules(
    con: duckdb.DuckDBPyConnection, trades: Any, rules: RuleSet, now: datetime | None = None
) -> list[Alert]:
    """Alerts the new ``trades`` (a frame with exchange, market, trade_id, ts, price, volume) trigger. Records nothing."""
    now = now or datetime.now(timezone.utc)
    if trades is None or len(trades) == 0:
        return []
    # The rules run in a private in-memory DuckDB: on the lake connection every name lookup consults the DuckLake
    # catalog, which made each small query cost tens of milliseconds.
    mem = duckdb.connect(":memory:")
    try:
        mem.execute("SET TimeZone = 'UTC'")
        mem.register(_NEW, trades)
        spans = {(e, m): (lo, hi) for e, m, lo, hi in mem.execute(
            f"SELECT exchange, market, min(ts), max(ts) FROM {_NEW} GROUP BY 1, 2 ORDER BY 1, 2").fetchall()}
        batch_end = max(hi for _, hi in spans.values())
        per_market = {key: rules.for_market(*key) for key in spans}
        legs = _premium_legs(con, rules, set(spans), batch_end)
        ranges = _history_ranges(spans, per_market, legs, batch_end)
        for name, frame in _load_history(con, ranges, mem.execute(f"SELECT * FROM {_NEW}").to_arrow_table()).items():
            mem.register(name, frame)
        return _evaluate(mem, per_market, spans, legs, batch_end, now)
    finally:
        mem.close()


def _evaluate(con: duckdb.DuckDBPyConnection, per_market: dict, spans: dict, legs: dict, batch_end: datetime,
              now: datetime) -> list[Alert]:
    alerts: list[Alert] = []
    for (exchange, market), mr in per_market.items():
        first, last = spans[(exchange, market)]
        for rule, evaluate in (("price_move", _price_move), ("volume_spike", _volume_spike),
                               ("volatility", _volatility)):
            params = mr.get(rule)
            if params is not None:
                alert = evaluate(con, mr, params, first, last, now)
                if alert is not None:
                    alerts.append(alert)
    for asset, mr in legs.items():
        alert = _kimchi_premium(con, mr, asset, batch_end, now)
        if alert is not None:
            alerts.append(alert)
    return alerts


def _lookback_s(mr: MarketRules) -> float:
    """How much trade history before the batch the market's rules need."""
    need = 0.0
    if p := mr.get("price_move"):
        need = max(need, p["window_s"])
    if p := mr.get("volume_spike"):
        need = max(need, p["bucket_s"] * (p["trailing_buckets"] + 1))
    if mr.get("volatility"):
        need = max(need, 120.0)  # the last full minutes from trades; older bars come from gold
    return need


def _premium_legs(con: duckdb.DuckDBPyConnection, rules: RuleSet, touched: set[tuple[str, str]],
                  at: datetime) -> dict[str, MarketRules]:
    """Assets whose Korean premium the batch may have moved (it traded one of the three legs), with their rules."""
    assets = {m[4:] for e, m in touched if e == "upbit" and m.startswith("KRW-")}
    assets |= {m[:-4] for e, m in touched if e == "binance" and m.endswith("USDT")}
    if ("upbit", "KRW-USDT") in touched:  # the exchange rate moved every asset's premium
        assets |= {r[0][4:] for r in con.execute(
            "SELECT DISTINCT market FROM silver.trades WHERE exchange = 'upbit' AND market LIKE 'KRW-%' "
            "AND day >= CAST(? AS DATE) - 1 AND ts >= ? - INTERVAL 1 DAY", [at, at]).fetchall()}
    assets.discard("USDT")
    out = {}
    for asset in sorted(assets):
        mr = rules.for_market("upbit", f"KRW-{asset}")
        if mr.get("kimchi_premium") is not None:
            out[asset] = mr
    return out


def _legs(asset: str) -> list[tuple[str, str]]:
    return [("upbit", f"KRW-{asset}"), ("binance", f"{asset}USDT"), ("upbit", "KRW-USDT")]


def _history_ranges(spans, per_market, legs, batch_end) -> pa.Table:
    wanted: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for key, (lo, hi) in spans.items():
        wanted[key] = (lo - timedelta(seconds=_lookback_s(per_market[key])), hi)
    for asset, mr in legs.items():
        since = batch_end - timedelta(seconds=mr.get("kimchi_premium")["max_staleness_s"])
        for key in _legs(asset):
            lo, hi = wanted.get(key, (since, batch_end))
            wanted[key] = (min(lo, since), max(hi, batch_end))
    keys = sorted(wanted)
    return pa.table({
        "exchange": [k[0] for k in keys], "market": [k[1] for k in keys],
        "since": pa.array([wanted[k][0] for k in keys], pa.timestamp("us", "UTC")),
        "until": pa.array([wanted[k][1] for k in keys], pa.timestamp("us", "UTC")),
    })


def _load_history(con: duckdb.DuckDBPyConnection, ranges: pa.Table, new: pa.Table) -> dict[str, pa.Table]:
    con.register(_RANGES, ranges)
    con.register(_NEW, new)
    try:
        hist = con.execute(
            f"""
            SELECT t.exchange, t.market, t.trade_id, t.ts, t.price, t.volume
              FROM silver.trades t JOIN {_RANGES} r ON t.exchange = r.exchange AND t.market = r.market
             WHERE t.day BETWEEN CAST(r.since AS DATE) AND CAST(r.until AS DATE) AND t.ts >= r.since AND t.ts <= r.until
            UNION
            SELECT exchange, market, trade_id, ts, price, volume FROM {_NEW}
            """
        ).to_arrow_table()
        # Older 1-minute closes for the volatility history: at most a day back, before the trade history starts.
        bars = con.execute(
            f"""
            SELECT g.exchange, g.market, g.ts AS minute, g.close
              FROM gold.ohlcv_1m_from_trades g JOIN {_RANGES} r ON g.exchange = r.exchange AND g.market = r.market
             WHERE g.day BETWEEN CAST(r.since AS DATE) - 1 AND CAST(r.since AS DATE)
               AND g.ts >= r.since - INTERVAL 1 DAY AND g.ts < date_trunc('minute', r.since) + INTERVAL 1 MINUTE
            """
        ).to_arrow_table()
    finally:
        con.unregister(_RANGES)
        con.unregister(_NEW)
    return {_HIST: hist, _BARS: bars}


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


def _price_move(con, mr: MarketRules, p: dict[str, float], first: datetime, last: datetime,
                now: datetime) -> Alert | None:
    window = int(p["window_s"])
    # The first trade of the batch whose price is pct% away from the low or high of the window before it.
    row = con.execute(
        f"""
        WITH w AS (
            SELECT trade_id, ts, price, min(price) OVER win AS lo, max(price) OVER win AS hi
              FROM {_HIST} WHERE exchange = $exchange AND market = $market
            WINDOW win AS (ORDER BY ts RANGE BETWEEN INTERVAL '{window} seconds' PRECEDING AND CURRENT ROW)
        ),
        m AS (
            SELECT ts, price, lo, hi,
                   CASE WHEN price / lo - 1 >= 1 - price / hi THEN (price / lo - 1) * 100
                        ELSE (price / hi - 1) * 100 END AS move_pct
              FROM w WHERE trade_id IN (SELECT trade_id FROM {_NEW} WHERE exchange = $exchange AND market = $market)
        )
        SELECT ts, price, lo, hi, move_pct FROM m WHERE abs(move_pct) >= $pct ORDER BY ts LIMIT 1
        """,
        {"exchange": mr.exchange, "market": mr.market, "pct": p["pct"]},
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


def _volume_spike(con, mr: MarketRules, p: dict[str, float], first: datetime, last: datetime,
                  now: datetime) -> Alert | None:
    bucket = int(p["bucket_s"])
    # Buckets without trades count as zero volume; history starts at the first bucket that has any trade.
    row = con.execute(
        f"""
        WITH b AS (
            SELECT time_bucket(INTERVAL '{bucket} seconds', ts) AS bucket, sum(volume) AS vol
              FROM {_HIST} WHERE exchange = $exchange AND market = $market GROUP BY 1
        ),
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
        {"exchange": mr.exchange, "market": mr.market},
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


def _volatility(con, mr: MarketRules, p: dict[str, float], first: datetime, last: datetime,
                now: datetime) -> Alert | None:
    window, trailing = int(p["window_bars"]), int(p["trailing_bars"])
    # 1-minute closes (gold bars before the trade history, trades after) -> log returns -> rolling stdev over `window`
    # bars; the latest value against the trailing ones.
    row = con.execute(
        f"""
        WITH recent AS (
            SELECT time_bucket(INTERVAL '1 minute', ts) AS minute, arg_max(price, ts) AS close
              FROM {_HIST} WHERE exchange = $exchange AND market = $market GROUP BY 1
        ),
        bars AS (
            SELECT minute, close FROM {_BARS} WHERE exchange = $exchange AND market = $market
               AND minute < (SELECT min(minute) FROM recent)
            UNION ALL SELECT minute, close FROM recent
        ),
        r AS (SELECT minute, ln(close / lag(close) OVER (ORDER BY minute)) AS ret FROM bars),
        v AS (
            SELECT minute, stddev_samp(ret) OVER (ORDER BY minute ROWS BETWEEN {window - 1} PRECEDING AND CURRENT ROW) AS vol,
                   count(ret) OVER (ORDER BY minute ROWS BETWEEN {window - 1} PRECEDING AND CURRENT ROW) AS n
              FROM r
        ),
        ok AS (SELECT minute, vol FROM v WHERE n = {window} AND vol IS NOT NULL),
        cur AS (SELECT minute, vol FROM ok ORDER BY minute DESC LIMIT 1),
        hist AS (SELECT vol FROM ok WHERE minute < (SELECT minute FROM cur) ORDER BY minute DESC LIMIT {trailing})
        SELECT (SELECT minute FROM cur), (SELECT vol FROM cur), quantile_cont(vol, $q), count(*) FROM hist
        """,
        {"exchange": mr.exchange, "market": mr.market, "q": p["percentile"] / 100.0},
    ).fetchone()
    minute, vol, limit, n = row
    if minute is None or vol is None or limit is None or n < p["min_history"] or vol <= limit:
        return None
    # Only a bar this batch touched may fire: older bars were judged when their own trades arrived.
    if minute < first.replace(second=0, microsecond=0):
        return None
    daily, limit_daily = vol * math.sqrt(1440), limit * math.sqrt(1440)
    return _alert(
        mr, "volatility", minute, daily, limit_daily,
        f"{mr.exchange} {mr.market} realized volatility {daily * 100:.2f}% (daily sigma, last {window} 1m bars) is above "
        f"the trailing p{p['percentile']:g} {limit_daily * 100:.2f}% of {int(n)} windows",
        now, {"Volatility": f"{daily * 100:.2f}%", f"p{p['percentile']:g}": f"{limit_daily * 100:.2f}%",
              "Window": f"{window} x 1m"},
    )


def _kimchi_premium(con, mr: MarketRules, asset: str, at: datetime, now: datetime) -> Alert | None:
    """Upbit KRW-<asset> over Binance <asset>USDT x Upbit KRW-USDT (last prices, none older than the staleness)."""
    p = mr.get("kimchi_premium")
    since = at - timedelta(seconds=p["max_staleness_s"])
    prices = []
    for exchange, market in _legs(asset):
        price = con.execute(
            f"SELECT arg_max(price, ts) FROM {_HIST} WHERE exchange = ? AND market = ? AND ts BETWEEN ? AND ?",
            [exchange, market, since, at],
        ).fetchone()[0]
        if price is None:
            return None
        prices.append(price)
    krw, usdt, usdt_krw = prices
    premium = (krw / (usdt * usdt_krw) - 1) * 100
    if premium < p["pct"]:
        return None
    return _alert(
        mr, "kimchi_premium", at.replace(second=0, microsecond=0), premium, p["pct"],
        f"Korean premium on {asset} is {premium:.2f}% (Upbit {krw:,.8g} KRW vs Binance {usdt:,.8g} USDT x "
        f"{usdt_krw:,.6g} KRW/USDT); threshold {p['pct']:.2f}%",
        now, {"Premium": f"{premium:.2f}%", "Upbit KRW": f"{krw:,.8g}", "Binance USDT": f"{usdt:,.8g}",
              "KRW/USDT": f"{usdt_krw:,.6g}"},
    )
