"""Keeps one exchange feed connected forever: backoff with jitter, a silence watchdog, keep-alives, max-age reconnects.

Each connection gets a session id (stamped on every row it lands). The time between the last message of one connection and
the first message of the next is recorded as a gap candidate: trades may have happened there unseen.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import NamedTuple

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK, WebSocketException

from streaming_sensor import feeds
from streaming_sensor import frames as frames_mod
from streaming_sensor.batches import MicroBatcher
from cryptoflow_core.heartbeat import StreamState, record_gap
from cryptoflow_core.retry import backoff_s

log = logging.getLogger(__name__)


def backoff_delay(attempt: int, base_s: float = 0.25, cap_s: float = 30.0, rand: Callable[[], float] = random.random) -> float:
    """The wait before reconnect ``attempt`` (0: the first after a healthy connection): up to ``base_s`` doubling to
    ``cap_s``, equal jitter (at least half of it): reconnect storms spread out, and the wait never exceeds ``cap_s``."""
    return backoff_s(attempt + 1, base_s=base_s, cap_s=cap_s, jitter="equal", rng=rand)


class _Reconnect(Exception):
    """The watchdog or the exchange asked for a fresh connection."""


class FeedConnection:
    def __init__(
        self,
        feed: feeds.Feed,
        batcher: MicroBatcher,
        state: StreamState,
        landing,
        request_flush: Callable[[], None],
        flush_max_messages: int,
        gap_start: float | None = None,
        silence_timeout_s: float | None = None,
        first_connect_delay_s: float = 0.0,
    ):
        self.feed = feed
        self.batcher = batcher
        self.state = state
        self.landing = landing
        self.request_flush = request_flush
        self.flush_max = flush_max_messages
        self.silence_timeout_s = silence_timeout_s or feed.silence_timeout_s
        # When set, trades since this time may be missing: closed by the first trade of the next connection.
        self.gap_start = gap_start
        state.gap_since = gap_start
        self._reconnect_reason: str | None = None
        self._pending: _Pending | None = None
        self.first_connect_delay_s = first_connect_delay_s

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        if self.first_connect_delay_s > 0:  # one exchange's connections open spaced out (its new-connection limit)
            try:
                await asyncio.wait_for(stop.wait(), self.first_connect_delay_s)
            except asyncio.TimeoutError:
                pass
        while not stop.is_set():
            session = uuid.uuid4().hex[:16]
            self.state.state = "connecting"
            started = time.monotonic()
            try:
                await self._connect_once(session, stop)
            except asyncio.CancelledError:
                raise
            except (OSError, WebSocketException, _Reconnect, asyncio.TimeoutError) as exc:
                log.warning("%s connection %s ended: %s", self.feed.exchange, session, exc or type(exc).__name__)
            except Exception:  # a bug must not end the feed for good: log it loudly and reconnect like any failure
                log.exception("%s connection %s failed unexpectedly", self.feed.exchange, session)
            finally:
                if self.state.state == "connected" and self.gap_start is None:
                    # a late-delivered trade is older than its receive time: open the window that much earlier
                    self.gap_start = (self.state.last_message_at or time.time()) - self.state.lag_s
                    self.state.gap_since = self.gap_start
                self.state.state = "stopped" if stop.is_set() else "backoff"
            if stop.is_set():
                break
            if time.monotonic() - started > 30:
                attempt = 0  # it was a healthy connection: start the backoff over
            self.state.reconnects += 1
            delay = backoff_delay(attempt)
            attempt += 1
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                pass
        self.state.state = "stopped"

    async def _connect_once(self, session: str, stop: asyncio.Event) -> None:
        # websockets answers the server's pings itself (Binance pings every 20 s); our own pings detect half-open links.
        async with connect(self.feed.url(), open_timeout=10, ping_interval=20, ping_timeout=20, max_size=2**22) as ws:
            for text in self.feed.subscription():
                await ws.send(text)
            now = time.time()
            self.state.state, self.state.session_id, self.state.connected_since = "connected", session, now
            self.state.last_message_at = now
            self._reconnect_reason = None
            log.info("%s connected, session %s", self.feed.exchange, session)
            guard = asyncio.create_task(self._watchdog(ws, stop, time.monotonic()))
            try:
                await self._receive(ws, session)
            finally:
                guard.cancel()
            if self._reconnect_reason:
                raise _Reconnect(self._reconnect_reason)

    async def _watchdog(self, ws: ClientConnection, stop: asyncio.Event, opened: float) -> None:
        """Closes the connection when it is silent too long, too old, or the sidecar stops; sends keep-alives."""
        last_keepalive = time.monotonic()
        while True:
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
                await ws.close()
                return
            except asyncio.TimeoutError:
                pass
            now = time.monotonic()
            silent = time.time() - (self.state.last_message_at or 0)
            reason = None
            if silent > self.silence_timeout_s:
                reason = f"silent for {silent:.0f}s"
            elif now - opened > self.feed.max_age_s:
                reason = "maximum connection age reached"
            if reason:
                self._reconnect_reason = reason
                await ws.close()
                return
            if self.feed.keepalive_text and now - last_keepalive > self.feed.keepalive_interval_s:
                last_keepalive = now
                await ws.send(self.feed.keepalive_text)

    async def _receive(self, ws: ClientConnection, session: str) -> None:
        """Keep each frame and its receive time; nothing else per message while no gap is open (ADR 0010).

        Verdicts, counters and rows come at flush time (``land``, in the flush thread). A frame is parsed here only
        while a disconnect window waits for its first trade, or when it may announce a shutdown (``urgent_marker``).
        """
        pending = self._pending = _Pending(session)
        frames, times = pending.frames, pending.times
        marker, state, flush_max, request_flush = self.feed.urgent_marker, self.state, self.flush_max, self.request_flush
        recv, time_ns, spill_at = ws.recv, time.time_ns, self.batcher.max_buffered
        try:
            while True:
                try:
                    frame = await recv(decode=False)  # bytes as they came: no UTF-8 decode (the frame lands verbatim)
                except ConnectionClosedOK:
                    return
                now_ns = time_ns()
                frames.append(frame)
                times.append(now_ns)
                state.last_message_at = now_ns / 1e9
                if self.gap_start is not None or (marker is not None and marker in frame):
                    if self._inspect(frame, now_ns, session):
                        return
                if len(frames) >= flush_max:
                    request_flush()
                    if len(frames) >= spill_at:  # the flush thread is behind: resolve here, the batcher spills to disk
                        self.land(pending.take())
        finally:
            # the connection's last frames get their verdicts now: lag_s and the counters are then current for the gap
            # window the caller may open, and the next connection starts a fresh buffer under its own session id
            self._pending = None
            self.land(pending.take())

    def _inspect(self, frame: bytes, now_ns: int, session: str) -> bool:
        """The per-frame path: close an open gap window at the first trade; True if the exchange announced a shutdown."""
        p = self.feed.parse(frame)
        if p.kind == feeds.CONTROL and p.reconnect:
            self._reconnect_reason = "exchange announced shutdown"
            return True
        if p.kind == feeds.TRADE and self.gap_start is not None:
            record_gap(self.landing, self.feed.exchange, self.feed.markets, self.gap_start, now_ns / 1e9, "disconnect", session)
            self.gap_start = self.state.gap_since = None
        return False

    def take_pending(self) -> _Taken | None:
        """Called on the event loop thread (the receive loop's thread): the frames received so far, leaving it an empty
        buffer. Cheap (a list copy), so the loop is held up for microseconds."""
        return self._pending.take() if self._pending is not None else None

    def land(self, taken: _Taken | None) -> None:
        """Resolve taken frames into rows and buffer them; the stream's counters move with them. Any thread."""
        if taken is None or not taken.frames:
            return
        out = frames_mod.resolve(self.feed, taken.session, taken.frames, taken.times)
        state = self.state

        def count() -> None:  # under the batcher's lock: a flush never sees rows without their counts
            state.messages += out.messages
            state.malformed += out.malformed
            if out.lag_s > state.lag_s:
                state.lag_s = out.lag_s

        self.batcher.add_batches(self.feed.exchange, out.batches, then=count)


class _Taken(NamedTuple):
    session: str
    frames: list[bytes]
    times: list[int]


class _Pending:
    """One connection's frames not yet resolved. Only the event loop thread touches it."""

    def __init__(self, session: str):
        self.session = session
        self.frames: list[bytes] = []
        self.times: list[int] = []

    def take(self) -> _Taken:
        # copy then clear in place: the receive loop holds these very lists in local variables
        taken = _Taken(self.session, self.frames.copy(), self.times.copy())
        self.frames.clear()
        self.times.clear()
        return taken
