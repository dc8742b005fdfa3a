"""Market rules over a new micro-batch of trades: price move, volume spike, volatility, Korean premium.

Per batch the lake is read twice (``_load_history``): one scan of ``silver.trades`` over the markets' recent history
(partition-pruned by ``day``) and the 1-minute bars of ``gold.ohlcv_1m_from_trades`` for the older history. The scan
brings back single trades only where a rule looks at them one by one (the price-move window's older edge and the batch's
own span); the rest of the window is summed per market and bucket inside DuckDB (volume, last price, low and high), and
older whole minutes are one gold bar each. At 250 markets the rules look at ~300,000 trades a batch, and the rows an
evaluation handles grow with the batch, not with markets x window (issue 17; docs/decisions/0023). Everything else runs
in memory, so an alert fires as soon as the market alert sensor sees the batch, without waiting for any gold work. The
batch may or may not be in silver yet: trades of the batch and its context are taken once, by trade id. Event times
come from the data, so re-evaluating a batch after a restart gives the same dedupe keys and the outbox drops the repeat.
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


_NEW, _KNOWN, _RANGES = "_alert_new_trades", "_alert_known_trades", "_alert_ranges"
_HIST, _RAW, _COMMON, _BARS = "_alert_hist", "_alert_raw", "_alert_common", "_alert_gold_bars"
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
        bucket_s = _bucket_s(per_market)
        for name, frame in _load_history(con, ranges, known, bucket_s).items():
            mem.register(name, frame)
        mem.register(_KNOWN, known)
        mem.register(_RANGES, ranges)
        _combine_history(mem, bucket_s)
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
    if ("upbit", "KRW-USDT") in touched:  # the exchange rate moved the premium of every asset quoted lately
        # A premium needs each leg's last trade within its staleness, so the assets Upbit traded in the longest one:
        # from the 1-minute bars (a row per market and minute; the streaming run writes them with silver), not a scan
        # of silver that grew all day.
        since = at - timedelta(seconds=_longest_staleness_s(rules))
        assets |= {r[0][4:] for r in con.execute(
            "SELECT DISTINCT market FROM gold.ohlcv_1m_from_trades WHERE exchange = 'upbit' AND market LIKE 'KRW-%' "
            "AND day >= CAST(? AS DATE) AND ts >= date_trunc('minute', ?)", [since, since]).fetchall()}
    assets.discard("USDT")
    out = {}
    for asset in sorted(assets):
        mr = rules.for_market("upbit", f"KRW-{asset}")
        if mr.get("kimchi_premium") is not None:
            out[asset] = mr
    return out


def _longest_staleness_s(rules: RuleSet) -> float:
    """The longest ``max_staleness_s`` of any market's Korean premium rule (the default's and every override's)."""
    markets = [("upbit", "")] + list(rules.overrides)  # a market without overrides has the defaults
    return max((rules.for_market(*m).get("kimchi_premium") or {}).get("max_staleness_s", 0.0) for m in markets)


def _legs(asset: str) -> list[tuple[str, str]]:
    return [("upbit", f"KRW-{asset}"), ("binance", f"{asset}USDT"), ("upbit", "KRW-USDT")]


def _bucket_s(per_market: dict) -> int:
    """The width of the buckets the trade history is summed in: a divisor of a minute (the volatility closes) and of
    every volume-spike bucket of the batch's markets, so each rule's own buckets are whole sums of these."""
    width = 60
    for mr in per_market.values():
        if p := mr.get("volume_spike"):
            width = math.gcd(width, max(1, int(p["bucket_s"])))
    return width


def _history_ranges(spans, per_market, legs, batch_end, limits: dict) -> pa.Table:
    """Per market: the history to read (since .. until); from raw_since on from silver (before it, 1-minute gold bars),
    and the 1-minute closes before ``since`` from bars_since: a day for the volatility limit, or only the current
    window's when the limit is known. For a market with a price-move rule, the single trades its window function needs:
    from edge_since to edge_until (the window's older edge) and from first_ts (the batch) on; the trades in between lie
    in every batch trade's window and are read as one low and high (see ``_price_move``)."""
    import pyarrow as pa  # on first use, not at import: loading the code location does not need it

    wanted: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    raw: dict[tuple[str, str], datetime] = {}  # from when silver is read (whole minutes before it: bars)
    for key, (lo, hi) in spans.items():
        wanted[key] = (lo - timedelta(seconds=_lookback_s(per_market[key])), hi)
        raw[key] = lo - timedelta(seconds=_raw_lookback_s(per_market[key]))
    for asset, mr in legs.items():
        since = batch_end - timedelta(seconds=mr.get("kimchi_premium")["max_staleness_s"])
        for key in _legs(asset):
            lo, hi = wanted.get(key, (since, batch_end))
            wanted[key] = (min(lo, since), max(hi, batch_end))
            # a leg's last price: the latest trades from silver, older ones as minute closes (at the minute's start,
            # so a bar never counts as fresher than it is)
            raw[key] = min(raw.get(key, batch_end), batch_end - timedelta(seconds=120))
    keys = sorted(wanted)
    raw_since = [max(wanted[k][0], raw[k]).replace(second=0, microsecond=0) for k in keys]
    bars_since, first, edge_since, edge_until = [], [], [], []
    for k in keys:
        since = wanted[k][0]
        if k in limits:  # the current window's closes: window_bars returns need one more bar
            window = per_market[k].get("volatility")["window_bars"]
            current = spans[k][1].replace(second=0, microsecond=0)
            bars_since.append(min(since, current - timedelta(minutes=window + 1)))
        else:
            bars_since.append(since - timedelta(days=1))
        move = per_market[k].get("price_move") if k in spans else None
        if move is None:
            first.append(None), edge_since.append(None), edge_until.append(None)
            continue
        lo, hi = spans[k]
        window = timedelta(seconds=move["window_s"])
        first.append(lo), edge_since.append(lo - window), edge_until.append(min(hi - window, lo))
    ts = pa.timestamp("us", "UTC")
    return pa.table({
        "exchange": [k[0] for k in keys], "market": [k[1] for k in keys],
        "bars_since": pa.array(bars_since, ts),
        "since": pa.array([wanted[k][0] for k in keys], ts),
        "raw_since": pa.array([max(r, wanted[k][0]) for k, r in zip(keys, raw_since)], ts),
        "until": pa.array([wanted[k][1] for k in keys], ts),
        "first_ts": pa.array(first, ts), "edge_since": pa.array(edge_since, ts), "edge_until": pa.array(edge_until, ts),
    })


def _load_history(con: duckdb.DuckDBPyConnection, ranges: pa.Table, known: pa.Table, bucket_s: int) -> dict[str, pa.Table]:
    """What the rules read from the lake, in one scan of silver: the single trades of the price-move edges and batch
    spans; everything else summed per market and ``bucket_s`` bucket (volume, last price, and the low and high of the
    price-move window's shared part), leaving out the ``known`` trades (the batch and its context), which
    ``_combine_history`` adds back once, whether or not they reached silver. Older whole minutes come from the gold bars.
    At 250 markets the window holds ~300,000 trades and an evaluation used to bring them all over; this brings ~2,000
    rows (docs/decisions/0023)."""
    con.register(_RANGES, ranges)
    con.register(_KNOWN, known)
    try:
        hist = con.execute(
            f"""
            WITH s AS MATERIALIZED (
                SELECT t.exchange, t.market, t.trade_id, t.ts, t.price, t.volume, r.first_ts, r.edge_since, r.edge_until
                  FROM silver.trades t JOIN {_RANGES} r ON t.exchange = r.exchange AND t.market = r.market
                 WHERE t.day BETWEEN CAST(r.raw_since AS DATE) AND CAST(r.until AS DATE) AND t.ts >= r.raw_since
                   AND t.ts <= r.until
            ), buckets AS (
                SELECT exchange, market, time_bucket(INTERVAL '{bucket_s} seconds', ts) AS bucket,
                       arg_max(price, ts) AS close, sum(volume) AS vol, max(ts) AS close_ts,
                       min(price) FILTER (WHERE ts >= edge_until AND ts < first_ts) AS lo,
                       max(price) FILTER (WHERE ts >= edge_until AND ts < first_ts) AS hi
                  FROM s ANTI JOIN {_KNOWN} k USING (exchange, market, trade_id)
                 GROUP BY ALL
            )
            SELECT true AS raw, exchange, market, trade_id, ts, price, volume, ts AS close_ts,
                   NULL::DOUBLE AS lo, NULL::DOUBLE AS hi
              FROM s WHERE ts >= edge_since AND NOT (ts >= edge_until AND ts < first_ts)
            UNION ALL
            SELECT false, exchange, market, NULL, bucket, close, vol, close_ts, lo, hi FROM buckets
            UNION ALL
            -- older whole minutes: one row each, at the minute's start (a minute silver's part starts in is silver's)
            SELECT false, g.exchange, g.market, NULL, g.ts, g.close, g.volume, g.ts, NULL, NULL
              FROM gold.ohlcv_1m_from_trades g JOIN {_RANGES} r ON g.exchange = r.exchange AND g.market = r.market
             WHERE g.day BETWEEN CAST(r.since AS DATE) AND CAST(r.raw_since AS DATE) AND g.ts >= date_trunc('minute', r.since)
               AND g.ts + INTERVAL 1 MINUTE <= r.raw_since
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
        con.unregister(_KNOWN)
    return {"_alert_lake": hist, _BARS: bars}


def _combine_history(mem: duckdb.DuckDBPyConnection, bucket_s: int) -> None:
    """The rules' views over what ``_load_history`` read and the known trades (each once):

    - ``_alert_raw``: single trades of the price-move edges and batch spans (exchange, market, trade_id, ts, price,
      volume);
    - ``_alert_common``: per market, the low and high of the trades every batch trade's window holds;
    - ``_alert_hist``: per market and bucket (``ts`` its start; a gold minute at its start): summed ``volume``, the last
      ``price`` and its time ``close_ts``.
    """
    mem.execute(f"CREATE OR REPLACE TEMP TABLE _alert_known_once AS SELECT DISTINCT exchange, market, trade_id, ts, "
                f"price, volume FROM {_KNOWN}")
    mem.execute(
        f"""CREATE OR REPLACE TEMP VIEW {_RAW} AS
            SELECT exchange, market, trade_id, ts, price, volume FROM _alert_lake WHERE raw
            UNION
            SELECT k.exchange, k.market, k.trade_id, k.ts, k.price, k.volume
              FROM _alert_known_once k JOIN {_RANGES} r USING (exchange, market)
             WHERE k.ts >= r.edge_since AND NOT (k.ts >= r.edge_until AND k.ts < r.first_ts)""")
    mem.execute(
        f"""CREATE OR REPLACE TEMP VIEW {_COMMON} AS
            SELECT exchange, market, min(lo) AS lo, max(hi) AS hi FROM (
                SELECT exchange, market, lo, hi FROM _alert_lake WHERE lo IS NOT NULL
                UNION ALL
                SELECT k.exchange, k.market, k.price, k.price
                  FROM _alert_known_once k JOIN {_RANGES} r USING (exchange, market)
                 WHERE k.ts >= r.edge_until AND k.ts < r.first_ts
            ) GROUP BY ALL""")
    mem.execute(
        f"""CREATE OR REPLACE TEMP TABLE {_HIST} AS
            SELECT exchange, market, ts, sum(volume) AS volume, arg_max(price, close_ts) AS price,
                   max(close_ts) AS close_ts
              FROM (
                SELECT exchange, market, ts, price, volume, close_ts FROM _alert_lake WHERE NOT raw
                UNION ALL
                SELECT exchange, market, time_bucket(INTERVAL '{bucket_s} seconds', ts), arg_max(price, ts), sum(volume),
                       max(ts)
                  FROM _alert_known_once GROUP BY ALL
              ) GROUP BY exchange, market, ts""")


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
    # A batch spans seconds of a window of minutes: the trades from (last batch trade - window) to the first batch
    # trade lie in every batch trade's window, so they are one low and high per market (_alert_common, summed in the
    # lake scan), and the window function runs over the rest only (_alert_raw): the window's older edge and the batch.
    # At 250 markets and 4 trades/s each (300,000 trades in the window) one evaluation of the packaged rules took
    # 1.25 CPU-s with the window function over every trade, 0.87 with this split (benchmarks/results/alert_width_*.json).
    rows = con.execute(
        f"""
        WITH w AS (
            SELECT exchange, market, trade_id, ts, price, min(price) OVER win AS lo, max(price) OVER win AS hi
              FROM {_RAW} SEMI JOIN {_PARAMS} USING (exchange, market)
            WINDOW win AS (PARTITION BY exchange, market ORDER BY ts
                           RANGE BETWEEN INTERVAL '{window} seconds' PRECEDING AND CURRENT ROW)
        ), wc AS (
            SELECT w.exchange, w.market, w.trade_id, w.ts, w.price, least(w.lo, coalesce(c.lo, w.lo)) AS lo,
                   greatest(w.hi, coalesce(c.hi, w.hi)) AS hi
              FROM w LEFT JOIN {_COMMON} c USING (exchange, market)
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
            SELECT exchange, market, time_bucket(INTERVAL '1 minute', ts) AS minute, arg_max(price, close_ts) AS close
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
        f"SELECT exchange, market, arg_max(price, close_ts), max(close_ts) FROM {_HIST} WHERE close_ts <= ? GROUP BY ALL",
        [at]).fetchall()}
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
