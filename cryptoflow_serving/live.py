"""Live push (``WS /v1/live``): new trades, closed 1-minute bars and alerts as they reach silver and gold.

One :class:`Feed` per process polls the lake every ``poll_s``: in one read transaction it takes the current snapshot
and, when it moved past the feed's cursor, reads the rows committed in between (``ducklake_table_insertions``: an
update's new image is among them) of ``silver.trades``, ``gold.ohlcv_1m_from_trades`` and ``gold.alerts``. Not the
whole change feed (``ducklake_table_changes``): its deletions are read back from the files that held the deleted rows,
and every commit of intraday gold deletes the current minute's bars, so that cost grew with the table. Each message is
encoded once and put on the bounded queue of every subscriber that asked for its market and channel. A subscriber whose
queue is full (a client that reads slower than the market trades) is dropped at once: taken off the feed, its queue
released, its connection closed with code 4008 and a reason. The feed never waits for a client and the memory it holds
is at most ``queue_size`` messages per client (ADR 0020: polling a snapshot against other live designs).

The feed also keeps what "now" answers are made of: the latest trade of every market (``prices``, kept from the trade
changes) and the newest 24-hour statistics row of every market (``latest_stats``, read again in the poll's transaction
whenever the snapshot moved). ``GET /v1/markets`` and ``GET /v1/stats/24h`` answer from them without a lake read: at
most one poll behind the lake, at the snapshot they name (ADR 0020: a read of the lake costs more than the 20 ms
those answers are allowed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import duckdb
import orjson
from fastapi import WebSocket, WebSocketDisconnect

from cryptoflow_serving import queries
from cryptoflow_serving.auth import Keys, key_from_headers
from cryptoflow_serving.cache import AnswerCache
from cryptoflow_serving.params import EXCHANGES
from cryptoflow_serving.reads import Reader
from cryptoflow_core.settings import SettingsError, validate_market
from cryptoflow_dagster import lake

log = logging.getLogger(__name__)

CHANNELS = ("trades", "bars", "alerts")
SLOW_CLIENT_CODE = 4008
UNAUTHORIZED_CODE = 4001
# A change older than this is history (a rebuild, a backfill), not news: it is not pushed.
RECENT = timedelta(minutes=10)
# A minute is closed when a later trade of its market has arrived, or this long after it ended.
BAR_GRACE = timedelta(seconds=5)
# Per table and poll. More than this in half a second is a backfill or a rebuild, not a live market: the rest is not
# pushed, subscribers get a "skipped" message saying where to read it, and the price table is read afresh.
MAX_ROWS_PER_POLL = 5_000
YIELD_EVERY = 100  # messages put on queues before the fan-out lets the senders drain them (a sender empties
# its queue in one go while its connection takes data, so a client that keeps up never nears its bound)
CLOSE_WAIT_S = 10.0  # how long a dropped client gets to take its close frame (uvicorn's own close timeout)
GONE = "client went away"

_TRADES = """
    SELECT exchange, market, trade_id, ts, price, volume, side
    FROM ducklake_table_insertions(?, 'silver', 'trades', ?, ?)
    WHERE ts >= ?
    ORDER BY ts, trade_id LIMIT ?
"""
_BARS = """
    SELECT exchange, market, ts, open, high, low, close, volume, quote_volume, trade_count, vwap
    FROM ducklake_table_insertions(?, 'gold', 'ohlcv_1m_from_trades', ?, ?)
    WHERE ts >= ?
    ORDER BY ts LIMIT ?
"""
_ALERTS = """
    SELECT alert_id, rule, exchange, market, event_time, triggered_at, value, threshold, message, status
    FROM ducklake_table_insertions(?, 'gold', 'alerts', ?, ?)
    WHERE triggered_at >= ?
    ORDER BY triggered_at LIMIT ?
"""


@dataclass(eq=False)  # compared and hashed by identity: a set member
class Subscriber:
    markets: frozenset[str] = frozenset()  # "exchange:market", or "*" for all
    channels: frozenset[str] = frozenset()
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    dropped: str | None = None  # why the feed let go of it

    def wants(self, channel: str, exchange: str | None, market: str | None) -> bool:
        if channel not in self.channels:
            return False
        return "*" in self.markets or f"{exchange}:{market}" in self.markets


@dataclass
class Changes:
    snapshot: int
    trades: list[dict] = field(default_factory=list)
    bars: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    prices: list[dict] | None = None  # the latest trade per market, read whole (the seed, or after a skip)
    skipped: tuple[str, ...] = ()  # channels that had more than MAX_ROWS_PER_POLL changes
    stats: list[dict] | None = None  # gold.market_stats_24h's newest row per market (None: table not there)
    changed: dict[str, tuple] | None = None  # per checked table with cached pages: (earliest, latest) changed time
    checked: frozenset[str] = frozenset()


class Feed:
    def __init__(self, reader: Reader, *, poll_s: float = 0.5, queue_size: int = 10_000,
                 cache: AnswerCache | None = None):
        self.reader, self.poll_s, self.queue_size = reader, poll_s, queue_size
        self.cache = cache or AnswerCache(0)
        self.subscribers: set[Subscriber] = set()
        self.prices: dict[tuple[str, str], dict] = {}
        self.latest_stats: list[dict] | None = None  # newest gold.market_stats_24h row per market; None: no table
        self.latest_stats_snapshot: int | None = None
        self.snapshot: int | None = None  # the feed's cursor: everything up to it has been published
        self.ready = asyncio.Event()  # set after the first poll (prices seeded)
        self.stats = {"polls": 0, "poll_errors": 0, "published": 0, "dropped_clients": 0, "max_queue_depth": 0,
                      "cursor_resets": 0}
        self._pending_bars: dict[tuple[str, str, datetime], dict] = {}

    # --- polling (worker thread) -----------------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            began = time.monotonic()
            try:
                checked = frozenset(self.cache.tables())
                changes = await self.reader.run(lambda con, snap: self._poll(con, snap, checked))
                await self._publish(changes)
                await self._send_closed_bars()  # also minutes that ended with no later trade
                self.stats["polls"] += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lake not there yet, a locked catalog: the next poll tries again
                self.stats["poll_errors"] += 1
                self.cache.clear()  # nothing is known to be current any more
                log.warning("live feed: poll failed (%s: %s); retrying", type(exc).__name__, str(exc)[:300])
            finally:
                if self.snapshot is not None or self.stats["poll_errors"]:
                    self.ready.set()
            await asyncio.sleep(max(0.0, self.poll_s - (time.monotonic() - began)))

    def _poll(self, con: duckdb.DuckDBPyConnection, snapshot: int, checked: frozenset[str]) -> Changes | None:
        if self.snapshot is None:
            return Changes(snapshot, prices=_rows(con, queries.LATEST_TRADES, [], missing_ok=True),
                           stats=_latest_stats(con))
        if snapshot == self.snapshot:
            return None
        since = datetime.now(timezone.utc) - RECENT
        span = [lake.CATALOG, self.snapshot + 1, snapshot, since, MAX_ROWS_PER_POLL + 1]
        try:
            changes = Changes(snapshot, trades=_rows(con, _TRADES, span, missing_ok=True),
                              bars=_rows(con, _BARS, span, missing_ok=True),
                              alerts=_rows(con, _ALERTS, span, missing_ok=True))
        except duckdb.InvalidInputException as exc:
            if "No snapshot found" not in str(exc):
                raise
            # the cursor's snapshot was expired by lake maintenance: start again from now (nothing older is news)
            self.stats["cursor_resets"] += 1
            log.warning("live feed: snapshot %s expired; continuing from %s", self.snapshot, snapshot)
            return Changes(snapshot, prices=_rows(con, queries.LATEST_TRADES, [], missing_ok=True),
                           stats=_latest_stats(con))
        changes.stats = _latest_stats(con)
        changes.checked = checked
        changes.changed = _changed_ranges(con, checked, self.snapshot + 1, snapshot)
        over = tuple(c for c in CHANNELS if len(getattr(changes, c)) > MAX_ROWS_PER_POLL)
        for channel in over:
            del getattr(changes, channel)[MAX_ROWS_PER_POLL:]
        if "trades" in over:  # the newest trades are among those left out: the prices are read whole
            changes.prices = _rows(con, queries.LATEST_TRADES, [], missing_ok=True)
        changes.skipped = over
        return changes

    # --- fan-out (event loop) --------------------------------------------------------------------------------------
    async def _publish(self, changes: Changes | None) -> None:
        if changes is None:
            return
        snap = changes.snapshot
        # before any await: a page put from now on must have been read at this snapshot
        self.cache.advance(snap, changes.changed, changes.checked)
        self.latest_stats, self.latest_stats_snapshot = changes.stats, snap
        if changes.prices is not None:
            self.prices = {(p["exchange"], p["market"]): {**p, "snapshot": snap} for p in changes.prices}
        for t in changes.trades:
            key = (t["exchange"], t["market"])
            known = self.prices.get(key)
            if known is None or (t["ts"], t["trade_id"]) >= (known["last_trade_ts"], known["last_trade_id"]):
                self.prices[key] = {"exchange": key[0], "market": key[1], "last_price": t["price"],
                                    "last_trade_ts": t["ts"], "last_trade_id": t["trade_id"], "snapshot": snap}
            await self._send("trades", t["exchange"], t["market"], {"type": "trade", **t, "snapshot": snap})
        for b in changes.bars:
            self._pending_bars[(b["exchange"], b["market"], b["ts"])] = {"type": "bar", **b, "snapshot": snap}
        for a in changes.alerts:
            await self._send("alerts", a["exchange"], a["market"], {"type": "alert", **a, "snapshot": snap})
        for channel in changes.skipped:
            notice = {"type": "skipped", "channel": channel, "snapshot": snap,
                      "message": f"more than {MAX_ROWS_PER_POLL} {channel} were committed at once (a backfill or a "
                      "rebuild): only the first were pushed; read the rest from the REST endpoints"}
            for sub in [s for s in self.subscribers if channel in s.channels]:
                self.offer(sub, orjson.dumps(notice).decode())
        self.snapshot = snap

    async def _send_closed_bars(self) -> None:
        now = datetime.now(timezone.utc)
        for key, bar in sorted(self._pending_bars.items(), key=lambda kv: kv[0][2]):
            exchange, market, ts = key
            end = ts + timedelta(minutes=1)
            latest = self.prices.get((exchange, market))
            if (latest is not None and latest["last_trade_ts"] >= end) or now >= end + BAR_GRACE:
                del self._pending_bars[key]
                await self._send("bars", exchange, market, bar)

    async def _send(self, channel: str, exchange: str | None, market: str | None, message: dict) -> None:
        text: str | None = None
        for sub in list(self.subscribers):
            if not sub.wants(channel, exchange, market):
                continue
            text = text or orjson.dumps(message).decode()  # encoded once, shared by every queue
            self.offer(sub, text)
        if text is not None:
            self.stats["published"] += 1
            if self.stats["published"] % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # the senders drain the queues while a large poll is fanned out

    def offer(self, sub: Subscriber, text: str) -> None:
        if sub.dropped is not None:
            return
        try:
            sub.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.drop(sub, f"slow consumer: {self.queue_size} messages waiting; reconnect and catch up from the "
                           "REST endpoints")
            return
        self.stats["max_queue_depth"] = max(self.stats["max_queue_depth"], sub.queue.qsize())

    def drop(self, sub: Subscriber, reason: str) -> None:
        if sub.dropped is None:
            self.stats["dropped_clients"] += 1
            log.info("live feed: dropped a client: %s", reason)
        self.end(sub, reason)

    def end(self, sub: Subscriber, reason: str) -> None:
        """Take ``sub`` off the feed and have its sender close the connection with ``reason``."""
        if sub.dropped is not None:
            return
        sub.dropped = reason
        self.subscribers.discard(sub)
        while not sub.queue.empty():  # release the memory now, not when the connection finally goes
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)  # wakes its sender, which closes the connection


def _changed_ranges(con: duckdb.DuckDBPyConnection, tables: frozenset[str], first: int,
                    last: int) -> dict[str, tuple] | None:
    by_table = {r.table: r for r in queries.RESOURCES.values()}
    out = {}
    try:
        for table in tables:
            schema, name = table.split(".")
            lo, hi, count = con.execute(queries.changed_range_sql(by_table[table]), [lake.CATALOG, schema, name, first, last]).fetchone()
            if count:
                out[table] = (lo, hi)
    except duckdb.Error:  # a table dropped or recreated since: nothing cached is trusted
        return None
    return out


def _latest_stats(con: duckdb.DuckDBPyConnection) -> list[dict] | None:
    sql, params = queries.latest_sql(queries.RESOURCES["stats_24h"], queries.Filters())
    try:
        return _rows(con, sql, params, missing_ok=False)
    except duckdb.CatalogException:
        return None


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any], *, missing_ok: bool) -> list[dict]:
    try:
        cur = con.execute(sql, params)
    except duckdb.CatalogException:
        if missing_ok:  # the table is not built yet: nothing to push from it
            return []
        raise
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def parse_subscription(message: Any) -> tuple[frozenset[str], frozenset[str]]:
    """``{"subscribe": {"markets": [...], "channels": [...]}}`` -> (markets, channels); ValueError says what is wrong."""
    if not isinstance(message, dict) or not isinstance(message.get("subscribe"), dict):
        raise ValueError('expected {"subscribe": {"markets": ["upbit:KRW-BTC" or "*"], "channels": '
                         f'[{", ".join(repr(c) for c in CHANNELS)}]}}')
    body = message["subscribe"]
    markets, channels = body.get("markets", []), body.get("channels", list(CHANNELS))
    if not isinstance(markets, list) or not markets or len(markets) > 200:
        raise ValueError('markets: a list of 1 to 200 "exchange:market" codes, or ["*"]')
    if not isinstance(channels, list) or not channels or not set(map(str, channels)) <= set(CHANNELS):
        raise ValueError(f"channels: a non-empty list of {', '.join(CHANNELS)}")
    for m in markets:
        if m == "*":
            continue
        exchange, _, market = str(m).partition(":")
        if exchange not in EXCHANGES:
            raise ValueError(f"market {str(m)[:40]!r}: expected exchange:market with exchange one of "
                             f"{', '.join(EXCHANGES)}, e.g. upbit:KRW-BTC")
        try:
            validate_market(exchange, market)
        except SettingsError as exc:
            raise ValueError(f"market {str(m)[:40]!r}: {exc}") from None
    return frozenset(map(str, markets)), frozenset(map(str, channels))


async def serve_client(ws: WebSocket, feed: Feed, keys: Keys) -> None:
    """One WebSocket client: its subscribe messages in, its queue out (one sender, so frames never interleave)."""
    await ws.accept()
    authed = not keys.required or keys.check(key_from_headers(ws.headers)) is not None
    sub = Subscriber(queue=asyncio.Queue(maxsize=feed.queue_size))
    sender = asyncio.create_task(_send_loop(ws, sub))
    try:
        while True:
            try:
                raw = await ws.receive_text()
            except WebSocketDisconnect:
                return
            try:
                message = orjson.loads(raw)
            except orjson.JSONDecodeError:
                message = None
            if not authed:
                given = message.get("api_key") if isinstance(message, dict) else None
                if keys.check(given if isinstance(given, str) else None) is None:
                    feed.end(sub, "unauthorized: an API key is required (header, or api_key in the first message)")
                    return
                authed = True
            try:
                markets, channels = parse_subscription(message)
            except ValueError as exc:
                feed.offer(sub, orjson.dumps({"type": "error", "error": "bad_parameter", "message": str(exc)}).decode())
                continue
            if sub.dropped is not None:
                return
            # After the feed's first look at the lake: "subscribed at snapshot n" then means every later commit is pushed
            await feed.ready.wait()
            sub.markets, sub.channels = markets, channels
            feed.subscribers.add(sub)
            feed.offer(sub, orjson.dumps({"type": "subscribed", "markets": sorted(markets),
                                          "channels": sorted(channels), "snapshot": feed.snapshot}).decode())
    finally:
        feed.end(sub, GONE)
        with contextlib.suppress(asyncio.CancelledError):
            await sender


async def _send_loop(ws: WebSocket, sub: Subscriber) -> None:
    while True:
        text = await sub.queue.get()
        if text is None or sub.dropped is not None:
            break
        try:
            await ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
    if sub.dropped == GONE:
        return
    code = UNAUTHORIZED_CODE if (sub.dropped or "").startswith("unauthorized") else SLOW_CLIENT_CODE
    # The close frame waits behind what the client has not read yet; a client that never reads again is left to the
    # server's ping timeout, holding no more than the transport's write buffer.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code=code, reason=(sub.dropped or "")[:120]), CLOSE_WAIT_S)
