"""What every simulated WebSocket connection shares: the receive loop, idle close, fault disconnects, sending."""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from typing import Coroutine

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from exchange_sim.faults import FrameFaults
from exchange_sim.state import Sim
from exchange_sim.ws_batch import BATCH

BATCH_FRAMES = 256  # frames per write: large enough to amortize the syscall, small enough to keep the loop fair

log = logging.getLogger(__name__)


def asgi_endpoint(handler):
    """A raw ASGI WebSocket app around ``handler(websocket, send)``, so the handler keeps the ASGI send callable."""

    class Endpoint:
        async def __call__(self, scope, receive, send) -> None:
            await handler(WebSocket(scope, receive, send), send)

    return Endpoint()


class Connection(ABC):
    binary = False  # Upbit sends binary frames, Binance text
    idle_close = False  # Upbit closes a connection after ws_idle_timeout_s without data; Binance relies on pings
    exchange = ""  # names the connection in the malformed-frame record

    def __init__(self, sim: Sim, ws: WebSocket, raw_send=None):
        self.sim, self.ws = sim, ws
        # the ASGI send itself, for the frame-batch extension (Starlette's WebSocket.send allows only standard types)
        self.raw_send = raw_send if BATCH in ws.scope.get("extensions", {}) else None
        self.frames = FrameFaults(sim.faults, exchange=self.exchange)
        self.task: asyncio.Task | None = None
        self.opened = self.last_activity = time.monotonic()
        sim.counters.ws_connections += 1

    @abstractmethod
    async def on_text(self, text: str) -> None:
        """Handle one text frame from the client (subscription, PING, pong): each protocol answers its own way."""

    async def run(self) -> None:
        watchdog = asyncio.create_task(self._watchdog())
        try:
            while True:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    self.frames.ended(msg.get("code"), "client")  # 1006: gone without a close frame (killed)
                    return
                self.last_activity = time.monotonic()
                text = msg.get("text")
                if text is None:
                    text = (msg.get("bytes") or b"").decode("utf-8", "replace")
                await self.on_text(text)
        finally:
            watchdog.cancel()
            self.stop()

    def start_stream(self, coro: Coroutine) -> None:
        if self.task is not None:
            self.task.cancel()
        self.task = asyncio.create_task(self._guard(coro))

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _guard(self, coro: Coroutine) -> None:
        try:
            await coro
        except (WebSocketDisconnect, RuntimeError, OSError, asyncio.CancelledError):
            pass  # the client went away or the connection was closed under us
        except Exception:  # a bug in a stream must not kill the server; it is logged with its traceback
            log.exception("stream failed")
            await self.close(1011, "internal error")

    async def send(self, frames: list, sent: dict[str, int] | None = None) -> None:
        """Send stream frames (faults applied); ``sent`` counts trades per market for /_sim/status."""
        if not frames:
            return
        if self.sim.faults.ws_active:
            frames = self.frames.arrange(frames)
        await self.send_now(frames)
        self.frames.delivered()
        c = self.sim.counters
        c.ws_messages += len(frames)
        for code, trades in (sent or {}).items():
            c.per_market_sent[code] = c.per_market_sent.get(code, 0) + trades

    async def send_now(self, frames: list) -> None:
        if self.raw_send is not None and len(frames) > 1:
            for i in range(0, len(frames), BATCH_FRAMES):
                chunk = [f if isinstance(f, bytes) else f.encode() for f in frames[i : i + BATCH_FRAMES]]
                await self.raw_send({"type": BATCH, "frames": chunk, "binary": self.binary})
            self.last_activity = time.monotonic()
            return
        send = self.ws.send
        if self.binary:
            for f in frames:
                await send({"type": "websocket.send", "bytes": f if isinstance(f, bytes) else f.encode()})
        else:
            for f in frames:
                await send({"type": "websocket.send", "text": f if isinstance(f, str) else f.decode("utf-8", "replace")})
        self.last_activity = time.monotonic()

    async def close(self, code: int, reason: str) -> None:
        self.frames.ended(code, "server")
        self.stop()
        if self.ws.application_state == WebSocketState.CONNECTED:
            try:
                await self.ws.close(code, reason)
            except (RuntimeError, OSError):
                pass

    async def _watchdog(self) -> None:
        cfg = self.sim.config
        while True:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            every = self.sim.faults.ws_disconnect_every_s
            if every and now - self.opened >= every:
                log.info("fault: closing a WebSocket after %.1f s", every)
                await self.close(1011, "simulated disconnect")
                return
            if self.idle_close and now - self.last_activity >= cfg.ws_idle_timeout_s:
                await self.close(1000, "idle timeout")
                return
