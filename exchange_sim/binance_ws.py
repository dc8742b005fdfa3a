"""Binance WebSocket: raw ``/ws/<stream>`` and combined ``/stream?streams=a/b``; trade, aggTrade and kline streams.

Text frames; the server's WebSocket pings come from uvicorn (``--ws-ping-interval``, 20 s like Binance).
"""

from __future__ import annotations

import json
import re

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from exchange_sim.binance_rest import INTERVALS, aggregate, fmt8
from exchange_sim.model import Trades
from exchange_sim.state import Sim, now_ms
from exchange_sim.streams import Cursor, pump
from exchange_sim.ws_common import Connection, asgi_endpoint

STREAM_RE = re.compile(r"^([a-z0-9]+)@(trade|aggTrade|kline_(?:%s))$" % "|".join(INTERVALS))
KLINE_EVERY_MS = 1000  # an open kline is re-sent at most once a second (Binance: every 1-2 s); a closed one at once
TRADE = '{"e":"trade","E":%d,"s":"%s","t":%d,"p":"%.8f","q":"%.8f","T":%d,"m":%s,"M":true}'


class StreamError(ValueError):
    pass


def parse_streams(sim: Sim, names: list[str]) -> dict[str, tuple[str, str]]:
    """stream name -> (SYMBOL, kind); unknown names or symbols are refused."""
    out = {}
    for name in names:
        m = STREAM_RE.match(name)
        if not m:
            raise StreamError(f"unsupported stream {name!r} (served: <symbol>@trade, @aggTrade, @kline_<interval>)")
        symbol = m.group(1).upper()
        if sim.spec_or_none("binance", symbol) is None:
            raise StreamError(f"unknown symbol in stream {name!r}")
        out[name] = (symbol, m.group(2))
    return out


class BinanceConnection(Connection):
    exchange = "binance"
    binary = False

    def __init__(self, sim: Sim, ws: WebSocket, send, streams: dict[str, tuple[str, str]], combined: bool):
        super().__init__(sim, ws, send)
        self.streams, self.combined = streams, combined
        self.frames.drift_offset = 2 if combined else 1
        self.cursors: dict[str, Cursor] = {}
        self.klines: dict[str, tuple[int, int]] = {}  # kline stream -> (open window start, wall ms it was last sent)

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
            elif kind == "aggTrade":
                payloads = [
                    json.dumps({"e": "aggTrade", "E": max(sent, a["T"]), "s": symbol, **a}, separators=(",", ":"))
                    for a in aggregate(t)
                ]
            else:
                payloads = self._klines(name, symbol, kind.removeprefix("kline_"), t, sent)
            if self.combined:
                payloads = ['{"stream":"%s","data":%s}' % (name, p) for p in payloads]
            frames.extend(payloads)
        await self.send(frames, symbol, len(t))

    def _klines(self, name: str, symbol: str, interval: str, t: Trades, sent: int) -> list[str]:
        """Closed klines for every window this batch finished, then the open one (throttled), from the model's trades."""
        w = INTERVALS[interval]
        starts = sorted(set((t.ts // w * w).tolist()))
        current = starts[-1]
        prev = self.klines.get(name)
        to_close = set(starts[:-1])
        if prev is not None and prev[0] < current:
            to_close.add(prev[0])
        out = [self._kline(symbol, interval, start, start + w, True, sent) for start in sorted(to_close)]
        last_sent = prev[1] if prev is not None and prev[0] == current else 0
        if sent - last_sent >= KLINE_EVERY_MS:
            out.append(self._kline(symbol, interval, current, int(t.ts[-1]) + 1, False, sent))
            last_sent = sent
        self.klines[name] = (current, last_sent)
        return [m for m in out if m]

    def _kline(self, symbol: str, interval: str, start: int, until: int, closed: bool, sent: int) -> str:
        w = INTERVALS[interval]
        c = self.sim.model.candles("binance", symbol, start, until, w)
        if not len(c):
            return ""
        k = {"t": start, "T": start + w - 1, "s": symbol, "i": interval, "f": int(c.first_id[0]), "L": int(c.last_id[0]),
             "o": fmt8(c.open[0]), "c": fmt8(c.close[0]), "h": fmt8(c.high[0]), "l": fmt8(c.low[0]),
             "v": fmt8(c.volume[0]), "n": int(c.count[0]), "x": closed, "q": fmt8(c.quote[0]),
             "V": fmt8(c.buy_volume[0]), "Q": fmt8(c.buy_quote[0]), "B": "0"}
        return json.dumps({"e": "kline", "E": max(sent, int(c.last_ts[0])), "s": symbol, "k": k}, separators=(",", ":"))

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
