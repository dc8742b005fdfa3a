"""The sidecar process: one connection per exchange, a flusher, a heartbeat; ``main(argv)`` is ``cryptoflow stream``.

SIGTERM and Ctrl-C stop the connections, flush what is buffered, write a last heartbeat and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
import uuid
from datetime import datetime
from pathlib import Path

from cryptoflow_core import market_list
from cryptoflow_core.settings import Settings, load_env_files, load_settings, market_selector
from streaming_sensor.batches import MicroBatcher
from streaming_sensor.connection import FeedConnection
from streaming_sensor.feeds import FEEDS, BinanceFeed, Feed, UpbitFeed
from cryptoflow_core.heartbeat import Heartbeat, StreamState, read_heartbeat

log = logging.getLogger(__name__)


# Upbit accepts 5 new connections per second per IP (docs/exchange-apis.md), Binance 300 per 5 minutes: the connections of
# one exchange open this far apart at start (reconnects are spread by their own jittered backoff).
CONNECT_SPACING_S = 0.25


def build_feeds(settings: Settings, exchanges: tuple[str, ...]) -> list[Feed]:
    """One feed per connection: each exchange's markets (a list, or a selector resolved from its REST and written
    beside the heartbeat for the Dagster side, cryptoflow_core/market_list.py) in slices of
    ``stream_markets_per_connection``."""
    out: list[Feed] = []
    for name in exchanges:
        values = market_list.setting_values(settings, name)
        selector = market_selector(name, values)
        if selector is not None:
            markets = market_list.resolve(settings, name, selector)
            market_list.write_list(settings.landing_dir, name, selector, markets)
        else:
            markets = values
        feed_type, url = (UpbitFeed, settings.upbit_ws_url) if name == "upbit" else (BinanceFeed, settings.binance_ws_url)
        per = settings.stream_markets_per_connection
        out += [feed_type(url, markets[i:i + per]) for i in range(0, len(markets), per)]
    return out


def stream_key(exchange: str, index: int) -> str:
    """The heartbeat's name for an exchange's ``index``-th connection: ``binance``, then ``binance:2``, ``binance:3``."""
    return exchange if index == 0 else f"{exchange}:{index + 1}"


def downtime_start(heartbeat_path: Path, exchange: str) -> float | None:
    """Where the previous sidecar's landed data for ``exchange`` ends: the start of the downtime gap, if one ran here.

    A killed sidecar loses what it received after its last flush, and a disconnect window it had not written yet: the
    gap starts at the earlier of the two, moved back by how late trades were arriving (windows are in receive time).
    A sidecar with several connections per exchange (``binance``, ``binance:2``, ...) ends at the earliest of them: the
    markets may be split differently this time (a TOP<n> list re-ranked), so every connection opens the same window.
    """
    beat = read_heartbeat(heartbeat_path)
    if not beat:
        return None
    streams = [s or {} for key, s in beat.get("streams", {}).items() if key.split(":")[0] == exchange] or [{}]
    stamps = [beat.get("flushed_through") or beat.get("started_at"), *(s.get("gap_since") for s in streams)]
    times = [datetime.fromisoformat(t).timestamp() for t in stamps if t]
    lag = max(float(s.get("lag_s") or 0.0) for s in streams)
    return min(times) - lag if times else None


class Sidecar:
    def __init__(self, settings: Settings, exchanges: tuple[str, ...] = tuple(FEEDS), silence_timeout_s: float | None = None):
        self.settings = settings
        self.writer_id = uuid.uuid4().hex[:16]
        landing = settings.landing_dir
        self.batcher = MicroBatcher(landing, self.writer_id, settings.home / "sidecar" / "spill")
        self.heartbeat = Heartbeat(self.writer_id)
        self.stop = asyncio.Event()
        self._flush_now = asyncio.Event()
        self.connections = []
        per_exchange: dict[str, int] = {}
        for feed in build_feeds(settings, exchanges):
            index = per_exchange[feed.exchange] = per_exchange.get(feed.exchange, -1) + 1
            state = self.heartbeat.streams[stream_key(feed.exchange, index)] = StreamState()
            self.connections.append(
                FeedConnection(
                    feed,
                    self.batcher,
                    state,
                    landing,
                    self._flush_now.set,
                    settings.flush_max_messages,
                    gap_start=downtime_start(settings.heartbeat_path, feed.exchange),
                    silence_timeout_s=silence_timeout_s,
                    first_connect_delay_s=index * CONNECT_SPACING_S,
                )
            )
        for exchange, last in per_exchange.items():
            markets = sum(len(c.feed.markets) for c in self.connections if c.feed.exchange == exchange)
            log.info("%s: %d markets over %d connections", exchange, markets, last + 1)

    async def _flusher(self) -> None:
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self._flush_now.wait(), self.settings.flush_interval_s)
            except asyncio.TimeoutError:
                pass
            self._flush_now.clear()
            try:
                await self._flush()
            except OSError as exc:  # the rows stay buffered (or spilled) and the next tick tries again
                log.error("flush failed, retrying next interval: %s", exc)

    async def _flush(self) -> None:
        flushing_from = time.time()
        # Taken here, on the event loop thread that fills them; their verdicts (frames.resolve) and the Parquet encoding
        # run in a thread, mostly in native code without the GIL: the event loop keeps reading sockets meanwhile.
        taken = [(c, c.take_pending()) for c in self.connections]
        files = await asyncio.get_running_loop().run_in_executor(None, self._land_and_flush, taken)
        self.heartbeat.files += len(files)
        self.heartbeat.flushed_through = flushing_from
        self.heartbeat.spilled = self.batcher.rows_spilled

    def _land_and_flush(self, taken: list) -> list[Path]:
        for connection, frames in taken:
            connection.land(frames)
        return self.batcher.flush()

    async def _beat(self) -> None:
        while not self.stop.is_set():
            self.heartbeat.write(self.settings.heartbeat_path)
            try:
                await asyncio.wait_for(self.stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    async def run(self, duration_s: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop.set)
            except (NotImplementedError, RuntimeError):
                pass  # not the main thread (tests run the sidecar in a thread and call stop directly)
        tasks = [asyncio.create_task(c.run(self.stop)) for c in self.connections]
        beat = asyncio.create_task(self._beat())
        flusher = asyncio.create_task(self._flusher())
        if duration_s is not None:
            loop.call_later(duration_s, self.stop.set)
        await self.stop.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._flush_now.set()
        await flusher
        # The flusher may have ended on a flush that began while the connections were still adding rows: one more
        # flush, after every connection stopped, leaves nothing buffered behind.
        await self._flush()
        await beat
        for state in self.heartbeat.streams.values():
            state.state = "stopped"
        self.heartbeat.write(self.settings.heartbeat_path)
        log.info("sidecar stopped: %d files, %d rows", self.batcher.files_written, self.batcher.rows_written)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cryptoflow stream", description="Stream exchange trades into landing files.")
    parser.add_argument("--exchange", action="append", choices=sorted(FEEDS), help="repeatable; default: all")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: run forever)")
    parser.add_argument("--silence-timeout", type=float, default=None, help="override the per-exchange watchdog (s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    load_env_files()
    settings = load_settings()
    sidecar = Sidecar(settings, tuple(args.exchange or FEEDS), silence_timeout_s=args.silence_timeout)
    started = time.monotonic()
    asyncio.run(sidecar.run(args.duration))
    log.info("ran %.1fs", time.monotonic() - started)
    return 0
