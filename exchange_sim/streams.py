"""Walking the model in time order for the live WebSocket streams (both exchanges).

A stream is a cursor over the model's day blocks: live mode sends each trade when wall time reaches it, firehose
mode sends as fast as the client reads. Either way the trades are the model's, so /_sim ground truth covers them.
"""

from __future__ import annotations

import asyncio
import math
from typing import Awaitable, Callable

import numpy as np

from exchange_sim.markets import MarketSpec
from exchange_sim.model import DAY_MS, Trades
from exchange_sim.state import Sim, now_ms

LOOKAHEAD_DAYS = 31  # an empty stretch longer than this (no trades at all) ends the stream's lookahead
FIREHOSE_CHUNK = 2000


class Cursor:
    """The next unsent trade of one market, starting after ``after_ms``."""

    def __init__(self, sim: Sim, spec: MarketSpec, after_ms: int):
        self.sim, self.spec = sim, spec
        self.day = max(after_ms // DAY_MS, sim.history_start_ms // DAY_MS)
        self.block = sim.model.raw_block(spec, self.day)
        self.idx = int(np.searchsorted(self.block.ts, after_ms, "right"))

    def _ready(self) -> bool:
        for _ in range(LOOKAHEAD_DAYS):
            if self.idx < len(self.block):
                return True
            self.day += 1
            self.block = self.sim.model.raw_block(self.spec, self.day)
            self.idx = 0
        return False

    def next_ts(self) -> float:
        return float(self.block.ts[self.idx]) if self._ready() else math.inf

    def take(self, until_ms: float, limit: int) -> Trades:
        if not self._ready():
            return Trades.empty()
        hi = min(int(np.searchsorted(self.block.ts, until_ms, "right")), self.idx + limit, len(self.block))
        # never split one taker order (equal aggTrade id) across two sends
        while 0 < hi < len(self.block) and self.block.agg[hi] == self.block.agg[hi - 1] and self.spec.exchange == "binance":
            hi += 1
        if hi <= self.idx:
            return Trades.empty()
        t = self.block.slice(self.idx, hi)
        self.idx = hi
        key = (self.spec.exchange, self.spec.market)
        self.sim.emitted_until[key] = max(self.sim.emitted_until.get(key, 0), int(t.ts[-1]))
        price = self.sim.model.apply_shocks(self.spec, t.ts, t.price)
        return Trades(t.ts, price, t.volume, t.buy, t.ids, t.agg)


async def pump(sim: Sim, cursors: dict[str, Cursor], emit: Callable[[str, Trades], Awaitable[None]]) -> None:
    """Feed ``emit`` forever: at wall-clock pace, or flat out in firehose mode."""
    while True:
        if sim.config.firehose:
            for code, cur in cursors.items():
                t = cur.take(math.inf, FIREHOSE_CHUNK)
                if len(t):
                    await emit(code, t)
            await asyncio.sleep(0)
            continue
        now = now_ms()
        for code, cur in cursors.items():
            t = cur.take(now, 100_000)
            if len(t):
                await emit(code, t)
        nxt = min((cur.next_ts() for cur in cursors.values()), default=math.inf)
        await asyncio.sleep(min(max((nxt - now_ms()) / 1000, 0.001), 0.5))


def latest_trade(sim: Sim, spec: MarketSpec, at_ms: int) -> Trades:
    """The last trade at or before ``at_ms`` (Upbit's SNAPSHOT), shocks applied; empty if none in a week."""
    for day in range(at_ms // DAY_MS, at_ms // DAY_MS - 8, -1):
        block = sim.model.day_trades(spec, day)
        n = int(np.searchsorted(block.ts, at_ms, "right"))
        if n:
            return block.slice(n - 1, n)
    return Trades.empty()
