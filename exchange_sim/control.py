"""/_sim: ground truth (trades, malformed frames sent), price shocks, fault switches, status. Never rate limited,
never faulted."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from exchange_sim.model import DAY_MS
from exchange_sim.state import Sim, now_ms

MAX_JSON_TRADES = 200_000  # beyond this, ask for format=ndjson (streamed day by day)


def parse_time(text: str) -> int:
    """Epoch ms, or ISO 8601 (UTC when no offset)."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _market_args(sim: Sim, request: Request):
    q = request.query_params
    market = q.get("market", "")
    exchange = q.get("exchange") or ("upbit" if "-" in market else "binance")
    spec = sim.spec_or_none(exchange, market)
    if spec is None:
        raise ValueError(f"unknown market {exchange}:{market!r}")
    return spec


def _records(spec, t) -> list[dict]:
    upbit = spec.exchange == "upbit"
    rows = []
    for ts, p, v, b, i, a in zip(t.ts.tolist(), t.price.tolist(), t.volume.tolist(), t.buy.tolist(), t.ids.tolist(), t.agg.tolist()):
        row = {"ts": ts, "price": p, "volume": v, "side": "buy" if b else "sell"}
        if upbit:
            row["sequential_id"] = i
        else:
            row["trade_id"], row["agg_id"] = i, a
        rows.append(row)
    return rows


def ground_truth(sim: Sim):
    async def endpoint(request: Request) -> Response:
        q = request.query_params
        try:
            spec = _market_args(sim, request)
            start = parse_time(q["start"]) if q.get("start") else sim.history_start_ms
            end = parse_time(q["end"]) if q.get("end") else now_ms() + 1
        except (ValueError, KeyError) as exc:
            return _bad(str(exc))
        if q.get("format", "json") == "ndjson":
            async def lines():
                for day in range(start // DAY_MS, (end - 1) // DAY_MS + 1):
                    t = sim.model.trades(spec.exchange, spec.market, max(start, day * DAY_MS), min(end, (day + 1) * DAY_MS))
                    yield "".join(json.dumps(r) + "\n" for r in _records(spec, t))

            return StreamingResponse(lines(), media_type="application/x-ndjson")
        if end - start > 31 * DAY_MS:
            return _bad("range too long for JSON: use format=ndjson")
        t = sim.model.trades(spec.exchange, spec.market, start, end)
        if len(t) > MAX_JSON_TRADES:
            return _bad(f"{len(t)} trades: use format=ndjson")
        return JSONResponse({"exchange": spec.exchange, "market": spec.market, "start": start, "end": end,
                             "count": len(t), "trades": _records(spec, t)})

    return endpoint


def shock(sim: Sim):
    async def endpoint(request: Request) -> Response:
        try:
            spec = _market_args(sim, request)
            pct = float(request.query_params["pct"])
            at = sim.shock(spec.exchange, spec.market, pct)
        except (ValueError, KeyError) as exc:
            return _bad(f"shock needs market and pct: {exc}")
        return JSONResponse({"exchange": spec.exchange, "market": spec.market, "pct": pct, "at_ms": at})

    return endpoint


def faults(sim: Sim):
    async def endpoint(request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = json.loads(await request.body() or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("faults must be a JSON object")
                sim.faults.update(changes)
            except ValueError as exc:
                return _bad(str(exc))
        return JSONResponse(sim.faults.as_dict())

    return endpoint


def malformed(sim: Sim):
    """Ground truth for dead letters: every malformed frame made (serial, exchange, connection, when its send
    returned) and how each WebSocket connection ended."""
    async def endpoint(request: Request) -> Response:
        return JSONResponse(sim.faults.malformed.as_dict())

    return endpoint


def reset(sim: Sim):
    async def endpoint(request: Request) -> Response:
        sim.faults.update({k: type(v)() for k, v in sim.faults.as_dict().items()})
        sim.upbit_limiter.reset()
        sim.binance_limiter.reset()
        return JSONResponse({"ok": True})

    return endpoint


def status(sim: Sim):
    async def endpoint(request: Request) -> Response:
        c = sim.counters
        return JSONResponse({
            "status": "ok",
            "now_ms": now_ms(),
            "history_start_ms": sim.history_start_ms,
            "live_epoch_ms": sim.model.config.live_epoch_ms,
            "seed": sim.config.seed,
            "firehose": sim.config.firehose,
            "upbit_markets": list(sim.upbit),
            "binance_symbols": list(sim.binance),
            # live trades/s per market (before shock bursts): the total split by volume share, or the flat rate
            "live_rates": {f"{e}:{m}": sim.model.live_rate(spec) for e, specs in (("upbit", sim.upbit),
                           ("binance", sim.binance)) for m, spec in specs.items()},
            "shocks": sim.model.shocks(),
            "model_cache": sim.model.cache_info(),
            "faults": sim.faults.as_dict(),
            "counters": {"rest_requests": c.rest_requests, "ws_connections": c.ws_connections,
                         "ws_messages": c.ws_messages, "trades_sent": dict(c.per_market_sent)},
        })

    return endpoint


def routes(sim: Sim) -> list[Route]:
    return [
        Route("/_sim/health", lambda r: JSONResponse({"status": "ok"})),
        Route("/_sim/status", status(sim)),
        Route("/_sim/trades", ground_truth(sim)),
        Route("/_sim/shock", shock(sim), methods=["POST"]),
        Route("/_sim/faults", faults(sim), methods=["GET", "POST"]),
        Route("/_sim/malformed", malformed(sim)),
        Route("/_sim/reset", reset(sim), methods=["POST"]),
    ]
