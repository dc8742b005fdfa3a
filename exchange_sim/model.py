"""The deterministic trade model: every trade of every market at every time, generated in chunks of whole minutes.

One model feeds every surface: REST history, REST candles, the live WebSocket streams and the /_sim ground truth all
read the same arrays, so a trade has the same time, price, volume, side and ids wherever a client meets it.

Price path per day: boundary log-prices x[0..1440] at minute starts. For a market with real candles the real minutes
fix the path (each minute's trades start at the real open, touch the real high and low, end at the real close; a real
minute without a candle gets no trades). Elsewhere a Brownian bridge joins daily anchors taken from one seeded random
walk, pinned to the real data at its edges so the path is continuous. Binance USDT symbols follow the Upbit KRW path of
the same asset divided by the KRW-USDT path and (1 + a slowly moving premium), so a Korean premium exists.

Density: ``history_per_minute`` trades per minute before ``live_epoch_ms`` (the server start) and ``live_rate`` per
second after it (per market: ``live_rates``); history stays light enough to page through quickly while the live stream
runs at the asked rate. A market-day's per-minute counts are drawn first (no prices); the day is cut into chunks of
about ``CHUNK_TRADES`` trades, the unit of generation, caching and folding (docs/decisions/0018).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from exchange_sim.markets import USD_KRW_MARKET, MarketSpec, spec_for, upbit_spec
from exchange_sim.realdata import RealMinutes

log = logging.getLogger(__name__)

MIN_MS = 60_000
DAY_MS = 86_400_000
MINUTES = 1440
EPOCH_DAY = 16_436  # 2015-01-01: the seeded daily walk starts here
REF_DAY = 20_332  # 2025-09-01: where synthetic markets sit at their reference price
WALK_DAYS = 12_000  # walk covers 2015..2047 (each market draws it once: 30,000 days cost ~1 ms a market at start)
CHUNK_TRADES = 8192  # trades per generated chunk (whole minutes): the unit of generation, caching and folding
BURST_MINUTES = 5  # a live shock raises the market's rate for this long...
BURST_FACTOR = 4.0  # ...by this factor (news moves volume with price)
UPBIT_EMPTY_MINUTE_P = 0.03  # Upbit candles have gaps (at the recorded rate); Binance majors trade every minute
BINANCE_SWEEP_P = 0.3  # share of Binance fills that continue the previous taker order (same time, price, side)


@dataclass(frozen=True)
class ModelConfig:
    seed: int
    history_start_ms: int  # floored to a UTC day; no trades before it
    live_epoch_ms: int  # minutes from here on use the live rate
    history_per_minute: float = 20.0
    live_rate: float = 3.0  # trades per second per market
    live_rates: dict[str, float] = field(default_factory=dict)  # "exchange:market" -> trades/s, overrides live_rate
    real: dict[str, RealMinutes] = field(default_factory=dict)

    @property
    def start_day(self) -> int:
        return self.history_start_ms // DAY_MS


@dataclass
class Trades:
    """Trades of one market in time order. ``ids`` are Upbit sequential_ids or Binance trade ids."""

    ts: np.ndarray  # int64 ms
    price: np.ndarray
    volume: np.ndarray
    buy: np.ndarray  # True when the taker bought (Upbit BID, Binance m=false)
    ids: np.ndarray  # int64
    agg: np.ndarray  # int64 Binance aggTrade id per trade (equal for one taker order); Upbit: copy of ids

    def __len__(self) -> int:
        return len(self.ts)

    def slice(self, lo: int, hi: int) -> Trades:
        return Trades(self.ts[lo:hi], self.price[lo:hi], self.volume[lo:hi], self.buy[lo:hi], self.ids[lo:hi], self.agg[lo:hi])

    def mask(self, keep: np.ndarray) -> Trades:
        return Trades(self.ts[keep], self.price[keep], self.volume[keep], self.buy[keep], self.ids[keep], self.agg[keep])

    @staticmethod
    def concat(parts: list[Trades]) -> Trades:
        if not parts:
            return Trades.empty()
        if len(parts) == 1:
            return parts[0]
        return Trades(*(np.concatenate([getattr(p, n) for p in parts]) for n in ("ts", "price", "volume", "buy", "ids", "agg")))

    @staticmethod
    def empty() -> Trades:
        i, f = np.empty(0, np.int64), np.empty(0, np.float64)
        return Trades(i, f, f, np.empty(0, bool), i, i)


@dataclass
class Candles:
    """OHLCV windows built from trades; ``start`` is the window start, ``last_ts`` the time of its last trade."""

    start: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    quote: np.ndarray
    count: np.ndarray
    last_ts: np.ndarray
    first_id: np.ndarray
    last_id: np.ndarray
    buy_volume: np.ndarray
    buy_quote: np.ndarray

    def __len__(self) -> int:
        return len(self.start)


def seq_sum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per-segment float sums in time order (a left fold), so anyone re-adding the trades gets the same digits.

    numpy's ``add.reduce`` sums pairwise, which differs from a loop in the last bits; ``cumsum`` is sequential.
    Padding with 0.0 leaves a float sum unchanged.
    """
    n = len(values)
    if len(starts) == 0:
        return np.empty(0, np.float64)
    ends = np.append(starts[1:], n)
    lens = ends - starts
    width = int(lens.max())
    if len(starts) * width <= 4_000_000:
        grid = np.zeros((len(starts), width), np.float64)
        rows = np.repeat(np.arange(len(starts)), lens)
        grid[rows, np.arange(n) - starts[rows]] = values
        return np.cumsum(grid, axis=1)[:, -1]
    return np.array([np.cumsum(values[s:e])[-1] for s, e in zip(starts, ends)], np.float64)


def ohlcv(trades: Trades, window_ms: int, offset_ms: int = 0) -> Candles:
    """Candles of ``window_ms`` (aligned to ``offset_ms``) from trades in time order; windows without trades are absent."""
    if len(trades) == 0:
        e = np.empty(0, np.int64)
        f = np.empty(0, np.float64)
        return Candles(e, f, f, f, f, f, f, e, e, e, e, f, f)
    window = (trades.ts - offset_ms) // window_ms
    starts = np.flatnonzero(np.concatenate(([True], window[1:] != window[:-1])))
    ends = np.append(starts[1:], len(trades))
    quote = trades.price * trades.volume
    return Candles(
        start=window[starts] * window_ms + offset_ms,
        open=trades.price[starts],
        high=np.maximum.reduceat(trades.price, starts),
        low=np.minimum.reduceat(trades.price, starts),
        close=trades.price[ends - 1],
        volume=seq_sum(trades.volume, starts),
        quote=seq_sum(quote, starts),
        count=ends - starts,
        last_ts=trades.ts[ends - 1],
        first_id=trades.ids[starts],
        last_id=trades.ids[ends - 1],
        buy_volume=seq_sum(np.where(trades.buy, trades.volume, 0.0), starts),
        buy_quote=seq_sum(np.where(trades.buy, quote, 0.0), starts),
    )


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in key])


def _bridge(a: float, b: float, z: np.ndarray, sigma: float) -> np.ndarray:
    """Brownian bridge from a to b over len(z) steps (returns len(z)+1 points, ends exact)."""
    m = len(z)
    walk = np.concatenate(([0.0], np.cumsum(z * sigma)))
    k = np.arange(m + 1) / m
    out = a + walk - k * (walk[-1] - (b - a))
    out[0], out[-1] = a, b
    return out


@dataclass(frozen=True)
class Totals:
    """A day's trades folded in time order up to some point: what a day candle or a ticker reports.

    Sums are left folds carried from chunk to chunk (``np.cumsum`` with the previous total in front), so they have the
    same digits as one fold over the whole day and as anyone re-adding the served trades in order.
    """

    count: int = 0
    open: float = math.nan
    high: float = -math.inf
    low: float = math.inf
    close: float = math.nan
    first_ts: int = 0
    last_ts: int = 0
    first_id: int = 0
    last_id: int = 0
    last_volume: float = 0.0
    last_buy: bool = False
    volume: float = 0.0
    quote: float = 0.0
    buy_volume: float = 0.0
    buy_quote: float = 0.0
    sell_volume: float = 0.0

    def add(self, t: Trades) -> Totals:
        if len(t) == 0:
            return self
        quote = t.price * t.volume
        fold = lambda carry, values: float(np.cumsum(np.concatenate(([carry], values)))[-1])  # noqa: E731
        first = self.count == 0
        return Totals(
            count=self.count + len(t),
            open=float(t.price[0]) if first else self.open,
            high=max(self.high, float(t.price.max())),
            low=min(self.low, float(t.price.min())),
            close=float(t.price[-1]),
            first_ts=int(t.ts[0]) if first else self.first_ts,
            last_ts=int(t.ts[-1]),
            first_id=int(t.ids[0]) if first else self.first_id,
            last_id=int(t.ids[-1]),
            last_volume=float(t.volume[-1]),
            last_buy=bool(t.buy[-1]),
            volume=fold(self.volume, t.volume),
            quote=fold(self.quote, quote),
            buy_volume=fold(self.buy_volume, np.where(t.buy, t.volume, 0.0)),
            buy_quote=fold(self.buy_quote, np.where(t.buy, quote, 0.0)),
            sell_volume=fold(self.sell_volume, np.where(t.buy, 0.0, t.volume)),
        )

    def candle(self, day: int) -> Candles:
        """The day candle (one row), or no row without trades."""
        if self.count == 0:
            return ohlcv(Trades.empty(), DAY_MS)
        i = lambda v: np.array([v], np.int64)  # noqa: E731
        f = lambda v: np.array([v], np.float64)  # noqa: E731
        return Candles(i(day * DAY_MS), f(self.open), f(self.high), f(self.low), f(self.close), f(self.volume),
                       f(self.quote), i(self.count), i(self.last_ts), i(self.first_id), i(self.last_id),
                       f(self.buy_volume), f(self.buy_quote))


@dataclass
class _Chain:
    """Per chunk of one market-day: the totals before it (index k = chunks 0..k-1) and its own high and low."""

    totals: list[Totals] = field(default_factory=lambda: [Totals()])
    high: list[float] = field(default_factory=list)
    low: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.totals)


@dataclass
class Window:
    """A time window's trades summarised (see Model.window); sums are differences of left folds."""

    count: int = 0
    open: float = math.nan
    high: float = -math.inf
    low: float = math.inf
    close: float = math.nan
    first_id: int = 0
    last_id: int = 0
    first_ts: int = 0
    last_ts: int = 0
    last_volume: float = 0.0
    last_buy: bool = False
    volume: float = 0.0
    quote: float = 0.0


@dataclass(frozen=True)
class DayPlan:
    """How many trades each minute of one market-day holds, and how the day splits into chunks. Cheap: no prices."""

    n: np.ndarray  # int64 trades per minute
    cont: np.ndarray  # int64 per minute: fills that continue the previous taker order (Binance)
    first: np.ndarray  # int64 [1441]: trades before each minute
    first_agg: np.ndarray  # int64 [1441]: aggTrades before each minute
    bounds: np.ndarray  # chunk k covers minutes bounds[k] .. bounds[k+1]-1; last entry 1440
    id0: int  # Binance trade id / aggTrade id of the day's first trade (Upbit: 0)
    agg0: int

    @property
    def chunks(self) -> int:
        return len(self.bounds) - 1

    def chunk_of(self, minute: int) -> int:
        return int(np.searchsorted(self.bounds, minute, "right")) - 1


class _Lru(OrderedDict):
    """A small LRU map; ``weigh`` gives an entry's cost against ``limit`` (default: one per entry)."""

    def __init__(self, limit: int, weigh=lambda v: 1):
        super().__init__()
        self.limit, self.weigh, self.weight = limit, weigh, 0

    def get_fresh(self, key):
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        if key in self:
            self.weight -= self.weigh(self.pop(key))
        self[key] = value
        self.weight += self.weigh(value)
        while self.weight > self.limit and len(self) > 1:
            _, old = self.popitem(last=False)
            self.weight -= self.weigh(old)

    def drop(self, keep) -> None:
        for key in [k for k in self if not keep(k, self[k])]:
            self.weight -= self.weigh(self.pop(key))


class Model:
    """Deterministic trades for any market and time, generated in chunks of whole minutes; shocks applied on the way out.

    Memory is bounded whatever the rate: a market-day is cut into chunks of about ``CHUNK_TRADES`` trades, chunks live
    in an LRU bounded by trades held (``cache_trades``), and per-day totals are kept as one small fold per chunk. Any
    evicted chunk is regenerated bit for bit on demand (seeded per chunk and per quantity), so REST history, candles,
    the streams and /_sim ground truth always agree.
    """

    def __init__(self, config: ModelConfig, cache_trades: int = 3_000_000):
        self.config = config
        self._chunks = _Lru(cache_trades, weigh=lambda v: max(len(v[1]), 1))  # (key, day, first minute) -> (end, Trades)
        self._plans = _Lru(2048)
        self._paths = _Lru(4096)
        self._reals = _Lru(64)
        self._chains = _Lru(2048, weigh=lambda v: max(len(v), 1) // 64 + 1)  # (key, day) -> [Totals after chunk k]
        self._walks: dict[int, np.ndarray] = {}
        self._totals: dict[int, list[tuple[int, int]]] = {}  # spec.key -> [(trades, aggs)] per day from start_day
        self._shocks: dict[tuple[str, str], list[tuple[int, float]]] = {}
        self._extremes: dict[tuple, object] = {}
        self._ranges: dict[tuple, tuple[float, float]] = {}  # (key, day, version) -> a day's path high and low
        self._versions: dict[tuple[str, str], int] = {}  # bumped when a shock changes a market's future trades
        self.shock_version = 0

    # ---- public API -------------------------------------------------------------------------------------------
    def spec(self, exchange: str, market: str) -> MarketSpec:
        return spec_for(exchange, market)

    def cache_info(self) -> dict[str, int]:
        """What the model holds in memory (for /_sim/status and the benchmark's memory figures)."""
        return {"chunks": len(self._chunks), "chunk_trades": self._chunks.weight, "chunk_trades_limit": self._chunks.limit,
                "plans": len(self._plans), "paths": len(self._paths), "day_chains": len(self._chains),
                "walks": len(self._walks)}

    def version(self, spec: MarketSpec) -> int:
        return self._versions.get((spec.exchange, spec.market), 0)

    def live_rate(self, spec: MarketSpec) -> float:
        return self.config.live_rates.get(f"{spec.exchange}:{spec.market}", self.config.live_rate)

    def trades(self, exchange: str, market: str, start_ms: int, end_ms: int) -> Trades:
        """Trades with start_ms <= ts < end_ms, shocks applied."""
        spec = self.spec(exchange, market)
        start_ms = max(start_ms, self.config.history_start_ms)
        if end_ms <= start_ms:
            return Trades.empty()
        parts = []
        for day in range(start_ms // DAY_MS, (end_ms - 1) // DAY_MS + 1):
            plan = self.plan(spec, day)
            lo_min = max(start_ms - day * DAY_MS, 0) // MIN_MS
            hi_min = min(end_ms - day * DAY_MS - 1, DAY_MS - 1) // MIN_MS
            for k in range(plan.chunk_of(lo_min), plan.chunk_of(hi_min) + 1):
                block = self.chunk(spec, day, k)
                lo = int(np.searchsorted(block.ts, start_ms, "left"))
                hi = int(np.searchsorted(block.ts, end_ms, "left"))
                if hi > lo:
                    parts.append(block.slice(lo, hi))
        t = Trades.concat(parts)
        return self._shocked(spec, t)

    def last_trades(self, spec: MarketSpec, end_ms: int, limit: int, days: int = 8) -> Trades:
        """The last ``limit`` trades before ``end_ms`` (shocks applied), looking back at most ``days`` UTC days."""
        parts, got = [], 0
        for day in range((end_ms - 1) // DAY_MS, (end_ms - 1) // DAY_MS - days, -1):
            if day < self.config.start_day:
                break
            plan = self.plan(spec, day)
            top = plan.chunk_of(min(end_ms - 1 - day * DAY_MS, DAY_MS - 1) // MIN_MS)
            for k in range(top, -1, -1):
                block = self.chunk(spec, day, k)
                hi = int(np.searchsorted(block.ts, end_ms, "left"))
                lo = max(hi - (limit - got), 0)
                if hi > lo:
                    parts.append(block.slice(lo, hi))
                    got += hi - lo
                if got >= limit:
                    break
            if got >= limit:
                break
        return self._shocked(spec, Trades.concat(parts[::-1]))

    def day_trades(self, spec: MarketSpec, day: int) -> Trades:
        """One UTC day of a market with shocks applied (assembled from chunks: for light days and tests)."""
        return self.trades(spec.exchange, spec.market, day * DAY_MS, (day + 1) * DAY_MS)

    def candles(self, exchange: str, market: str, start_ms: int, end_ms: int, window_ms: int) -> Candles:
        """Candles whose windows start in [start_ms, end_ms), from trades before end_ms."""
        first = start_ms - start_ms % window_ms
        return ohlcv(self.trades(exchange, market, first, end_ms), window_ms)

    def totals(self, spec: MarketSpec, day: int, end_ms: int) -> Totals:
        """The day's trades with ts < ``end_ms`` folded (a chain of per-chunk folds; only the last chunk is sliced)."""
        if day < self.config.start_day or end_ms <= day * DAY_MS:
            return Totals()
        plan = self.plan(spec, day)
        if end_ms >= (day + 1) * DAY_MS:
            return self._chain(spec, day, plan.chunks)
        k = plan.chunk_of((end_ms - day * DAY_MS) // MIN_MS)
        block = self._shocked(spec, self.chunk(spec, day, k))
        return self._chain(spec, day, k).add(block.slice(0, int(np.searchsorted(block.ts, end_ms, "left"))))

    def day_candle(self, spec: MarketSpec, day: int, until_ms: int) -> Candles:
        """The day's candle from trades before ``until_ms``."""
        return self.totals(spec, day, until_ms).candle(day)

    def extremes_before(self, spec: MarketSpec, day: int, days: int = 364) -> tuple[float, int, float, int] | None:
        """(high, its day, low, its day) over the finished days in the ``days`` before ``day`` (the ticker's 52-week
        fields), from each day's price path (and real candles' highs and lows where recorded), not from its trades:
        a year of trades is ~10 million per market, a year of paths a few milliseconds. A day's trades scatter a little
        around its path (per-trade noise), so these extremes are close to, not exactly, the served trades' extremes."""
        key = (spec.key, day)
        if key not in self._extremes:
            best = None
            for d in range(max(day - days, self.config.start_day), day):
                hi, lo = self._day_range(spec, d)
                if best is None:
                    best = [hi, d, lo, d]
                if hi > best[0]:
                    best[0], best[1] = hi, d
                if lo < best[2]:
                    best[2], best[3] = lo, d
            if len(self._extremes) > 4096:
                self._extremes.clear()
            self._extremes[key] = tuple(best) if best else None
        return self._extremes[key]

    def _day_range(self, spec: MarketSpec, day: int) -> tuple[float, float]:
        key = (spec.key, day, self.version(spec))
        hit = self._ranges.get(key)
        if hit is None:
            x = self._path(spec, day)
            hi, lo = math.exp(float(np.nanmax(x))), math.exp(float(np.nanmin(x)))
            real = self._real_day(spec, day)
            if real is not None and real[1].any():
                hi, lo = max(hi, float(np.nanmax(real[3]))), min(lo, float(np.nanmin(real[4])))  # real H, L
            end = np.full(2, (day + 1) * DAY_MS - 1, np.int64)
            hi, lo = (float(v) for v in self.apply_shocks(spec, end, spec.round_price(np.array([hi, lo]))))
            if len(self._ranges) > 200_000:
                self._ranges.clear()
            hit = self._ranges[key] = (hi, lo)
        return hit

    def day_close(self, spec: MarketSpec, day: int) -> float:
        """Close of the latest day <= ``day`` with trades (the prev_closing_price of the day after)."""
        for d in range(day, max(day - 7, self.config.start_day - 1), -1):
            c = self.totals(spec, d, (d + 1) * DAY_MS)
            if c.count:
                return c.close
        # before the history start: the model's own anchor, on the price grid
        return float(spec.round_price(np.array([math.exp(self._anchor(spec, day + 1))]))[0])

    def add_shock(self, exchange: str, market: str, at_ms: int, pct: float) -> None:
        """From ``at_ms`` on, the market trades ``pct`` percent higher (recorded, so ground truth includes it).

        A shock during the live period also brings a burst: from the next whole minute, ``BURST_MINUTES`` minutes at
        ``BURST_FACTOR`` times the market's rate. Trades before ``at_ms`` stay exactly as they were (every random
        quantity is drawn per minute in order, so changing later minutes' counts leaves earlier trades alone).
        """
        if pct <= -100:
            raise ValueError("pct must be above -100")
        spec = self.spec(exchange, market)
        name = (spec.exchange, spec.market)
        shocks = self._shocks.setdefault(name, [])
        if shocks and at_ms < shocks[-1][0]:
            raise ValueError("shocks must come in time order")
        shocks.append((at_ms, 1.0 + pct / 100.0))
        self.shock_version += 1
        self._versions[name] = self._versions.get(name, 0) + 1
        day = at_ms // DAY_MS
        key = spec.key
        # forget everything of this market from the shock on: chunks ending after it, plans and id totals of its day
        # and later (a burst changes counts), folds past it
        self._chunks.drop(lambda k, v: k[0] != key or (k[1] * DAY_MS + v[0] * MIN_MS) <= at_ms)
        self._plans.drop(lambda k, v: k[0] != key or k[1] < day)
        totals = self._totals.get(key)
        if totals is not None:
            del totals[max(day - self.config.start_day + 1, 0) :]
        self._chains.drop(lambda k, v: k[0] != key or k[1] < day)
        self._extremes = {k: v for k, v in self._extremes.items() if k[0] != key}

    def shocks(self) -> dict[str, list[dict]]:
        return {f"{e}:{m}": [{"at_ms": t, "factor": f} for t, f in v] for (e, m), v in self._shocks.items()}

    def apply_shocks(self, spec: MarketSpec, ts: np.ndarray, price: np.ndarray) -> np.ndarray:
        shocks = self._shocks.get((spec.exchange, spec.market))
        if not shocks or len(ts) == 0 or ts[-1] < shocks[0][0]:
            return price
        at = np.array([t for t, _ in shocks], np.int64)
        cum = np.concatenate(([1.0], np.cumprod([f for _, f in shocks])))
        factor = cum[np.searchsorted(at, ts, "right")]
        hit = factor != 1.0
        if not hit.any():
            return price
        out = price.copy()
        out[hit] = spec.round_price(price[hit] * factor[hit])
        return out

    def _shocked(self, spec: MarketSpec, t: Trades) -> Trades:
        price = self.apply_shocks(spec, t.ts, t.price)
        return t if price is t.price else Trades(t.ts, price, t.volume, t.buy, t.ids, t.agg)

    def id_base(self, spec: MarketSpec, day: int) -> tuple[int, int]:
        """Binance (trade id, aggTrade id) of the first trade of ``day``: prefix sums from the history start."""
        idx = day - self.config.start_day
        if idx <= 0:
            return 0, 0
        trades, aggs = self._prefix(spec, idx)
        return int(trades[idx]), int(aggs[idx])

    def locate(self, spec: MarketSpec, ident: int, agg: bool, last_day: int) -> int | None:
        """The day holding Binance trade id (or aggTrade id) ``ident``, searching up to ``last_day``."""
        n = last_day - self.config.start_day + 1
        if ident < 0 or n <= 0:
            return None
        trades, aggs = self._prefix(spec, n)
        cum = aggs if agg else trades
        i = int(np.searchsorted(cum, ident, "right")) - 1
        return self.config.start_day + i if i < n else None

    def _prefix(self, spec: MarketSpec, days: int) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative (trades, aggTrades) before each day index 0..days, counted without generating prices."""
        totals = self._totals.setdefault(spec.key, [])
        while len(totals) < days:
            n, cont = self._counts(spec, self.config.start_day + len(totals))
            totals.append((int(n.sum()), int(n.sum() - cont.sum())))
        arr = np.array(totals[:days], np.int64).reshape(-1, 2)
        zero = np.zeros(1, np.int64)
        return np.concatenate((zero, np.cumsum(arr[:, 0]))), np.concatenate((zero, np.cumsum(arr[:, 1])))

    # ---- chunks -----------------------------------------------------------------------------------------------
    def plan(self, spec: MarketSpec, day: int) -> DayPlan:
        key = (spec.key, day)
        plan = self._plans.get_fresh(key)
        if plan is None:
            n, cont = self._counts(spec, day) if day >= self.config.start_day else (np.zeros(MINUTES, np.int64),) * 2
            first = np.concatenate(([0], np.cumsum(n)))
            first_agg = np.concatenate(([0], np.cumsum(n - cont)))
            # a chunk starts where the running count crosses a multiple of CHUNK_TRADES: boundaries before a minute
            # depend only on earlier minutes, so a burst later in the day never moves a chunk that was already sent
            idx = first[:-1] // CHUNK_TRADES
            bounds = np.concatenate(([0], np.flatnonzero(idx[1:] != idx[:-1]) + 1, [MINUTES]))
            id0, agg0 = self.id_base(spec, day) if spec.exchange == "binance" else (0, 0)
            plan = DayPlan(n, cont, first, first_agg, bounds, id0, agg0)
            self._plans.put(key, plan)
        return plan

    def chunk(self, spec: MarketSpec, day: int, k: int) -> Trades:
        """Chunk ``k`` of the market-day, raw (no shocks), from the LRU or generated."""
        plan = self.plan(spec, day)
        a, b = int(plan.bounds[k]), int(plan.bounds[k + 1])
        key = (spec.key, day, a)
        hit = self._chunks.get_fresh(key)
        if hit is not None and hit[0] == b:
            return hit[1]
        block = self._generate(spec, day, plan, a, b) if day >= self.config.start_day else Trades.empty()
        self._chunks.put(key, (b, block))
        chain = self._chains.get((spec.key, day))
        if chain is not None and len(chain.totals) == k + 1:
            # a day someone asked totals for keeps its fold up to date as the streams generate it, so a ticker after
            # hours of streaming does not regenerate the hours
            self._extend(chain, self._shocked(spec, block))
        return block

    def _chain(self, spec: MarketSpec, day: int, k: int) -> Totals:
        """Totals through chunks 0..k-1 of the day (shocks applied), extending the cached chain as needed."""
        return self._chain_of(spec, day, k).totals[k]

    def _chain_of(self, spec: MarketSpec, day: int, k: int) -> _Chain:
        key = (spec.key, day)
        chain = self._chains.get_fresh(key)
        if chain is None:
            chain = _Chain()
        self._chains.put(key, chain)
        while len(chain.totals) <= k:
            n = len(chain.totals)
            block = self._shocked(spec, self.chunk(spec, day, n - 1))
            if len(chain.totals) == n:  # chunk() may have extended the chain itself
                self._extend(chain, block)
        return chain

    @staticmethod
    def _extend(chain: _Chain, block: Trades) -> None:
        chain.totals.append(chain.totals[-1].add(block))
        chain.high.append(float(block.price.max()) if len(block) else -math.inf)
        chain.low.append(float(block.price.min()) if len(block) else math.inf)

    def window(self, spec: MarketSpec, start_ms: int, end_ms: int) -> Window:
        """Trades with start_ms <= ts < end_ms summarised (Binance's rolling 24 h ticker) without a pass over them:
        sums are differences of day folds, extremes come from whole chunks plus the two partial ones at the edges."""
        start_ms = max(start_ms, self.config.history_start_ms)
        out = Window()
        for day in range(start_ms // DAY_MS, (end_ms - 1) // DAY_MS + 1):
            lo, hi = max(start_ms, day * DAY_MS), min(end_ms, (day + 1) * DAY_MS)
            if hi <= lo:
                continue
            a, b = self.totals(spec, day, lo), self.totals(spec, day, hi)
            if b.count == a.count:
                continue
            plan = self.plan(spec, day)
            k0 = plan.chunk_of((lo - day * DAY_MS) // MIN_MS)
            k1 = plan.chunk_of((hi - 1 - day * DAY_MS) // MIN_MS)
            chain = self._chain_of(spec, day, k1)
            edges = []
            for k in sorted({k0, k1}):
                block = self._shocked(spec, self.chunk(spec, day, k))
                i, j = np.searchsorted(block.ts, [lo, hi], "left")
                edges.append(block.slice(int(i), int(j)))
            inner = range(k0 + 1, k1)
            high = max([float(e.price.max()) for e in edges if len(e)] + [chain.high[k] for k in inner])
            low = min([float(e.price.min()) for e in edges if len(e)] + [chain.low[k] for k in inner])
            first = next(e for e in edges if len(e))
            if out.count == 0:
                out.open, out.first_id, out.first_ts = float(first.price[0]), int(first.ids[0]), int(first.ts[0])
            out.count += b.count - a.count
            out.high, out.low = max(out.high, high), min(out.low, low)
            out.close, out.last_id, out.last_ts, out.last_volume, out.last_buy = b.close, b.last_id, b.last_ts, b.last_volume, b.last_buy
            out.volume += b.volume - a.volume
            out.quote += b.quote - a.quote
        return out

    # ---- generation -------------------------------------------------------------------------------------------
    def _walk(self, spec: MarketSpec) -> np.ndarray:
        walk = self._walks.get(spec.key)
        if walk is None:
            inc = _rng(self.config.seed, spec.key, 7).normal(0.0, spec.daily_vol, WALK_DAYS)
            walk = self._walks[spec.key] = np.concatenate(([0.0], np.cumsum(inc)))
        return walk

    def _anchor(self, spec: MarketSpec, day: int) -> float:
        """Log price at the start of ``day`` on the synthetic walk, pinned to real data where there is some."""
        walk = self._walk(spec)
        w = lambda d: walk[min(max(d - EPOCH_DAY, 0), WALK_DAYS)]  # noqa: E731
        real = self.config.real.get(spec.market) if spec.exchange == "upbit" else None
        if real is None:
            return math.log(spec.ref_price) + w(day) - w(REF_DAY)
        first_day, last_day = real.first_minute // MINUTES, real.last_minute // MINUTES
        if day <= first_day:
            return math.log(real.open[0]) + w(day) - w(first_day)
        return math.log(real.close[-1]) + w(day) - w(last_day + 1)

    def _real_day(self, spec: MarketSpec, day: int):
        """(in_span, has_candle, O, H, L, C, V) per minute of the day, or None without real data that day."""
        real = self.config.real.get(spec.market) if spec.exchange == "upbit" else None
        if real is None:
            return None
        m0 = day * MINUTES
        if real.last_minute < m0 or real.first_minute >= m0 + MINUTES:
            return None
        key = (spec.key, day)
        cached = self._reals.get_fresh(key)
        if cached is not None:
            return cached
        minute = np.arange(m0, m0 + MINUTES)
        in_span = (minute >= real.first_minute) & (minute <= real.last_minute)
        lo, hi = np.searchsorted(real.minute, [m0, m0 + MINUTES])
        idx = real.minute[lo:hi] - m0
        has = np.zeros(MINUTES, bool)
        has[idx] = True
        cols = []
        for arr in (real.open, real.high, real.low, real.close, real.volume):
            col = np.full(MINUTES, np.nan)
            col[idx] = arr[lo:hi]
            cols.append(col)
        out = (in_span, has, *cols)
        self._reals.put(key, out)
        return out

    def _upbit_path(self, spec: MarketSpec, day: int) -> np.ndarray:
        """Boundary log prices x[0..1440] for an Upbit-style (own or real) path."""
        key = (spec.key, day)
        cached = self._paths.get_fresh(key)
        if cached is not None:
            return cached
        z = _rng(self.config.seed, spec.key, day, 2).standard_normal(MINUTES)
        sigma = spec.daily_vol / math.sqrt(MINUTES)
        real = self._real_day(spec, day)
        if real is None:
            x = _bridge(self._anchor(spec, day), self._anchor(spec, day + 1), z, sigma)
            self._paths.put(key, x)
            return x
        in_span, has, o, _h, _l, c, _v = real
        x = np.full(MINUTES + 1, np.nan)
        # inside the real span: a minute starts at its open; an empty minute keeps the last close
        last = np.nan
        for k in np.flatnonzero(in_span):
            if has[k]:
                x[k] = math.log(o[k])
                last = math.log(c[k])
            else:
                x[k] = last
            x[k + 1] = last
        synthetic = ~in_span
        k = 0
        while k < MINUTES:
            if not synthetic[k]:
                k += 1
                continue
            e = k
            while e < MINUTES and synthetic[e]:
                e += 1
            a = self._anchor(spec, day) if k == 0 else x[k]
            b = self._anchor(spec, day + 1) if e == MINUTES else math.log(o[e])
            x[k : e + 1] = _bridge(a, b, z[k:e], sigma)
            k = e
        self._paths.put(key, x)
        return x

    def _path(self, spec: MarketSpec, day: int) -> np.ndarray:
        if spec.exchange == "upbit" or spec.quote not in ("USDT", "FDUSD", "USDC"):
            return self._upbit_path(spec, day)
        key = (spec.key, day)
        cached = self._paths.get_fresh(key)
        if cached is not None:
            return cached
        # Binance USD symbols: the KRW path in dollars, with a premium the Upbit side pays over Binance
        krw = self._upbit_path(upbit_spec(f"KRW-{spec.base}"), day)
        usd_krw = self._upbit_path(upbit_spec(USD_KRW_MARKET), day)
        i = min(max(day - EPOCH_DAY, 0), WALK_DAYS - 2)
        p0, p1 = (0.004 + 0.02 * _rng(self.config.seed, spec.key, 9, j).random() for j in (i, i + 1))
        premium = p0 + (p1 - p0) * np.arange(MINUTES + 1) / MINUTES
        z = _rng(self.config.seed, spec.key, day, 2).standard_normal(MINUTES)
        noise = _bridge(0.0, 0.0, z, 0.0002)
        x = krw - usd_krw - np.log1p(premium) + noise
        self._paths.put(key, x)
        return x

    def _counts(self, spec: MarketSpec, day: int) -> tuple[np.ndarray, np.ndarray]:
        """Trades per minute and, per minute, how many fills continue the previous taker order: cheap, no prices.

        Each quantity has its own seeded stream drawn minute by minute, so raising a later minute's rate (a shock's
        burst) leaves every earlier minute as it was.
        """
        seed, key = self.config.seed, spec.key
        lam = np.full(MINUTES, self.config.history_per_minute)
        live_minute = self.config.live_epoch_ms // MIN_MS - day * MINUTES
        if live_minute < MINUTES:
            lam[max(live_minute, 0) :] = self.live_rate(spec) * 60.0
            for at, _factor in self._shocks.get((spec.exchange, spec.market), ()):
                burst = -(-at // MIN_MS) - day * MINUTES
                if at >= self.config.live_epoch_ms and burst < MINUTES and burst + BURST_MINUTES > 0:
                    lam[max(burst, 0) : burst + BURST_MINUTES] *= BURST_FACTOR
        n = _rng(seed, key, day, 1).poisson(lam).astype(np.int64)
        empty = _rng(seed, key, day, 11).random(MINUTES)
        if spec.exchange == "upbit":
            # A minute is empty the way a Poisson count is zero, e^(-c x rate): UPBIT_EMPTY_MINUTE_P at the recorded
            # rate, that to the power rate / recorded rate at another. A market trading 50 a second (the endurance
            # run's ETH) is never silent for a whole minute, where a flat 3 % once hid a price shock for 36 s.
            n[empty < UPBIT_EMPTY_MINUTE_P ** (lam / max(self.config.history_per_minute, 1e-9))] = 0
        else:
            n = np.maximum(n, 1)
        real = self._real_day(spec, day)
        if real is not None:
            in_span, has = real[0], real[1]
            n[in_span & has] = np.maximum(n[in_span & has], 4)  # room for open, high, low, close
            n[in_span & ~has] = 0
        if spec.exchange == "binance":
            cont = _rng(seed, key, day, 12).binomial(np.maximum(n - 1, 0), BINANCE_SWEEP_P).astype(np.int64)
        else:
            cont = np.zeros(MINUTES, np.int64)
        return n, cont

    def _generate(self, spec: MarketSpec, day: int, plan: DayPlan, a: int, b: int) -> Trades:
        """Minutes a..b-1 of a market-day. Every per-trade quantity comes from its own stream seeded by the chunk's
        first minute, drawn in time order, so the first trades of a chunk do not depend on how long the chunk is."""
        n = plan.n[a:b]
        total = int(n.sum())
        if total == 0:
            return Trades.empty()
        rng = lambda stream: _rng(self.config.seed, spec.key, day, a, stream)  # noqa: E731
        x = self._path(spec, day)
        mi = np.repeat(np.arange(a, b), n)
        local_first = np.concatenate(([0], np.cumsum(n)[:-1]))
        idx = np.arange(total)
        pos = idx - local_first[mi - a]  # position within its minute
        offsets = np.sort(mi * MIN_MS + rng(3).integers(0, MIN_MS, total))
        cont = np.zeros(total, bool)
        if plan.cont[a:b].any():
            # which fills continue a taker order: the minute's cont[m] lowest random keys among positions 1..n-1
            keys = rng(4).random(total)
            keys[pos == 0] = 2.0
            order = np.lexsort((keys, mi))
            rank = np.empty(total, np.int64)
            rank[order] = pos
            cont = rank < plan.cont[mi]
        lead = np.maximum.accumulate(np.where(cont, 0, idx))
        offsets = offsets[lead]
        u = (offsets - mi * MIN_MS) / MIN_MS
        sigma = spec.daily_vol / math.sqrt(MINUTES) * 0.3
        logp = x[mi] + (x[mi + 1] - x[mi]) * u + rng(5).standard_normal(total) * sigma
        price = spec.round_price(np.exp(logp))
        buy = rng(6).random(total) < 0.5
        volume = rng(7).lognormal(math.log(spec.median_size), 1.0, total)
        real = self._real_day(spec, day)
        if real is not None:
            price, volume = self._fit_real(real, plan, day, a, b, mi, pos, price, volume, rng(8), spec)
        price, buy = price[lead], buy[lead]
        volume = spec.round_volume(volume)
        ts = day * DAY_MS + offsets
        if spec.exchange == "upbit":
            run_start = np.concatenate(([True], ts[1:] != ts[:-1]))
            rank = idx - np.maximum.accumulate(np.where(run_start, idx, 0)) + 1
            ids = ts * 10_000 + rank
            agg = ids
        else:
            ids = plan.id0 + int(plan.first[a]) + idx
            agg = plan.agg0 + int(plan.first_agg[a]) + np.cumsum(~cont) - 1
        return Trades(ts.astype(np.int64), price, volume, buy, ids.astype(np.int64), agg.astype(np.int64))

    def _fit_real(self, real, plan, day, a, b, mi, pos, price, volume, rng, spec):
        """Make each real minute's trades open at O, touch H and L, close at C and add up to about V."""
        _in_span, has, o, h, lo, c, v = real
        n = plan.n
        on = has[mi]
        nm = n[mi]
        r1, r2 = _rng(self.config.seed, spec.key, day, 13).random((2, MINUTES))
        r3 = rng.random(len(mi))
        span = np.maximum(n - 2, 1)
        jh = 1 + np.floor(r1 * span).astype(np.int64)
        jl = 1 + (jh - 1 + 1 + np.floor(r2 * np.maximum(n - 3, 1)).astype(np.int64)) % span
        inner = spec.round_price(lo[mi] + (h[mi] - lo[mi]) * r3)
        fitted = np.clip(np.nan_to_num(inner), np.nan_to_num(lo[mi]), np.nan_to_num(h[mi]))
        fitted = np.where(pos == jh[mi], h[mi], fitted)
        fitted = np.where(pos == jl[mi], lo[mi], fitted)
        fitted = np.where(pos == 0, o[mi], fitted)
        fitted = np.where(pos == nm - 1, c[mi], fitted)
        price = np.where(on, fitted, price)
        weight_sum = np.bincount(mi - a, weights=volume, minlength=b - a)
        scaled = np.nan_to_num(v[mi]) * volume / np.where(weight_sum[mi - a] > 0, weight_sum[mi - a], 1.0)
        volume = np.where(on, scaled, volume)
        return price, volume
