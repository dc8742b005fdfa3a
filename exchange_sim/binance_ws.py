"""Binance WebSocket: raw ``/ws/<stream>`` and combined ``/stream?streams=a/b`` with trade and aggTrade streams.

Text frames; the server's WebSocket pings come from uvicorn (``--ws-ping-interval``, 20 s like Binance).
"""

from __future__ import annotations

import json
import re

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from exchange_sim.binance_rest import aggregate
from exchange_sim.model import Trades
from exchange_sim.state import Sim, now_ms
from exchange_sim.streams import Cursor, pump
from exchange_sim.ws_common import Connection, asgi_endpoint

STREAM_RE = re.compile(r"^([a-z0-9]+)@(trade|aggTrade)$")
TRADE = '{"e":"trade","E":%d,"s":"%s","t":%d,"p":"%.8f","q":"%.8f","T":%d,"m":%s,"M":true}'


class StreamError(ValueError):
    pass


def parse_streams(sim: Sim, names: list[str]) -> dict[str, tuple[str, str]]:
    """stream name -> (SYMBOL, kind); unknown names or symbols are refused."""
    out = {}
    for name in names:
        m = STREAM_RE.match(name)
        if not m:
            raise StreamError(f"unsupported stream {name!r} (served: <symbol>@trade, <symbol>@aggTrade)")
        symbol = m.group(1).upper()
        if sim.spec_or_none("binance", symbol) is None:
            raise StreamError(f"unknown symbol in stream {name!r}")
        out[name] = (symbol, m.group(2))
    return out


class BinanceConnection(Connection):
    binary = False

    def __init__(self, sim: Sim, ws: WebSocket, send, streams: dict[str, tuple[str, str]], combined: bool):
        super().__init__(sim, ws, send)
        self.streams, self.combined = streams, combined
        self.frames.drift_offset = 2 if combined else 1
        self.cursors: dict[str, Cursor] = {}

    def restart(self) -> None:
        now = now_ms()
        for symbol, _ in self.streams.values():
            if symbol not in self.cursors:
                self.cursors[symbol] = Cursor(self.sim, self.sim.binance[symbol], now)
        live = {s for s, _ in self.streams.values()}
        self.cursors = {s: c for s, c in self.cursors.items() if s in live}
        if self.cursors:
            self.start_stream(pump(self.sim, dict(self.cursors), self.emit))
        else:
            self.stop()

    async def emit(self, symbol: str, t: Trades) -> None:
        frames: list[str] = []
        sent = now_ms()
        for name, (sym, kind) in self.streams.items():
            if sym != symbol:
                continue
            if kind == "trade":
                payloads = [
                    TRADE % (max(sent, ts), symbol, i, p, v, ts, "false" if b else "true")
                    for i, p, v, ts, b in zip(t.ids.tolist(), t.price.tolist(), t.volume.tolist(), t.ts.tolist(), t.buy.tolist())
                ]
            else:
                payloads = [
                    json.dumps({"e": "aggTrade", "E": max(sent, a["T"]), "s": symbol, **a}, separators=(",", ":"))
                    for a in aggregate(t)
                ]
            if self.combined:
                payloads = ['{"stream":"%s","data":%s}' % (name, p) for p in payloads]
            frames.extend(payloads)
        await self.send(frames, symbol, len(t))

    async def on_text(self, text: str) -> None:
        try:
            req = json.loads(text)
            method, ident = req["method"], req.get("id")
        except (ValueError, TypeError, KeyError):
            await self.send_now([json.dumps({"error": {"code": 3, "msg": "Invalid JSON: expected a method request"}, "id": None})])
            return
        params = req.get("params") or []
        try:
            if method == "SUBSCRIBE":
                self.streams.update(parse_streams(self.sim, params))
                self.restart()
                result = None
            elif method == "UNSUBSCRIBE":
                for name in params:
                    self.streams.pop(name, None)
                self.restart()
                result = None
            elif method == "LIST_SUBSCRIPTIONS":
                result = list(self.streams)
            else:
                raise StreamError(f"Invalid request: unknown method {method!r}")
        except StreamError as exc:
            await self.send_now([json.dumps({"error": {"code": 2, "msg": str(exc)}, "id": ident})])
            return
        await self.send_now([json.dumps({"result": result, "id": ident})])


async def _serve(websocket: WebSocket, send, names: list[str], combined: bool) -> None:
    sim: Sim = websocket.app.state.sim
    try:
        streams = parse_streams(sim, names)
    except StreamError as exc:
        await websocket.close(code=1008, reason=str(exc)[:120])
        return
    await websocket.accept()
    conn = BinanceConnection(sim, websocket, send, streams, combined)
    conn.restart()
    try:
        await conn.run()
    except WebSocketDisconnect:
        pass
    finally:
        conn.stop()


async def raw_endpoint(websocket: WebSocket, send) -> None:
    path = websocket.path_params.get("streams", "")
    await _serve(websocket, send, [s for s in path.split("/") if s], combined=False)


async def combined_endpoint(websocket: WebSocket, send) -> None:
    names = [s for s in websocket.query_params.get("streams", "").split("/") if s]
    await _serve(websocket, send, names, combined=True)


def routes() -> list[WebSocketRoute]:
    return [
        WebSocketRoute("/ws", asgi_endpoint(raw_endpoint)),
        WebSocketRoute("/ws/{streams:path}", asgi_endpoint(raw_endpoint)),
        WebSocketRoute("/stream", asgi_endpoint(combined_endpoint)),
    ]
