"""Upbit WebSocket /websocket/v1: one subscription array per request, binary frames, SNAPSHOT then REALTIME."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from exchange_sim import upbit_shapes as shapes
from exchange_sim.model import DAY_MS, Trades
from exchange_sim.state import Sim, now_ms
from exchange_sim.streams import latest_trade, open_cursors, pump
from exchange_sim.ws_common import Connection, asgi_endpoint

log = logging.getLogger(__name__)

FORMATS = ("DEFAULT", "SIMPLE", "JSON_LIST", "SIMPLE_LIST")
TYPES = ("trade", "ticker")


class SubscriptionError(ValueError):
    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


@dataclass
class Subscription:
    types: dict[str, tuple[list[str], bool, bool]]  # type -> (codes, only_snapshot, only_realtime)
    fmt: str

    @property
    def simple(self) -> bool:
        return self.fmt.startswith("SIMPLE")

    @property
    def list_format(self) -> bool:
        return self.fmt.endswith("LIST")


def parse_subscription(sim: Sim, text: str) -> Subscription:
    try:
        request = json.loads(text)
    except ValueError:
        raise SubscriptionError("WRONG_FORMAT", "the request is not JSON") from None
    if not isinstance(request, list) or not all(isinstance(x, dict) for x in request):
        raise SubscriptionError("WRONG_FORMAT", "the request must be a JSON array of objects")
    if not any(isinstance(x.get("ticket"), str) and x["ticket"] for x in request):
        raise SubscriptionError("NO_TICKET", "a {\"ticket\": ...} object is required")
    fmt = "DEFAULT"
    for x in request:
        if "format" in x:
            fmt = str(x["format"]).upper()
            if fmt not in FORMATS:
                raise SubscriptionError("WRONG_FORMAT", f"format must be one of {FORMATS}")
    types: dict[str, tuple[list[str], bool, bool]] = {}
    for x in request:
        if "type" not in x:
            continue
        kind = x["type"]
        if kind not in TYPES:
            raise SubscriptionError("INVALID_PARAM", f"type {kind!r} is not served by the simulator (trade, ticker)")
        codes = x.get("codes")
        if not isinstance(codes, list) or not codes or not all(isinstance(c, str) for c in codes):
            raise SubscriptionError("NO_CODES", f"type {kind}: codes must be a non-empty array")
        for code in codes:
            if code != code.upper():
                raise SubscriptionError("INVALID_PARAM", f"codes must be uppercase, got {code!r}")
            if sim.spec_or_none("upbit", code) is None:
                raise SubscriptionError("INVALID_PARAM", f"unknown code {code!r}")
        only_snapshot = bool(x.get("is_only_snapshot", x.get("isOnlySnapshot", False)))
        only_realtime = bool(x.get("is_only_realtime", x.get("isOnlyRealtime", False)))
        types[kind] = (list(dict.fromkeys(codes)), only_snapshot, only_realtime)
    if not types:
        raise SubscriptionError("NO_TYPE", "a {\"type\": ..., \"codes\": [...]} object is required")
    return Subscription(types, fmt)


class UpbitConnection(Connection):
    exchange = "upbit"
    binary = True
    idle_close = True

    async def on_text(self, text: str) -> None:
        if text.strip() == "PING":
            await self.send_now(['{"status":"UP"}'])
            return
        try:
            sub = parse_subscription(self.sim, text)
        except SubscriptionError as exc:
            await self.send_now([json.dumps({"error": {"name": exc.name, "message": str(exc)}})])
            return
        # a new request replaces the previous one, as on Upbit
        self.start_stream(self.stream(sub))

    async def stream(self, sub: Subscription) -> None:
        now = now_ms()
        self.frames.drift_offset = 2 if sub.list_format else 1
        trade_enc = shapes.TradeEncoder(sub.simple, sub.list_format)
        realtime: dict[str, set[str]] = {}
        for kind, (codes, only_snapshot, only_realtime) in sub.types.items():
            for code in codes:
                if not only_realtime:
                    await self.snapshot(kind, code, now, sub, trade_enc)
                if not only_snapshot:
                    realtime.setdefault(code, set()).add(kind)
        if not realtime:
            return
        cursors = await open_cursors(self.sim, {code: self.sim.upbit[code] for code in realtime}, now)

        async def emit(batch: list[tuple[str, Trades]]) -> None:
            frames: list[str] = []
            for code, t in batch:
                if "trade" in realtime[code]:
                    frames.extend(self._encode_trades(code, t, trade_enc))
                if "ticker" in realtime[code]:
                    fields = shapes.ticker_fields(self.sim.model, self.sim.upbit[code], int(t.ts[-1]))
                    if fields is not None:
                        frames.append(shapes.ws_ticker(code, fields, "REALTIME", sub.simple, sub.list_format))
            await self.send(frames, {code: len(t) for code, t in batch})

        await pump(self.sim, cursors, emit)

    def _encode_trades(self, code: str, t: Trades, enc: shapes.TradeEncoder) -> list[str]:
        """REALTIME trade messages; prev_closing_price changes at 00:00 UTC, so a batch is encoded per day."""
        spec = self.sim.upbit[code]
        first, last = int(t.ts[0]) // DAY_MS, int(t.ts[-1]) // DAY_MS
        if first == last:
            return enc.encode(code, spec, t, self.sim.model.day_close(spec, first - 1), "REALTIME", now_ms())
        out: list[str] = []
        day = t.ts // DAY_MS
        for d in range(first, last + 1):
            part = t.mask(day == d)
            if len(part):
                out.extend(enc.encode(code, spec, part, self.sim.model.day_close(spec, d - 1), "REALTIME", now_ms()))
        return out

    async def snapshot(self, kind: str, code: str, now: int, sub: Subscription, enc: shapes.TradeEncoder) -> None:
        spec = self.sim.upbit[code]
        if kind == "trade":
            t = latest_trade(self.sim, spec, now)
            if len(t):
                prev = self.sim.model.day_close(spec, int(t.ts[0]) // DAY_MS - 1)
                await self.send(enc.encode(code, spec, t, prev, "SNAPSHOT", now))
        else:
            fields = shapes.ticker_fields(self.sim.model, spec, now)
            if fields is not None:
                await self.send([shapes.ws_ticker(code, fields, "SNAPSHOT", sub.simple, sub.list_format)])


async def endpoint(websocket: WebSocket, send) -> None:
    sim: Sim = websocket.app.state.sim
    await websocket.accept()
    conn = UpbitConnection(sim, websocket, send)
    try:
        await conn.run()
    except WebSocketDisconnect:
        pass
    finally:
        conn.stop()


def routes() -> list[WebSocketRoute]:
    return [WebSocketRoute("/websocket/v1", asgi_endpoint(endpoint))]
