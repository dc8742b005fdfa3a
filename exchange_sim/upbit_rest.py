"""Upbit quotation REST: markets, minute/day candles, trade ticks, tickers; rate limited per group with Remaining-Req."""

from __future__ import annotations

import asyncio
import inspect
import re
from datetime import datetime, timezone
from typing import Awaitable, Callable

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from exchange_sim import upbit_shapes as shapes
from exchange_sim.model import DAY_MS, MIN_MS
from exchange_sim.state import Sim, client_of, now_ms

MINUTE_UNITS = (1, 3, 5, 10, 15, 30, 60, 240)
_TIME_RE = re.compile(r"^(\d{2}):?(\d{2}):?(\d{2})$")


class UpbitError(Exception):
    def __init__(self, status: int, name: str, message: str):
        super().__init__(message)
        self.status, self.name, self.message = status, name, message


def _error(status: int, name: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"name": name, "message": message}}, status_code=status)


def parse_to(text: str) -> int:
    """Upbit's ``to``: ISO 8601 with ``T`` or a space, optional offset; no offset means UTC. Returns epoch ms."""
    raw = text.strip().replace(" ", "T", 1) if "T" not in text else text.strip()
    if raw.endswith("Z"):
        raw = raw[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        raise UpbitError(400, "invalid_parameter", f"to: cannot parse {text!r} (expected e.g. 2025-06-24T04:56:53Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _count(request: Request, maximum: int) -> int:
    raw = request.query_params.get("count", "1")
    try:
        count = int(raw)
    except ValueError:
        raise UpbitError(400, "invalid_parameter", f"count must be an integer, got {raw!r}") from None
    if not 1 <= count <= maximum:
        raise UpbitError(400, "invalid_parameter", f"count must be between 1 and {maximum}, got {count}")
    return count


def _market(sim: Sim, request: Request):
    market = request.query_params.get("market")
    if not market:
        raise UpbitError(400, "validation_error", "market is required")
    spec = sim.spec_or_none("upbit", market)
    if spec is None:
        raise UpbitError(404, "404", "Code not found")
    return spec


def limited(sim: Sim, group: str, handler: Callable[[Sim, Request], Awaitable[Response] | Response]):
    async def endpoint(request: Request) -> Response:
        verdict = sim.upbit_limiter.check(client_of(request), group, now_ms() / 1000, "origin" in request.headers)
        if verdict.status == 429:
            return PlainTextResponse("Too many API requests.", status_code=429, headers=verdict.headers)
        if verdict.status == 418:
            response = _error(418, "418", "Too many requests after 429s: this address is blocked for a while")
            response.headers.update(verdict.headers)
            return response
        response = await sim.rest_faults()
        if response is None:
            try:
                response = handler(sim, request)
                if inspect.isawaitable(response):
                    response = await response
            except UpbitError as exc:
                response = _error(exc.status, exc.name, exc.message)
        response.headers.update(verdict.headers)
        return response

    return endpoint


def market_all(sim: Sim, request: Request) -> Response:
    q = request.query_params
    details = q.get("is_details", q.get("isDetails", "false")).lower() == "true"  # isDetails: the older spelling
    rows = []
    for market, spec in sim.upbit.items():
        row = {"market": market, "korean_name": spec.korean_name, "english_name": spec.english_name}
        if details:
            row["market_event"] = {"warning": False, "caution": {
                "PRICE_FLUCTUATIONS": False, "TRADING_VOLUME_SOARING": False, "DEPOSIT_AMOUNT_SOARING": False,
                "GLOBAL_PRICE_DIFFERENCES": False, "CONCENTRATION_OF_SMALL_ACCOUNTS": False}}
        rows.append(row)
    return JSONResponse(rows)


def minute_candles(sim: Sim, request: Request) -> Response:
    try:
        unit = int(request.path_params["unit"])
    except ValueError:
        unit = -1
    if unit not in MINUTE_UNITS:
        raise UpbitError(400, "invalid_parameter", f"unit must be one of {MINUTE_UNITS}")
    spec = _market(sim, request)
    count = _count(request, 200)
    now = now_ms()
    to = parse_to(request.query_params["to"]) if request.query_params.get("to") else now + 1
    window = unit * MIN_MS
    last = (min(to, now + 1) - 1) // window * window
    first = last - (count - 1) * window
    c = sim.model.candles("upbit", spec.market, first, min(last + window, now + 1), window)
    rows = shapes.minute_candle_rows(spec.market, c, unit)
    every = sim.faults.rest_bad_candle_every
    if every:
        # A bad row the platform must route to dead letters: which minutes is fixed, so a test can count them.
        bad = {shapes.iso(int(start)) for start in c.start if int(start) // MIN_MS % every == 0}
        for row in rows:
            if row["candle_date_time_utc"] in bad:
                row["low_price"] = row["high_price"] * 1.5
    return JSONResponse(rows)


def day_candles(sim: Sim, request: Request) -> Response:
    spec = _market(sim, request)
    count = _count(request, 200)
    now = now_ms()
    to = parse_to(request.query_params["to"]) if request.query_params.get("to") else now + 1
    last_day = (min(to, now + 1) - 1) // DAY_MS
    converting = request.query_params.get("converting_price_unit")
    rows = []
    for day in range(last_day, max(last_day - count, sim.history_start_ms // DAY_MS - 1), -1):
        c = sim.model.day_candle(spec, day, min((day + 1) * DAY_MS, now + 1))
        if len(c):
            rows.append(shapes.day_candle_row(spec.market, c, sim.model.day_close(spec, day - 1), converting))
    return JSONResponse(rows)


def trade_ticks(sim: Sim, request: Request) -> Response:
    spec = _market(sim, request)
    count = _count(request, 500)
    now = now_ms()
    q = request.query_params
    days_ago = 0
    if q.get("days_ago"):
        try:
            days_ago = int(q["days_ago"])
        except ValueError:
            days_ago = -1
        if not 1 <= days_ago <= 7:
            raise UpbitError(400, "invalid_parameter", "days_ago must be between 1 and 7")
    day = now // DAY_MS - days_ago
    if not days_ago and not len(sim.model.trades("upbit", spec.market, day * DAY_MS, now + 1)):
        day -= 1  # without days_ago Upbit answers for the most recent trade date: just after 00:00 UTC, yesterday
    end = min((day + 1) * DAY_MS, now + 1)
    if q.get("to"):
        m = _TIME_RE.match(q["to"].strip())
        if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59 or int(m.group(3)) > 59:
            raise UpbitError(400, "invalid_parameter", f"to must be HHmmss or HH:mm:ss, got {q['to']!r}")
        end = min(end, day * DAY_MS + (int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))) * 1000)
    cursor = None
    if q.get("cursor"):
        try:
            cursor = int(q["cursor"])
        except ValueError:
            raise UpbitError(400, "invalid_parameter", f"cursor must be a sequential_id, got {q['cursor']!r}") from None
        end = min(end, cursor // 10_000 + 1)
    t = sim.model.trades("upbit", spec.market, day * DAY_MS, end)
    hi = len(t) if cursor is None else int(np.searchsorted(t.ids, cursor, "left"))
    t = t.slice(max(hi - count, 0), hi)
    return JSONResponse(shapes.tick_rows(spec.market, t, sim.model.day_close(spec, day - 1)))


async def _tickers(sim: Sim, markets: list[str]) -> Response:
    """Tickers of many markets; a market's first ticker generates its last two days, so the loop is yielded between
    markets (the streams wait for one market's work at a time, not all of it)."""
    now = now_ms()
    rows = []
    for market in markets:
        spec = sim.spec_or_none("upbit", market)
        if spec is None:
            raise UpbitError(404, "404", "Code not found")
        await asyncio.sleep(0)
        fields = shapes.ticker_fields(sim.model, spec, now)
        if fields is not None:
            rows.append(shapes.rest_ticker(market, fields))
    return JSONResponse(rows)


async def ticker(sim: Sim, request: Request) -> Response:
    markets = [m.strip() for m in request.query_params.get("markets", "").split(",") if m.strip()]
    if not markets:
        raise UpbitError(400, "validation_error", "markets is required")
    return await _tickers(sim, markets)


async def ticker_all(sim: Sim, request: Request) -> Response:
    quotes = [q.strip() for q in request.query_params.get("quote_currencies", "KRW,BTC,USDT").split(",") if q.strip()]
    return await _tickers(sim, [m for m, spec in sim.upbit.items() if spec.quote in quotes])


def routes(sim: Sim) -> list[Route]:
    return [
        Route("/v1/market/all", limited(sim, "market", market_all)),
        Route("/v1/candles/minutes/{unit}", limited(sim, "candle", minute_candles)),
        Route("/v1/candles/days", limited(sim, "candle", day_candles)),
        Route("/v1/trades/ticks", limited(sim, "trade", trade_ticks)),
        Route("/v1/ticker", limited(sim, "ticker", ticker)),
        Route("/v1/ticker/all", limited(sim, "ticker", ticker_all)),
    ]
