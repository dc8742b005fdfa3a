"""The ``/v1`` read endpoints (docs/api.md, "Endpoints"): each parses its parameters (``params``), builds its SQL from
its resource (``queries``), reads it in one read transaction (``reads``) and writes the answer (``formats``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, WebSocket
from starlette.responses import Response

from cryptoflow_serving import formats, health, params, queries
from cryptoflow_serving.errors import ApiError, bad_parameter
from cryptoflow_serving.formats import JSONResponse
from cryptoflow_serving.live import serve_client

router = APIRouter(prefix="/v1")

Exchange = Annotated[str | None, Query(description="upbit or binance")]
Market = Annotated[list[str] | None, Query(description="market code(s): repeat or comma-separate (KRW-BTC, BTCUSDT)")]
Start = Annotated[str | None, Query(description="inclusive; ISO 8601 or epoch seconds")]
End = Annotated[str | None, Query(description="exclusive; ISO 8601 or epoch seconds")]
Limit = Annotated[int | None, Query(description="rows per page (JSON at most 10000; bulk formats 1,000,000)")]
Order = Annotated[str | None, Query(description="asc (default) or desc")]
CursorQ = Annotated[str | None, Query(description="next_cursor of the previous page")]
Format = Annotated[str | None, Query(description="json, csv, arrow, parquet (or an Accept header)")]
BAR_SOURCES = {"1m": ("trades", "exchange"), "1d": ("exchange",)}


@dataclass
class Common:
    exchange: str | None
    markets: tuple[str, ...]
    start: Any
    end: Any
    limit: int
    order: str
    cursor: str | None
    fmt: str


def refuse_unknown_parameters(request: Request) -> None:
    """A misspelt parameter (``strat=``) is a 400 naming the allowed ones, not a filter silently left out."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    allowed = {p.alias for p in dependant.query_params}
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise bad_parameter(unknown[0][:40], f"unknown parameter {unknown[0][:40]!r}: allowed {', '.join(sorted(allowed))}")


def _common(request: Request, exchange: str | None, market: list[str] | None, start: str | None, end: str | None,
            limit: int | None, order: str | None, cursor: str | None, format: str | None,
            day: str | None = None) -> Common:
    refuse_unknown_parameters(request)
    fmt = formats.negotiate(format, request.headers.get("accept"))
    ex = params.exchange(exchange)
    lo, hi = params.time_range(start, end, day)
    return Common(ex, tuple(params.markets(market, ex)), lo, hi, params.limit(limit, fmt in formats.BULK),
                  params.order(order), cursor, fmt)


async def _page(request: Request, name: str, c: Common, extra: tuple[tuple[str, Any], ...] = ()) -> Response:
    resource = queries.RESOURCES[name]
    after = params.cursor(c.cursor, len(resource.key), c.order)
    f = queries.Filters(c.exchange, c.markets, c.start, c.end, extra)
    sql, values = queries.page_sql(resource, f, order=c.order, limit=c.limit, after=after)
    reader = request.app.state.reader

    if c.fmt in formats.BULK:
        def bulk(con, snapshot):
            out, rows, last = formats.spool(con.execute(sql, values).to_arrow_reader(formats.BATCH_ROWS), c.fmt)
            return snapshot, out, rows, last

        snapshot, out, rows, last = await reader.run(bulk, resource)
        headers = {"X-Lake-Snapshot": str(snapshot), "X-Row-Count": str(rows)}
        if rows == c.limit and last is not None:
            headers["X-Next-Cursor"] = params.Cursor(tuple(last[k] for k in resource.key), c.order).encode()
        return formats.file_response(out, c.fmt, headers)

    cache = request.app.state.cache
    key = (name, sql, tuple(values))
    body = cache.get(key)
    if body is not None:
        return Response(body, media_type=formats.MEDIA_TYPES["json"], headers={"X-Cache": "hit"})

    def page(con, snapshot) -> tuple[int, bytes]:
        # Through Arrow, and encoded on the worker thread: DuckDB's row-by-row Python conversion cost ~2x more for a
        # day of bars, and the event loop never spends its time on a large answer's JSON.
        data = con.execute(sql, values).to_arrow_table().to_pylist()
        next_cursor = None
        if len(data) == c.limit:
            next_cursor = params.Cursor(tuple(data[-1][k] for k in resource.key), c.order).encode()
        return snapshot, formats.json_bytes({"data": data, "count": len(data), "next_cursor": next_cursor,
                                             "snapshot": snapshot})

    snapshot, body = await reader.run(page, resource)
    cache.put(key, resource.table, *queries.time_bounds(resource, f), body, snapshot)
    return Response(body, media_type=formats.MEDIA_TYPES["json"], headers={"X-Cache": "miss"})


async def _ready_feed(request: Request):
    """The live feed, once it has read the lake (its price and statistics tables are what "now" answers are made of)."""
    feed = request.app.state.feed
    if not feed.ready.is_set():
        await feed.ready.wait()
    if feed.snapshot is None:
        await request.app.state.reader.run(lambda con, snap: None)  # raises the lake's own error (no lake yet, ...)
        raise ApiError(503, "starting", "the live feed has not read the lake yet: retry in a second",
                       headers={"Retry-After": "1"})
    return feed


@router.get("/markets", summary="Markets and their latest trade price")
async def markets(request: Request, exchange: Exchange = None, market: Market = None) -> Response:
    """The latest trade of every market in `silver.trades`, kept in memory by the live feed (as fresh as its last poll,
    0.5 s by default; `snapshot` says which lake snapshot it reflects)."""
    refuse_unknown_parameters(request)
    ex = params.exchange(exchange)
    wanted = set(params.markets(market, ex))
    feed = await _ready_feed(request)
    data = [p for (e, m), p in sorted(feed.prices.items()) if (ex is None or e == ex) and (not wanted or m in wanted)]
    return JSONResponse({"data": data, "count": len(data), "next_cursor": None, "snapshot": feed.snapshot})


@router.get("/stats/24h", summary="24-hour statistics (gold.market_stats_24h)")
async def stats_24h(request: Request, exchange: Exchange = None, market: Market = None, start: Start = None,
                    end: End = None, limit: Limit = None, order: Order = None, cursor: CursorQ = None,
                    format: Format = None) -> Response:
    """Without start/end: the newest `as_of` per market, kept in memory by the live feed (at most one poll behind the
    lake; `snapshot` names the lake snapshot). With them: every `as_of` in the range, paged, read from the lake."""
    c = _common(request, exchange, market, start, end, limit, order, cursor, format)
    if c.start is not None or c.end is not None or c.cursor is not None or c.fmt != "json":
        return await _page(request, "stats_24h", c)
    feed = await _ready_feed(request)
    if feed.latest_stats is None:
        resource = queries.RESOURCES["stats_24h"]
        raise ApiError(503, "not_built", f"{resource.table} does not exist yet in this lake: it is built by "
                       f"{resource.builds}", table=resource.table)
    data = [row for row in feed.latest_stats
            if (c.exchange is None or row["exchange"] == c.exchange) and (not c.markets or row["market"] in c.markets)]
    return JSONResponse({"data": data, "count": len(data), "next_cursor": None, "snapshot": feed.latest_stats_snapshot})


@router.get("/bars/{interval}", summary="OHLCV bars: 1m from trades or the exchange's candles, 1d candles")
async def bars(request: Request, interval: str, source: str | None = None, day: str | None = None,
               exchange: Exchange = None, market: Market = None, start: Start = None, end: End = None,
               limit: Limit = None, order: Order = None, cursor: CursorQ = None, format: Format = None) -> Response:
    """`1m`: `source=trades` (gold.ohlcv_1m_from_trades, default) or `source=exchange` (silver.candles_1m).
    `1d`: silver.candles_1d. `day=YYYY-MM-DD` is shorthand for that UTC day; without a market, every market's bars
    (a day of 1-minute bars of every market in one request: use format=parquet or arrow)."""
    if interval not in BAR_SOURCES:
        raise bad_parameter("interval", f"unknown interval {interval[:20]!r}: allowed {', '.join(BAR_SOURCES)}")
    source = source or BAR_SOURCES[interval][0]
    if source not in BAR_SOURCES[interval]:
        raise bad_parameter("source", f"source={source[:20]!r} for {interval} bars: allowed "
                            f"{', '.join(BAR_SOURCES[interval])}")
    c = _common(request, exchange, market, start, end, limit, order, cursor, format, day)
    name = {("1m", "trades"): "bars_1m_trades", ("1m", "exchange"): "bars_1m_exchange",
            ("1d", "exchange"): "bars_1d_exchange"}[(interval, source)]
    return await _page(request, name, c)


async def _daily(request: Request, name: str, exchange: str | None, market: list[str] | None, start: str | None,
                 end: str | None, limit: int | None, order: str | None, cursor: str | None, format: str | None,
                 model: str | None = None, **numbers: int | None) -> Response:
    c = _common(request, exchange, market, start, end, limit, order, cursor, format)
    extra: list[tuple[str, Any]] = [(k, v) for k, v in numbers.items() if v is not None]
    if model is not None:
        extra.append(("model", params.word("model", model)))
    return await _page(request, name, c, tuple(extra))


@router.get("/indicators/daily", summary="Daily indicators (gold.indicators_daily)")
async def indicators_daily(request: Request, exchange: Exchange = None, market: Market = None, start: Start = None,
                           end: End = None, limit: Limit = None, order: Order = None, cursor: CursorQ = None,
                           format: Format = None) -> Response:
    return await _daily(request, "indicators_daily", exchange, market, start, end, limit, order, cursor, format)


@router.get("/volatility/daily", summary="Daily volatility estimates (gold.volatility_daily)")
async def volatility_daily(request: Request, exchange: Exchange = None, market: Market = None, start: Start = None,
                           end: End = None, limit: Limit = None, order: Order = None, cursor: CursorQ = None,
                           format: Format = None) -> Response:
    return await _daily(request, "volatility_daily", exchange, market, start, end, limit, order, cursor, format)


@router.get("/volatility/rolling", summary="Rolling annualized volatility (gold.volatility_rolling)")
async def volatility_rolling(request: Request, window: Annotated[int | None, Query(description="window in days")] = None,
                             exchange: Exchange = None, market: Market = None, start: Start = None, end: End = None,
                             limit: Limit = None, order: Order = None, cursor: CursorQ = None,
                             format: Format = None) -> Response:
    return await _daily(request, "volatility_rolling", exchange, market, start, end, limit, order, cursor, format,
                        window=window)


Model = Annotated[str | None, Query(description="model name, e.g. har_rv, garch, naive")]
Horizon = Annotated[int | None, Query(description="forecast horizon in days")]


@router.get("/volatility/forecast", summary="Volatility forecasts (gold.volatility_forecast)")
async def volatility_forecast(request: Request, model: Model = None, horizon_days: Horizon = None,
                              exchange: Exchange = None, market: Market = None, start: Start = None, end: End = None,
                              limit: Limit = None, order: Order = None, cursor: CursorQ = None,
                              format: Format = None) -> Response:
    """404 with a message while the forecast tables are not in this lake."""
    return await _daily(request, "volatility_forecast", exchange, market, start, end, limit, order, cursor, format,
                        model, horizon_days=horizon_days)


@router.get("/volatility/forecast/eval", summary="Forecast evaluation (gold.volatility_forecast_eval)")
async def volatility_forecast_eval(request: Request, model: Model = None, horizon_days: Horizon = None,
                                   exchange: Exchange = None, market: Market = None, start: Start = None,
                                   end: End = None, limit: Limit = None, order: Order = None, cursor: CursorQ = None,
                                   format: Format = None) -> Response:
    return await _daily(request, "volatility_forecast_eval", exchange, market, start, end, limit, order, cursor,
                        format, model, horizon_days=horizon_days)


@router.get("/sentiment/daily", summary="Daily sentiment (gold.sentiment_daily)")
async def sentiment_daily(request: Request, exchange: Exchange = None, market: Market = None, start: Start = None,
                          end: End = None, limit: Limit = None, order: Order = None, cursor: CursorQ = None,
                          format: Format = None) -> Response:
    return await _daily(request, "sentiment_daily", exchange, market, start, end, limit, order, cursor, format)


@router.get("/kimchi-premium", summary="Korean premium per minute (gold.kimchi_premium_1m)")
async def kimchi_premium(request: Request, asset: str | None = None, start: Start = None, end: End = None,
                         limit: Limit = None, order: Order = None, cursor: CursorQ = None,
                         format: Format = None) -> Response:
    c = _common(request, None, None, start, end, limit, order, cursor, format)
    a = params.asset(asset)
    return await _page(request, "kimchi_premium", c, (("asset", a),) if a else ())


ALERT_STATUSES = ("pending", "sent", "failed")


@router.get("/alerts", summary="Alerts (gold.alerts) by rule, status and time")
async def alerts(request: Request, rule: str | None = None, status: str | None = None, exchange: Exchange = None,
                 market: Market = None, start: Start = None, end: End = None, limit: Limit = None,
                 order: Order = None, cursor: CursorQ = None, format: Format = None) -> Response:
    """The time range applies to `triggered_at`; newest first with `order=desc`."""
    c = _common(request, exchange, market, start, end, limit, order, cursor, format)
    extra = []
    if rule is not None:
        extra.append(("rule", params.word("rule", rule)))
    if status is not None:
        extra.append(("status", params.word("status", status, ALERT_STATUSES)))
    return await _page(request, "alerts", c, tuple(extra))


@router.get("/health", summary="Data health: freshness per table and market, ingest, gaps, outbox")
async def data_health(request: Request) -> Response:
    refuse_unknown_parameters(request)
    feed = request.app.state.feed
    prices = dict(feed.prices)
    body = await request.app.state.reader.run(lambda con, snapshot: health.read(con, snapshot, prices))
    return JSONResponse(body)


@router.get("/server", summary="This API process: live feed and read statistics")
async def server(request: Request) -> Response:
    """The live feed's counters (subscribers, dropped slow clients, deepest queue) and how long read transactions
    were open (what a writer could wait behind; ADR 0020)."""
    feed, reader = request.app.state.feed, request.app.state.reader
    held = sorted(reader.held)

    def pct(q: float) -> float | None:
        return round(held[min(len(held) - 1, int(q * len(held)))] * 1000, 3) if held else None

    return JSONResponse({"live": {**feed.stats, "subscribers": len(feed.subscribers), "snapshot": feed.snapshot,
                                  "queue_size": feed.queue_size, "poll_s": feed.poll_s},
                         "cache": request.app.state.cache.stats(),
                         "reads": {"count": reader.reads, "held_ms_p50": pct(0.5), "held_ms_p99": pct(0.99),
                                   "held_ms_max": round(held[-1] * 1000, 3) if held else None}})


@router.websocket("/live")
async def live(websocket: WebSocket) -> None:
    await serve_client(websocket, websocket.app.state.feed, websocket.app.state.keys)
