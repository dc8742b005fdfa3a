"""Binance spot REST: exchangeInfo, klines, aggTrades, historicalTrades/trades, ticker/24hr, ticker/price,
ticker/bookTicker, avgPrice, time, ping; oldest first, request weight per minute (per symbol count where Binance does)."""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import Callable

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from exchange_sim.markets import MarketSpec
from exchange_sim.model import DAY_MS, MIN_MS, Candles, Trades, seq_sum
from exchange_sim.state import Sim, client_of, now_ms

INTERVALS = {
    "1m": MIN_MS, "3m": 3 * MIN_MS, "5m": 5 * MIN_MS, "15m": 15 * MIN_MS, "30m": 30 * MIN_MS, "1h": 60 * MIN_MS,
    "2h": 120 * MIN_MS, "4h": 240 * MIN_MS, "6h": 360 * MIN_MS, "8h": 480 * MIN_MS, "12h": 720 * MIN_MS, "1d": DAY_MS,
}
WEIGHTS = {"ping": 1, "time": 1, "exchangeInfo": 20, "klines": 2, "aggTrades": 4, "historicalTrades": 25, "trades": 25,
           "avgPrice": 2}


def ticker_weight(request: Request) -> int:
    """ticker/24hr: 2 for one symbol, 2/40/80 for 1-20/21-100/more symbols, 80 for all (Binance's table)."""
    if request.query_params.get("symbol"):
        return 2
    raw = request.query_params.get("symbols")
    n = len(raw.split(",")) if raw else 10_000
    return 2 if n <= 20 else 40 if n <= 100 else 80


def price_weight(request: Request) -> int:
    """ticker/price and ticker/bookTicker: 2 for one symbol, 4 for several or all."""
    return 2 if request.query_params.get("symbol") else 4
HOUR_MS = 3_600_000


class BinanceError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400):
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def fmt8(x: float) -> str:
    return f"{x:.8f}"


def aggregate(t: Trades) -> list[dict]:
    """aggTrade records: consecutive fills of one taker order (same aggTrade id) folded into one."""
    if len(t) == 0:
        return []
    starts = np.flatnonzero(np.concatenate(([True], t.agg[1:] != t.agg[:-1])))
    ends = np.append(starts[1:], len(t))
    qty = seq_sum(t.volume, starts)
    return [
        {"a": int(t.agg[s]), "p": fmt8(float(t.price[s])), "q": fmt8(float(q)), "f": int(t.ids[s]), "l": int(t.ids[e - 1]),
         "T": int(t.ts[s]), "m": not bool(t.buy[s]), "M": True}
        for s, e, q in zip(starts.tolist(), ends.tolist(), qty.tolist())
    ]


def trade_rows(t: Trades) -> list[dict]:
    return [
        {"id": i, "price": fmt8(p), "qty": fmt8(v), "quoteQty": fmt8(p * v), "time": ts, "isBuyerMaker": not b, "isBestMatch": True}
        for i, p, v, ts, b in zip(t.ids.tolist(), t.price.tolist(), t.volume.tolist(), t.ts.tolist(), t.buy.tolist())
    ]


def kline_rows(c: Candles, window: int) -> list[list]:
    return [
        [int(c.start[i]), fmt8(c.open[i]), fmt8(c.high[i]), fmt8(c.low[i]), fmt8(c.close[i]), fmt8(c.volume[i]),
         int(c.start[i]) + window - 1, fmt8(c.quote[i]), int(c.count[i]), fmt8(c.buy_volume[i]), fmt8(c.buy_quote[i]), "0"]
        for i in range(len(c))
    ]


def _int(request: Request, name: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.") from None


def _limit(request: Request, default: int = 500, maximum: int = 1000) -> int:
    limit = _int(request, "limit", default)
    if not 1 <= limit <= maximum:
        raise BinanceError(-1130, "Data sent for parameter 'limit' is not valid.")
    return limit


def _symbol(sim: Sim, request: Request) -> MarketSpec:
    symbol = request.query_params.get("symbol")
    if not symbol:
        raise BinanceError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
    spec = sim.spec_or_none("binance", symbol.upper())
    if spec is None:
        raise BinanceError(-1121, "Invalid symbol.")
    return spec


def weighted(sim: Sim, name: str, handler: Callable[[Sim, Request], object], weight: Callable[[Request], int] | None = None):
    async def endpoint(request: Request) -> Response:
        cost = weight(request) if weight is not None else WEIGHTS[name]
        verdict = sim.binance_limiter.check(client_of(request), cost, now_ms() / 1000)
        if verdict.status == 429:
            body = {"code": -1003, "msg": f"Too much request weight used; current limit is {sim.config.binance_weight_per_min} "
                    "request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."}
            return JSONResponse(body, status_code=429, headers=verdict.headers)
        if verdict.status == 418:
            body = {"code": -1003, "msg": "Way too much request weight used; IP banned. Please use WebSocket Streams."}
            return JSONResponse(body, status_code=418, headers=verdict.headers)
        response = await sim.rest_faults()
        if response is None:
            try:
                result = handler(sim, request)
                response = JSONResponse(await result if inspect.isawaitable(result) else result)
            except BinanceError as exc:
                response = JSONResponse({"code": exc.code, "msg": exc.msg}, status_code=exc.status)
        response.headers.update(verdict.headers)
        return response

    return endpoint


def exchange_info(sim: Sim, request: Request) -> dict:
    wanted = None
    if request.query_params.get("symbol"):
        wanted = {request.query_params["symbol"].upper()}
    elif request.query_params.get("symbols"):
        wanted = {s.strip().strip('"').upper() for s in request.query_params["symbols"].strip("[]").split(",")}
    if wanted is not None and not wanted <= set(sim.binance):
        raise BinanceError(-1121, "Invalid symbol.")
    symbols = []
    for symbol, spec in sim.binance.items():
        if wanted is not None and symbol not in wanted:
            continue
        symbols.append({
            "symbol": symbol, "status": "TRADING", "baseAsset": spec.base, "baseAssetPrecision": 8,
            "quoteAsset": spec.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True, "ocoAllowed": True, "isSpotTradingAllowed": True, "isMarginTradingAllowed": True,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": fmt8(spec.tick), "maxPrice": "1000000.00000000", "tickSize": fmt8(spec.tick)},
                {"filterType": "LOT_SIZE", "minQty": fmt8(spec.lot), "maxQty": "9000.00000000", "stepSize": fmt8(spec.lot)},
            ],
            "permissions": [], "permissionSets": [["SPOT"]],
        })
    return {
        "timezone": "UTC",
        "serverTime": now_ms(),
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": sim.config.binance_weight_per_min},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        ],
        "exchangeFilters": [],
        "symbols": symbols,
    }


def klines(sim: Sim, request: Request) -> list:
    spec = _symbol(sim, request)
    interval = request.query_params.get("interval")
    if interval not in INTERVALS:
        raise BinanceError(-1120, "Invalid interval.")
    w = INTERVALS[interval]
    limit = _limit(request)
    start, end = _int(request, "startTime"), _int(request, "endTime")
    now = now_ms()
    top = min(end, now) if end is not None else now
    if start is not None:
        first = -(-start // w) * w
        last = min(first + (limit - 1) * w, top // w * w)
    else:
        last = top // w * w
        first = last - (limit - 1) * w
    first = max(first, sim.history_start_ms // w * w)
    if last < first:
        return []
    if w == DAY_MS:
        parts = [sim.model.day_candle(spec, d, min((d + 1) * DAY_MS, now + 1)) for d in range(first // DAY_MS, last // DAY_MS + 1)]
        return [row for c in parts if len(c) for row in kline_rows(c, w)]
    rows = kline_rows(sim.model.candles("binance", spec.market, first, min(last + w, now + 1), w), w)
    return _flat_fill(rows, last, w)


def _flat_fill(rows: list[list], last: int, w: int) -> list[list]:
    """Binance serves a kline for every window, a window without trades (the current one before its first trade, say)
    as a flat bar at the previous close with zero volume. Windows before the first bar that has trades stay out: their
    previous close would need an older lookup than the request's window."""
    if not rows:
        return rows
    filled: list[list] = []
    for row in rows:
        while filled and filled[-1][0] + w < row[0]:
            filled.append(_flat(filled[-1], filled[-1][0] + w, w))
        filled.append(row)
    while filled[-1][0] < last:
        filled.append(_flat(filled[-1], filled[-1][0] + w, w))
    return filled


def _flat(previous: list, start: int, w: int) -> list:
    close, zero = previous[4], fmt8(0.0)
    return [start, close, close, close, close, zero, start + w - 1, zero, 0, zero, zero, "0"]


def _from_id(sim: Sim, spec: MarketSpec, ident: int, agg: bool, want: int, now: int) -> Trades:
    """Trades starting at a trade id (or aggTrade id), enough for ``want`` items, none after now."""
    day = sim.model.locate(spec, ident, agg, now // DAY_MS)
    if day is None:
        return Trades.empty()
    parts, got = [], 0
    while day <= now // DAY_MS and got < want:
        t = sim.model.trades("binance", spec.market, day * DAY_MS, min((day + 1) * DAY_MS, now + 1))
        key = t.agg if agg else t.ids
        t = t.slice(int(np.searchsorted(key, ident, "left")), len(t))
        parts.append(t)
        got += len(np.unique(t.agg)) if agg else len(t)
        day += 1
    return Trades.concat(parts)


def _recent(sim: Sim, spec: MarketSpec, end: int) -> Trades:
    """The last 1000 trades (the most any call asks for) before ``end``, within a week."""
    t = sim.model.last_trades(spec, end, 1000, days=8)
    return t.slice(int(np.searchsorted(t.ts, end - 7 * DAY_MS, "left")), len(t))


def agg_trades(sim: Sim, request: Request) -> list:
    spec = _symbol(sim, request)
    limit = _limit(request)
    from_id, start, end = _int(request, "fromId"), _int(request, "startTime"), _int(request, "endTime")
    now = now_ms()
    if from_id is not None:
        return aggregate(_from_id(sim, spec, from_id, True, limit, now))[:limit]
    if start is not None and end is not None and end - start > HOUR_MS:
        raise BinanceError(-1127, "More than 1 hours between startTime and endTime.")
    if start is not None and end is not None:
        return aggregate(sim.model.trades("binance", spec.market, start, min(end + 1, now + 1)))[:limit]
    if start is not None:
        # from startTime on, as many as the limit allows: widen the window until it holds enough (or reaches now)
        for span in (HOUR_MS, 6 * HOUR_MS, DAY_MS, 7 * DAY_MS):
            aggs = aggregate(sim.model.trades("binance", spec.market, start, min(start + span, now + 1)))
            if len(aggs) > limit or start + span > now:
                break
        return aggs[:limit]
    stop = min(end + 1, now + 1) if end is not None else now + 1
    return aggregate(_recent(sim, spec, stop))[-limit:]


def historical_trades(sim: Sim, request: Request) -> list:
    spec = _symbol(sim, request)
    limit = _limit(request)
    from_id = _int(request, "fromId")
    now = now_ms()
    if from_id is not None:
        return trade_rows(_from_id(sim, spec, from_id, False, limit, now).slice(0, limit))
    t = _recent(sim, spec, now + 1)
    return trade_rows(t.slice(max(len(t) - limit, 0), len(t)))


def recent_trades(sim: Sim, request: Request) -> list:
    spec = _symbol(sim, request)
    limit = _limit(request)
    t = _recent(sim, spec, now_ms() + 1)
    return trade_rows(t.slice(max(len(t) - limit, 0), len(t)))


def _symbols(sim: Sim, request: Request) -> list[MarketSpec]:
    """``symbol=X``, ``symbols=["X","Y"]`` (a JSON array) or neither (every symbol), as Binance reads them."""
    q = request.query_params
    if q.get("symbol") and q.get("symbols"):
        raise BinanceError(-1101, "Combination of optional parameters invalid.")
    if q.get("symbol"):
        return [_symbol(sim, request)]
    if q.get("symbols"):
        try:
            names = json.loads(q["symbols"])
        except ValueError:
            names = None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise BinanceError(-1100, "Illegal characters found in parameter 'symbols'; legal range is '^\\[(\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\"){0,}){0,1}\\]$'.")
        specs = [sim.spec_or_none("binance", n) for n in names]
        if any(s is None for s in specs):
            raise BinanceError(-1121, "Invalid symbol.")
        return specs
    return list(sim.binance.values())


def _one_or_list(request: Request, rows: list):
    return rows[0] if request.query_params.get("symbol") else rows


def _book(spec: MarketSpec, price: float, buy: bool) -> tuple[float, float]:
    """Best bid and ask around the last trade: a taker buy lifted the ask, a taker sell hit the bid (as Upbit's
    trade messages report them)."""
    return (price - spec.tick, price) if buy else (price, price + spec.tick)


async def ticker_24hr(sim: Sim, request: Request):
    """The rolling 24 h window ending now (not the UTC day), as Binance computes it. A symbol's first window generates
    its last two days (~0.1 s each, more on a busy machine): the loop is yielded between symbols, so a cold request for
    every symbol delays the streams by one symbol's work at a time, not by all of it."""
    specs = _symbols(sim, request)
    kind = request.query_params.get("type", "FULL").upper()
    if kind not in ("FULL", "MINI"):
        raise BinanceError(-1100, "Illegal characters found in parameter 'type'.")
    now = now_ms()
    rows = []
    for spec in specs:
        await asyncio.sleep(0)
        w = sim.model.window(spec, now - DAY_MS + 1, now + 1)
        before = sim.model.last_trades(spec, now - DAY_MS + 1, 1)
        prev = float(before.price[0]) if len(before) else (w.open if w.count else 0.0)
        last = w.close if w.count else prev
        open_ = w.open if w.count else prev
        change = last - open_ if w.count else 0.0
        row = {"symbol": spec.market}
        if kind == "FULL":
            bid, ask = _book(spec, last, w.last_buy)
            row.update({
                "priceChange": fmt8(change),
                "priceChangePercent": f"{(change / open_ * 100) if open_ else 0.0:.3f}",
                "weightedAvgPrice": fmt8(w.quote / w.volume if w.volume else 0.0),
                "prevClosePrice": fmt8(prev),
                "lastPrice": fmt8(last),
                "lastQty": fmt8(w.last_volume),
                "bidPrice": fmt8(bid), "bidQty": fmt8(0.5), "askPrice": fmt8(ask), "askQty": fmt8(0.5),
            })
        else:
            row["lastPrice"] = fmt8(last)
        row.update({
            "openPrice": fmt8(open_),
            "highPrice": fmt8(w.high if w.count else 0.0),
            "lowPrice": fmt8(w.low if w.count else 0.0),
            "volume": fmt8(w.volume),
            "quoteVolume": fmt8(w.quote),
            "openTime": now - DAY_MS,
            "closeTime": now,
            "firstId": w.first_id if w.count else -1,
            "lastId": w.last_id if w.count else -1,
            "count": w.count,
        })
        rows.append(row)
    return _one_or_list(request, rows)


def ticker_price(sim: Sim, request: Request):
    now = now_ms()
    rows = []
    for spec in _symbols(sim, request):
        t = sim.model.last_trades(spec, now + 1, 1)
        rows.append({"symbol": spec.market, "price": fmt8(float(t.price[0]) if len(t) else 0.0)})
    return _one_or_list(request, rows)


def book_ticker(sim: Sim, request: Request):
    now = now_ms()
    rows = []
    for spec in _symbols(sim, request):
        t = sim.model.last_trades(spec, now + 1, 1)
        bid, ask = _book(spec, float(t.price[0]), bool(t.buy[0])) if len(t) else (0.0, 0.0)
        rows.append({"symbol": spec.market, "bidPrice": fmt8(bid), "bidQty": fmt8(0.5), "askPrice": fmt8(ask),
                     "askQty": fmt8(0.5)})
    return _one_or_list(request, rows)


def avg_price(sim: Sim, request: Request) -> dict:
    """Volume-weighted price of the last 5 minutes, as Binance's avgPrice."""
    spec = _symbol(sim, request)
    now = now_ms()
    w = sim.model.window(spec, now - 5 * MIN_MS + 1, now + 1)
    return {"mins": 5, "price": fmt8(w.quote / w.volume if w.volume else 0.0), "closeTime": w.last_ts or now}


def routes(sim: Sim) -> list[Route]:
    return [
        Route("/api/v3/ping", weighted(sim, "ping", lambda s, r: {})),
        Route("/api/v3/time", weighted(sim, "time", lambda s, r: {"serverTime": now_ms()})),
        Route("/api/v3/exchangeInfo", weighted(sim, "exchangeInfo", exchange_info)),
        Route("/api/v3/klines", weighted(sim, "klines", klines)),
        Route("/api/v3/aggTrades", weighted(sim, "aggTrades", agg_trades)),
        Route("/api/v3/historicalTrades", weighted(sim, "historicalTrades", historical_trades)),
        Route("/api/v3/trades", weighted(sim, "trades", recent_trades)),
        Route("/api/v3/ticker/24hr", weighted(sim, "ticker24hr", ticker_24hr, ticker_weight)),
        Route("/api/v3/ticker/price", weighted(sim, "tickerPrice", ticker_price, price_weight)),
        Route("/api/v3/ticker/bookTicker", weighted(sim, "bookTicker", book_ticker, price_weight)),
        Route("/api/v3/avgPrice", weighted(sim, "avgPrice", avg_price)),
    ]
