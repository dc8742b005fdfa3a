"""Walking the model in time order for the live WebSocket streams (both exchanges).

A stream is a set of cursors, one per market, over the model's chunks. One timer per connection wakes when the next
trade of any market is due (at most every ``TICK_S``), takes what every market has due and hands it to the connection
as one batch, so one socket write carries all markets' frames. Firehose mode sends as fast as the client reads. Either
way the trades are the model's, so /_sim ground truth covers them.
"""

from __future__ import annotations

import asyncio
import math
from typing import Awaitable, Callable

import numpy as np

from exchange_sim.markets import MarketSpec
from exchange_sim.model import DAY_MS, MIN_MS, Trades
from exchange_sim.state import Sim, now_ms

LOOKAHEAD_DAYS = 31  # an empty stretch longer than this (no trades at all) ends the stream's lookahead
FIREHOSE_CHUNK = 2000
TICK_S = 0.005  # the timer never wakes more often than this: a trade leaves at most ~5 ms after its time
IDLE_S = 0.5  # ...and at least this often (a shock may bring trades sooner than the next one known)
OPEN_BATCH = 8  # cursors opened between two yields to the event loop

Batch = list[tuple[str, Trades]]


class Cursor:
    """The next unsent trade of one market, starting after ``after_ms``. Holds one chunk (a few thousand trades)."""

    def __init__(self, sim: Sim, spec: MarketSpec, after_ms: int):
        self.sim, self.spec, self.model = sim, spec, sim.model
        self.day = max(after_ms // DAY_MS, sim.history_start_ms // DAY_MS)
        minute = max(after_ms - self.day * DAY_MS, 0) // MIN_MS
        self.k = self.model.plan(spec, self.day).chunk_of(minute)
        self._load()
        self.idx = int(np.searchsorted(self.block.ts, after_ms, "right"))
        self.due = self._next_ts()

    def _load(self) -> None:
        self.version = self.model.version(self.spec)
        self.start_minute = int(self.model.plan(self.spec, self.day).bounds[self.k])
        self.block = self.model.chunk(self.spec, self.day, self.k)

    def refresh(self) -> None:
        """After a shock: regenerate the current chunk (its trades before the shock are unchanged, so ``idx`` holds)."""
        if self.model.version(self.spec) != self.version:
            self.k = self.model.plan(self.spec, self.day).chunk_of(self.start_minute)
            self._load()
        self.due = self._next_ts()

    def _ready(self) -> bool:
        if self.model.version(self.spec) != self.version:
            self.refresh()
        first_day = self.day
        while self.idx >= len(self.block):
            self.k += 1
            if self.k >= self.model.plan(self.spec, self.day).chunks:
                self.day, self.k = self.day + 1, 0
                if self.day - first_day > LOOKAHEAD_DAYS:
                    return False
            self._load()
            self.idx = 0
        return True

    def _next_ts(self) -> float:
        return float(self.block.ts[self.idx]) if self._ready() else math.inf

    def take(self, until_ms: float, limit: int) -> Trades:
        if not self._ready():
            self.due = math.inf
            return Trades.empty()
        hi = min(int(np.searchsorted(self.block.ts, until_ms, "right")), self.idx + limit, len(self.block))
        # never split one taker order (equal aggTrade id) across two sends
        while 0 < hi < len(self.block) and self.block.agg[hi] == self.block.agg[hi - 1] and self.spec.exchange == "binance":
            hi += 1
        if hi <= self.idx:
            self.due = self._next_ts()
            return Trades.empty()
        t = self.block.slice(self.idx, hi)
        self.idx = hi
        key = (self.spec.exchange, self.spec.market)
        self.sim.emitted_until[key] = max(self.sim.emitted_until.get(key, 0), int(t.ts[-1]))
        price = self.model.apply_shocks(self.spec, t.ts, t.price)
        self.due = self._next_ts()
        return Trades(t.ts, price, t.volume, t.buy, t.ids, t.agg)


async def open_cursors(sim: Sim, specs: dict[str, MarketSpec], after_ms: int) -> dict[str, Cursor]:
    """Cursors for many markets, yielding to the loop every few: opening one generates its first chunk (a few ms), and
    250 at once would stall every other connection for seconds."""
    out: dict[str, Cursor] = {}
    for i, (code, spec) in enumerate(specs.items()):
        out[code] = Cursor(sim, spec, after_ms)
        if i % OPEN_BATCH == OPEN_BATCH - 1:
            await asyncio.sleep(0)
    return out


async def pump(sim: Sim, cursors: dict[str, Cursor], emit: Callable[[Batch], Awaitable[None]]) -> None:
    """Feed ``emit`` batches of (market, trades) forever: at wall-clock pace, or flat out in firehose mode."""
    shocks_seen = sim.model.shock_version
    while True:
        if sim.config.firehose:
            batch = [(code, t) for code, cur in cursors.items() if len(t := cur.take(math.inf, FIREHOSE_CHUNK))]
            if batch:
                await emit(batch)
            await asyncio.sleep(0)
            continue
        if sim.model.shock_version != shocks_seen:
            shocks_seen = sim.model.shock_version
            for cur in cursors.values():
                cur.refresh()
        now = now_ms()
        batch = [(code, t) for code, cur in cursors.items() if cur.due <= now and len(t := cur.take(now, 100_000))]
        if batch:
            await emit(batch)
        nxt = min((cur.due for cur in cursors.values()), default=math.inf)
        await asyncio.sleep(min(max((nxt - now_ms()) / 1000, TICK_S), IDLE_S))


def latest_trade(sim: Sim, spec: MarketSpec, at_ms: int) -> Trades:
    """The last trade at or before ``at_ms`` (Upbit's SNAPSHOT), shocks applied; empty if none in a week."""
    return sim.model.last_trades(spec, at_ms + 1, 1)
