"""Binance WebSocket: raw ``/ws``, ``/ws/<stream>[/<stream>...]`` and combined ``/stream?streams=a/b`` (or ``/stream`` plus
SUBSCRIBE); trade, aggTrade and kline streams; SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY.

A path segment without ``@`` is not a stream name: clients such as ccxt connect to ``/ws/<connection number>`` and
subscribe afterwards, which Binance accepts, so such segments are ignored. A stream name the simulator does not serve
is refused (close before accept: HTTP 403). Limits as Binance enforces them: 1024 streams per connection (a SUBSCRIBE
beyond it gets an error answer, a URL beyond it is refused) and 5 incoming messages per second (the connection is
closed). Text frames; the server's WebSocket pings come from uvicorn (``--ws-ping-interval``, 20 s like Binance).
"""

from __future__ import annotations

import json
import re
import time
from collections import deque

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from exchange_sim.binance_rest import INTERVALS, aggregate, fmt8
from exchange_sim.model import Trades
from exchange_sim.state import Sim, now_ms
from exchange_sim.streams import Cursor, open_cursors, pump
from exchange_sim.ws_common import Connection, asgi_endpoint

STREAM_RE = re.compile(r"^([a-z0-9]+)@(trade|aggTrade|kline_(?:%s))$" % "|".join(INTERVALS))
MAX_STREAMS = 1024  # per connection
MAX_INCOMING_PER_S = 5  # messages from the client per second (Binance disconnects beyond it)
KLINE_EVERY_MS = 1000  # an open kline is re-sent at most once a second (Binance: every 1-2 s); a closed one at once
TRADE = '{"e":"trade","E":%d,"s":"%s","t":%d,"p":"%.8f","q":"%.8f","T":%d,"m":%s,"M":true}'


class StreamError(ValueError):
    def __init__(self, msg: str, code: int = 2):
        super().__init__(msg)
        self.code = code


def parse_streams(sim: Sim, names: list[str]) -> dict[str, tuple[str, str]]:
    """stream name -> (SYMBOL, kind); unknown names or symbols are refused."""
    out = {}
    for name in names:
        if not isinstance(name, str):
            raise StreamError(f"stream names are strings, got {name!r}")
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
        self.by_symbol: dict[str, list[tuple[str, str]]] = {}
        self.klines: dict[str, tuple[int, int]] = {}  # kline stream -> (open window start, wall ms it was last sent)
        self.incoming: deque[float] = deque()

    def restart(self) -> None:
        """(Re)start the stream after the subscriptions changed; a symbol still subscribed keeps its cursor (no gap)."""
        now = now_ms()
        self.by_symbol = {}
        for name, (symbol, kind) in self.streams.items():
            self.by_symbol.setdefault(symbol, []).append((name, kind))
        self.cursors = {s: c for s, c in self.cursors.items() if s in self.by_symbol}
        if self.by_symbol:
            self.start_stream(self._stream(now))
        else:
            self.stop()

    async def _stream(self, now: int) -> None:
        new = {s: self.sim.binance[s] for s in self.by_symbol if s not in self.cursors}
        self.cursors.update(await open_cursors(self.sim, new, now))
        await pump(self.sim, dict(self.cursors), self.emit)

    async def emit(self, batch: list[tuple[str, Trades]]) -> None:
        frames: list[str] = []
        sent = now_ms()
        for symbol, t in batch:
            for name, kind in self.by_symbol.get(symbol, ()):
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
        await self.send(frames, {symbol: len(t) for symbol, t in batch})

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
        now = time.monotonic()
        self.incoming.append(now)
        while self.incoming and self.incoming[0] <= now - 1.0:
            self.incoming.popleft()
        if len(self.incoming) > MAX_INCOMING_PER_S:
            await self.close(1008, "Too many requests: more than 5 incoming messages per second")
            return
        try:
            req = json.loads(text)
            method, ident = req["method"], req.get("id")
        except (ValueError, TypeError, KeyError):
            await self.send_now([json.dumps({"error": {"code": 3, "msg": "Invalid JSON: expected a method request"}, "id": None})])
            return
        params = req.get("params") or []
        try:
            if ident is not None and (isinstance(ident, bool) or not isinstance(ident, (int, str))):
                raise StreamError("Invalid request: request ID must be an unsigned integer or a string", code=1)
            if method in ("SUBSCRIBE", "UNSUBSCRIBE") and not isinstance(params, list):
                raise StreamError("Invalid request: params must be an array of stream names", code=1)
            if method == "SUBSCRIBE":
                if len(set(self.streams) | {p for p in params if isinstance(p, str)}) > MAX_STREAMS:
                    raise StreamError(f"Invalid request: at most {MAX_STREAMS} streams per connection")
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
            elif method == "SET_PROPERTY":
                if params[:1] != ["combined"] or len(params) != 2 or not isinstance(params[1], bool):
                    raise StreamError("Invalid request: SET_PROPERTY takes [\"combined\", true|false]", code=1)
                self.combined = params[1]
                self.frames.drift_offset = 2 if self.combined else 1
                result = None
            elif method == "GET_PROPERTY":
                if params != ["combined"]:
                    raise StreamError("Invalid request: GET_PROPERTY takes [\"combined\"]", code=1)
                result = self.combined
            else:
                raise StreamError(f"Invalid request: unknown method {method!r}")
        except StreamError as exc:
            await self.send_now([json.dumps({"error": {"code": exc.code, "msg": str(exc)}, "id": ident})])
            return
        await self.send_now([json.dumps({"result": result, "id": ident})])


async def _serve(websocket: WebSocket, send, names: list[str], combined: bool) -> None:
    sim: Sim = websocket.app.state.sim
    try:
        streams = parse_streams(sim, [n for n in names if "@" in n])  # "/ws/0" (ccxt): a connection name, no stream
        if len(streams) > MAX_STREAMS:
            raise StreamError(f"at most {MAX_STREAMS} streams per connection")
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
