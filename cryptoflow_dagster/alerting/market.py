"""Market rules over a new micro-batch of trades: price move, volume spike, volatility, Korean premium.

Per batch the lake is read twice: the history of the markets involved (one query, partition-pruned by ``day``) and the
1-minute bars of ``gold.ohlcv_1m_from_trades`` for the volatility history. The history is raw ``silver.trades`` only as
far back as a rule reads single trades (the price-move window, two minutes for volatility); older than that, each minute
is one row from the gold bar (its close and volume, at the minute's start): the volume-spike buckets (whole minutes) and
the volatility closes come out the same, and an evaluation reads minutes, not an hour of trades, per market (issue 17:
at 250 markets the hour of trades made one evaluation 16x dearer than at 9, benchmarks/results/width.md). Everything else runs in
memory, so an alert fires as soon as the streaming path sees the batch, without waiting for any gold work. The batch may
or may not be in silver yet: rows are de-duplicated by trade id. Event times come from the data, so re-evaluating a batch
after a restart gives the same dedupe keys and the outbox drops the repeat.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import duckdb

from cryptoflow_dagster.alerting.model import Alert
from cryptoflow_dagster.alerting.rules import MarketRules, RuleSet

if TYPE_CHECKING:
    import pyarrow as pa


_NEW, _RANGES, _HIST, _BARS = "_alert_new_trades", "_alert_ranges", "_alert_hist", "_alert_gold_bars"
_PARAMS = "_alert_params"
_TRADES_LINK = "/assets/silver/trades"


class VolatilityMemo:
    """Each market's trailing volatility limit, for the minute it was computed in.

    The limit is a percentile of the rolling volatility over the windows that ended in the minutes before the current
    one: it changes once a minute, while a batch comes every second or so. Computing it means a day of 1-minute bars per
    market (at 250 markets, half of an evaluation: 0.4 of 0.8 s, benchmarks/results/alert_width*.json), so a caller
    that evaluates batch after batch (the market alert sensor) keeps one of these: a market's later batches in the same
    minute read only the bars of its current window. A trade that reaches the history after its minute is over (a gap
    repaired late) moves the limit from the next minute on. One entry per market and rule shape."""

    def __init__(self) -> None:
        self._limits: dict[tuple, tuple[datetime, float | None, int]] = {}

    def get(self, key: tuple, minute: datetime) -> tuple[float | None, int] | None:
        hit = self._limits.get(key)
        return hit[1:] if hit is not None and hit[0] == minute else None

    def put(self, key: tuple, minute: datetime, limit: float | None, n: int) -> None:
        self._limits[key] = (minute, limit, n)


def evaluate_market_rules(
    con: duckdb.DuckDBPyConnection, trades: Any, rules: RuleSet, now: datetime | None = None, context: Any = None,
    memo: VolatilityMemo | None = None,
) -> list[Alert]:
    """Alerts the new ``trades`` (a frame with exchange, market, trade_id, ts, price, volume) trigger. Records nothing.

    ``context``: earlier trades (same columns) that are not in silver yet; they count as history, never fire themselves.
    ``memo``: kept by a caller that evaluates batch after batch, so the volatility limits are computed once a minute.
    """
    now = now or datetime.now(timezone.utc)
    if trades is None or len(trades) == 0:
        return []
    # The rules run in a private in-memory DuckDB: on the lake connection every name lookup consults the DuckLake
    # catalog, which made each small query cost tens of milliseconds.
    mem = duckdb.connect(":memory:")
    try:
        mem.execute("SET TimeZone = 'UTC'")
        mem.execute("SET threads = 1")
        mem.register(_NEW, trades)
        spans = {(e, m): (lo, hi) for e, m, lo, hi in mem.execute(
            f"SELECT exchange, market, min(ts), max(ts) FROM {_NEW} GROUP BY 1, 2 ORDER BY 1, 2").fetchall()}
        batch_end = max(hi for _, hi in spans.values())
        per_market = {key: rules.for_market(*key) for key in spans}
        memo = memo if memo is not None else VolatilityMemo()
        limits = {key: hit for key, mr in per_market.items()
                  if (hit := _known_limit(memo, mr, spans[key][1])) is not None}
        legs = _premium_legs(con, rules, set(spans), batch_end)
        ranges = _history_ranges(spans, per_market, legs, batch_end, limits)
        known = mem.execute(f"SELECT * FROM {_NEW}").to_arrow_table()
        if context is not None and len(context):
            mem.register("_alert_context", context)
            known = mem.execute(f"SELECT * FROM {_NEW} UNION ALL SELECT * FROM _alert_context").to_arrow_table()
        for name, frame in _load_history(con, ranges, known).items():
            mem.register(name, frame)
        return _evaluate(mem, per_market, spans, legs, batch_end, now, _Limits(memo, limits))
    finally:
        mem.close()


class _Limits:
    """The volatility limits known for this batch's minute (``known``), and the memo that learns the others."""

    def __init__(self, memo: VolatilityMemo, known: dict[tuple[str, str], tuple[float | None, int]]) -> None:
        self.memo, self.known = memo, known


def _volatility_key(mr: MarketRules) -> tuple | None:
    p = mr.get("volatility")
    return None if p is None else (mr.exchange, mr.market, p["window_bars"], p["trailing_bars"], p["percentile"])


def _known_limit(memo: VolatilityMemo, mr: MarketRules, last_ts: datetime) -> tuple[float | None, int] | None:
    key = _volatility_key(mr)
    return None if key is None else memo.get(key, last_ts.replace(second=0, microsecond=0))


def _evaluate(con: duckdb.DuckDBPyConnection, per_market: dict, spans: dict, legs: dict, batch_end: datetime,
              now: datetime, limits: _Limits) -> list[Alert]:
    alerts: list[Alert] = []
    for rule, evaluate, structural in _RULES:
        # Markets whose rule has the same shape (window sizes) share one query; thresholds vary per market.
        groups: dict[tuple, list[MarketRules]] = {}
        for mr in per_market.values():
            params = mr.get(rule)
            if params is not None:
                groups.setdefault(tuple(params[k] for k in structural), []).append(mr)
        for shape, members in groups.items():
            alerts += evaluate(con, dict(zip(structural, shape)), members, spans, now, limits)
    alerts += _kimchi_premiums(con, legs, batch_end, now)
    return alerts


def _with_params(con: duckdb.DuckDBPyConnection, rule: str, members: list[MarketRules], keys: tuple[str, ...]) -> None:
    """Register ``_alert_params(exchange, market, <keys>)``: each member market's thresholds for ``rule``."""
    import pyarrow as pa  # on first use, not at import: loading the code location does not need it

    con.register(_PARAMS, pa.table({
        "exchange": [m.exchange for m in members], "market": [m.market for m in members],
        **{k: pa.array([m.get(rule)[k] for m in members], pa.float64()) for k in keys},
    }))


def max_lookback_s(rules: RuleSet, markets: list[tuple[str, str]]) -> float:
    """The longest history any of ``markets``' rules (their own, or a Korean premium they are a leg of) looks back."""
    need = 0.0
    for exchange, market in markets:
        mr = rules.for_market(exchange, market)
        need = max(need, _lookback_s(mr), (mr.get("kimchi_premium") or {}).get("max_staleness_s", 0.0))
    return need


def _raw_lookback_s(mr: MarketRules) -> float:
    """How much of the history must be single trades: the rest may be one row per minute (module docstring)."""
    need = 0.0
    if p := mr.get("price_move"):
        need = max(need, p["window_s"])  # the move is against the window's low/high, trade by trade
    if (p := mr.get("volume_spike")) and p["bucket_s"] % 60:
        need = max(need, p["bucket_s"] * (p["trailing_buckets"] + 1))  # buckets that cut minutes need the trades
    if mr.get("volatility"):
        need = max(need, 120.0)
    return need


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


def _history_ranges(spans, per_market, legs, batch_end, limits: dict) -> pa.Table:
    """Per market: the history to read (since .. until), single trades from raw_since, and the 1-minute closes before
    ``since`` from bars_since: a day for the volatility limit, or only the current window's when the limit is known."""
    import pyarrow as pa  # on first use, not at import: loading the code location does not need it

    wanted: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    raw: dict[tuple[str, str], datetime] = {}  # from when single trades are read (whole minutes before it: bars)
    for key, (lo, hi) in spans.items():
        wanted[key] = (lo - timedelta(seconds=_lookback_s(per_market[key])), hi)
        raw[key] = lo - timedelta(seconds=_raw_lookback_s(per_market[key]))
    for asset, mr in legs.items():
        since = batch_end - timedelta(seconds=mr.get("kimchi_premium")["max_staleness_s"])
        for key in _legs(asset):
            lo, hi = wanted.get(key, (since, batch_end))
            wanted[key] = (min(lo, since), max(hi, batch_end))
            # a leg's last price: the latest trades as trades, older ones as minute closes (at the minute's start,
            # so a bar never counts as fresher than it is)
            raw[key] = min(raw.get(key, batch_end), batch_end - timedelta(seconds=120))
    keys = sorted(wanted)
    raw_since = [max(wanted[k][0], raw[k]).replace(second=0, microsecond=0) for k in keys]
    bars_since = []
    for k in keys:
        since = wanted[k][0]
        if k in limits:  # the current window's closes: window_bars returns need one more bar
            window = per_market[k].get("volatility")["window_bars"]
            current = spans[k][1].replace(second=0, microsecond=0)
            bars_since.append(min(since, current - timedelta(minutes=window + 1)))
        else:
            bars_since.append(since - timedelta(days=1))
    return pa.table({
        "exchange": [k[0] for k in keys], "market": [k[1] for k in keys],
        "bars_since": pa.array(bars_since, pa.timestamp("us", "UTC")),
        "since": pa.array([wanted[k][0] for k in keys], pa.timestamp("us", "UTC")),
        "raw_since": pa.array([max(r, wanted[k][0]) for k, r in zip(keys, raw_since)], pa.timestamp("us", "UTC")),
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
             WHERE t.day BETWEEN CAST(r.raw_since AS DATE) AND CAST(r.until AS DATE) AND t.ts >= r.raw_since
               AND t.ts <= r.until
            UNION
            SELECT exchange, market, trade_id, ts, price, volume FROM {_NEW}
            UNION ALL
            -- older whole minutes: one row each (no trade id: never a trade of the batch)
            SELECT g.exchange, g.market, NULL, g.ts, g.close, g.volume
              FROM gold.ohlcv_1m_from_trades g JOIN {_RANGES} r ON g.exchange = r.exchange AND g.market = r.market
             WHERE g.day BETWEEN CAST(r.since AS DATE) AND CAST(r.raw_since AS DATE) AND g.ts >= date_trunc('minute', r.since)
               AND g.ts < r.raw_since
            """
        ).to_arrow_table()
        # Older 1-minute closes for the volatility history (from bars_since), before the trade history starts.
        bars = con.execute(
            f"""
            SELECT g.exchange, g.market, g.ts AS minute, g.close
              FROM gold.ohlcv_1m_from_trades g JOIN {_RANGES} r ON g.exchange = r.exchange AND g.market = r.market
             WHERE g.day BETWEEN CAST(r.bars_since AS DATE) AND CAST(r.since AS DATE)
               AND g.ts >= r.bars_since AND g.ts < date_trunc('minute', r.since) + INTERVAL 1 MINUTE
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


def _price_move(con, shape: dict, members: list[MarketRules], spans: dict, now: datetime,
                limits: _Limits) -> list[Alert]:
    window = int(shape["window_s"])
    _with_params(con, "price_move", members, ("pct",))
    # Per market, the first trade of the batch whose price is pct% away from the low or high of the window before it.
    # A batch spans seconds of a window of minutes: the rows from (last batch trade - window) to the first batch trade
    # lie in every batch trade's window, so they are one min/max per market ("common"), and the window function runs
    # over the rest only: the window's older edge and the batch. At 250 markets and 4 trades/s each (300,000 rows in
    # the window) one evaluation of the packaged rules took 1.25 CPU-s with the window function over every row, 0.87
    # with this split (benchmarks/results/alert_width_before.json, _after.json).
    rows = con.execute(
        f"""
        WITH span AS (
            SELECT exchange, market, min(ts) AS first_ts, max(ts) AS last_ts FROM {_NEW} GROUP BY ALL
        ), h AS (
            SELECT h.exchange, h.market, h.trade_id, h.ts, h.price,
                   h.ts >= least(s.last_ts - INTERVAL '{window} seconds', s.first_ts) AND h.ts < s.first_ts AS common
              FROM {_HIST} h JOIN span s USING (exchange, market) SEMI JOIN {_PARAMS} USING (exchange, market)
             WHERE h.ts >= s.first_ts - INTERVAL '{window} seconds'
        ), c AS (
            SELECT exchange, market, min(price) AS lo, max(price) AS hi FROM h WHERE common GROUP BY ALL
        ), w AS (
            SELECT exchange, market, trade_id, ts, price, min(price) OVER win AS lo, max(price) OVER win AS hi
              FROM h WHERE NOT common
            WINDOW win AS (PARTITION BY exchange, market ORDER BY ts
                           RANGE BETWEEN INTERVAL '{window} seconds' PRECEDING AND CURRENT ROW)
        ), wc AS (
            SELECT w.exchange, w.market, w.trade_id, w.ts, w.price, least(w.lo, coalesce(c.lo, w.lo)) AS lo,
                   greatest(w.hi, coalesce(c.hi, w.hi)) AS hi
              FROM w LEFT JOIN c USING (exchange, market)
        ),
        m AS (
            SELECT exchange, market, ts, price, lo, hi,
                   CASE WHEN price / lo - 1 >= 1 - price / hi THEN (price / lo - 1) * 100
                        ELSE (price / hi - 1) * 100 END AS move_pct
              FROM wc SEMI JOIN {_NEW} USING (exchange, market, trade_id)
        )
        SELECT m.exchange, m.market, ts, price, lo, hi, move_pct
          FROM m JOIN {_PARAMS} p USING (exchange, market)
         WHERE abs(move_pct) >= p.pct
        QUALIFY row_number() OVER (PARTITION BY m.exchange, m.market ORDER BY ts) = 1
        ORDER BY 1, 2
        """
    ).fetchall()
    con.unregister(_PARAMS)
    by_key = {(m.exchange, m.market): m for m in members}
    alerts = []
    for exchange, market, ts, price, lo, hi, move in rows:
        mr = by_key[(exchange, market)]
        pct = mr.get("price_move")["pct"]
        ref = lo if move > 0 else hi
        alerts.append(_alert(
            mr, "price_move", ts, move, pct,
            f"{exchange} {market} moved {move:+.2f}% within {window}s ({ref:,.8g} -> {price:,.8g}); threshold {pct:.2f}%",
            now, {"Move": f"{move:+.2f}%", "Window": f"{window}s", "Price": f"{price:,.8g}", "From": f"{ref:,.8g}"},
        ))
    return alerts


def _volume_spike(con, shape: dict, members: list[MarketRules], spans: dict, now: datetime,
                  limits: _Limits) -> list[Alert]:
    bucket = int(shape["bucket_s"])
    _with_params(con, "volume_spike", members, ("z", "min_buckets"))
    # Buckets without trades count as zero volume; each market's history starts at its first bucket with a trade.
    rows = con.execute(
        f"""
        WITH b AS (
            SELECT exchange, market, time_bucket(INTERVAL '{bucket} seconds', ts) AS bucket, sum(volume) AS vol
              FROM {_HIST} SEMI JOIN {_PARAMS} USING (exchange, market) GROUP BY ALL
        ),
        bounds AS (SELECT exchange, market, min(bucket) AS lo, max(bucket) AS cur FROM b GROUP BY ALL),
        grid AS (
            SELECT exchange, market, cur, unnest(generate_series(lo, cur, INTERVAL '{bucket} seconds')) AS bucket
              FROM bounds
        ),
        filled AS (
            SELECT g.exchange, g.market, g.cur, g.bucket, coalesce(b.vol, 0) AS vol
              FROM grid g LEFT JOIN b USING (exchange, market, bucket)
        ),
        s AS (
            SELECT exchange, market, any_value(cur) AS cur, max(vol) FILTER (WHERE bucket = cur) AS vol,
                   avg(vol) FILTER (WHERE bucket < cur) AS mean, stddev_samp(vol) FILTER (WHERE bucket < cur) AS std,
                   count(*) FILTER (WHERE bucket < cur) AS n
              FROM filled GROUP BY ALL
        )
        SELECT s.exchange, s.market, cur, vol, mean, std, n, (vol - mean) / std AS z
          FROM s JOIN {_PARAMS} p USING (exchange, market)
         WHERE n >= p.min_buckets AND std > 0 AND (vol - mean) / std >= p.z
         ORDER BY 1, 2
        """
    ).fetchall()
    con.unregister(_PARAMS)
    by_key = {(m.exchange, m.market): m for m in members}
    alerts = []
    for exchange, market, start, vol, mean, std, n, z in rows:
        mr = by_key[(exchange, market)]
        threshold = mr.get("volume_spike")["z"]
        alerts.append(_alert(
            mr, "volume_spike", start, z, threshold,
            f"{exchange} {market} volume spike: {vol:,.6g} in {bucket}s from {start:%H:%M:%S} UTC is z={z:.1f} "
            f"against the trailing {int(n)} buckets (mean {mean:,.6g}); threshold z={threshold:.1f}",
            now, {"Volume": f"{vol:,.6g}", "Trailing mean": f"{mean:,.6g}", "z-score": f"{z:.2f}", "Buckets": str(int(n))},
        ))
    return alerts


def _volatility(con, shape: dict, members: list[MarketRules], spans: dict, now: datetime,
                limits: _Limits) -> list[Alert]:
    window, trailing, pctl = int(shape["window_bars"]), int(shape["trailing_bars"]), shape["percentile"]
    _with_params(con, "volatility", members, ())
    # 1-minute closes (gold bars before the trade history, trades after) -> log returns -> rolling stdev over `window`
    # bars; each market's latest value against its trailing ones. A market whose limit is known for this minute has
    # only its current window's bars here: its limit comes from the memo, the query's is not complete.
    rows = con.execute(
        f"""
        WITH recent AS (
            SELECT exchange, market, time_bucket(INTERVAL '1 minute', ts) AS minute, arg_max(price, ts) AS close
              FROM {_HIST} SEMI JOIN {_PARAMS} USING (exchange, market) GROUP BY ALL
        ),
        starts AS (SELECT exchange, market, min(minute) AS m0 FROM recent GROUP BY ALL),
        bars AS (
            SELECT g.exchange, g.market, g.minute, g.close
              FROM {_BARS} g JOIN starts s ON g.exchange = s.exchange AND g.market = s.market AND g.minute < s.m0
            UNION ALL SELECT exchange, market, minute, close FROM recent
        ),
        r AS (
            SELECT exchange, market, minute,
                   ln(close / lag(close) OVER (PARTITION BY exchange, market ORDER BY minute)) AS ret
              FROM bars
        ),
        v AS (
            SELECT exchange, market, minute, stddev_samp(ret) OVER win AS vol, count(ret) OVER win AS n FROM r
            WINDOW win AS (PARTITION BY exchange, market ORDER BY minute ROWS BETWEEN {window - 1} PRECEDING AND CURRENT ROW)
        ),
        ranked AS (
            SELECT exchange, market, minute, vol,
                   row_number() OVER (PARTITION BY exchange, market ORDER BY minute DESC) AS rn
              FROM v WHERE n = {window} AND vol IS NOT NULL
        ),
        cur AS (SELECT exchange, market, minute, vol FROM ranked WHERE rn = 1),
        hist AS (
            SELECT exchange, market, quantile_cont(vol, {pctl / 100.0}) AS lim, count(*) AS n
              FROM ranked WHERE rn BETWEEN 2 AND {trailing + 1} GROUP BY ALL
        )
        SELECT c.exchange, c.market, c.minute, c.vol, h.lim, coalesce(h.n, 0)
          FROM cur c LEFT JOIN hist h USING (exchange, market)
         ORDER BY 1, 2
        """
    ).fetchall()
    con.unregister(_PARAMS)
    by_key = {(m.exchange, m.market): m for m in members}
    alerts = []
    for exchange, market, minute, vol, limit, n in rows:
        mr = by_key[(exchange, market)]
        known = limits.known.get((exchange, market))
        if known is not None:
            if minute != spans[(exchange, market)][1].replace(second=0, microsecond=0):
                continue  # the batch's own minute has no full window yet: nothing of this batch can fire
            limit, n = known
        else:
            limits.memo.put(_volatility_key(mr), minute, limit, n)
        if limit is None or n < mr.get("volatility")["min_history"] or not vol > limit:
            continue
        # Only a bar this batch touched may fire: older bars were judged when their own trades arrived.
        if minute < spans[(exchange, market)][0].replace(second=0, microsecond=0):
            continue
        daily, limit_daily = vol * math.sqrt(1440), limit * math.sqrt(1440)
        alerts.append(_alert(
            mr, "volatility", minute, daily, limit_daily,
            f"{exchange} {market} realized volatility {daily * 100:.2f}% (daily sigma, last {window} 1m bars) is above "
            f"the trailing p{pctl:g} {limit_daily * 100:.2f}% of {int(n)} windows",
            now, {"Volatility": f"{daily * 100:.2f}%", f"p{pctl:g}": f"{limit_daily * 100:.2f}%",
                  "Window": f"{window} x 1m"},
        ))
    return alerts


_RULES = (
    ("price_move", _price_move, ("window_s",)),
    ("volume_spike", _volume_spike, ("bucket_s",)),
    ("volatility", _volatility, ("window_bars", "trailing_bars", "percentile")),
)


def _kimchi_premiums(con, legs: dict[str, MarketRules], at: datetime, now: datetime) -> list[Alert]:
    """Upbit KRW-<asset> over Binance <asset>USDT x Upbit KRW-USDT (last prices, none older than the staleness)."""
    if not legs:
        return []
    last = {(e, m): (price, ts) for e, m, price, ts in con.execute(
        f"SELECT exchange, market, arg_max(price, ts), max(ts) FROM {_HIST} WHERE ts <= ? GROUP BY ALL", [at]).fetchall()}
    alerts = []
    for asset, mr in legs.items():
        p = mr.get("kimchi_premium")
        since = at - timedelta(seconds=p["max_staleness_s"])
        quotes = [last.get(leg) for leg in _legs(asset)]
        if any(q is None or q[1] < since for q in quotes):
            continue
        krw, usdt, usdt_krw = (q[0] for q in quotes)
        premium = (krw / (usdt * usdt_krw) - 1) * 100
        if premium < p["pct"]:
            continue
        alerts.append(_alert(
            mr, "kimchi_premium", at.replace(second=0, microsecond=0), premium, p["pct"],
            f"Korean premium on {asset} is {premium:.2f}% (Upbit {krw:,.8g} KRW vs Binance {usdt:,.8g} USDT x "
            f"{usdt_krw:,.6g} KRW/USDT); threshold {p['pct']:.2f}%",
            now, {"Premium": f"{premium:.2f}%", "Upbit KRW": f"{krw:,.8g}", "Binance USDT": f"{usdt:,.8g}",
                  "KRW/USDT": f"{usdt_krw:,.6g}"},
        ))
    return alerts
