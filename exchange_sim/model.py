"""The deterministic trade model: every trade of every market at every time, generated per (market, UTC day).

One model feeds every surface: REST history, REST candles, the live WebSocket streams and the /_sim ground truth all
read the same arrays, so a trade has the same time, price, volume, side and ids wherever a client meets it.

Price path per day: boundary log-prices x[0..1440] at minute starts. For a market with real candles the real minutes
fix the path (each minute's trades start at the real open, touch the real high and low, end at the real close; a real
minute without a candle gets no trades). Elsewhere a Brownian bridge joins daily anchors taken from one seeded random
walk, pinned to the real data at its edges so the path is continuous. Binance USDT symbols follow the Upbit KRW path of
the same asset divided by the KRW-USDT path and (1 + a slowly moving premium), so a Korean premium exists.

Density: ``history_per_minute`` trades per minute before ``live_epoch_ms`` (the server start) and ``live_rate`` per
second after it; history stays light enough to page through quickly while the live stream runs at the asked rate.
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
WALK_DAYS = 30_000  # walk covers 2015..2097
UPBIT_EMPTY_MINUTE_P = 0.03  # Upbit candles have gaps; Binance majors trade every minute
BINANCE_SWEEP_P = 0.3  # share of Binance fills that continue the previous taker order (same time, price, side)


@dataclass(frozen=True)
class ModelConfig:
    seed: int
    history_start_ms: int  # floored to a UTC day; no trades before it
    live_epoch_ms: int  # minutes from here on use the live rate
    history_per_minute: float = 20.0
    live_rate: float = 3.0  # trades per second per market
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


@dataclass
class Running:
    """Per trade of one day: running high/low and left-fold totals up to and including that trade."""

    high: np.ndarray
    low: np.ndarray
    volume: np.ndarray
    quote: np.ndarray
    bid_volume: np.ndarray
    ask_volume: np.ndarray


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


class Model:
    """Deterministic trades for any market and time; day blocks are cached, shocks applied on the way out."""

    def __init__(self, config: ModelConfig, cache_trades: int = 8_000_000):
        self.config = config
        self._blocks: OrderedDict[tuple, Trades] = OrderedDict()
        # the block cache is bounded by trades held (~41 bytes each), not blocks: a live-rate day is 10x a history day
        self._cache_trades = cache_trades
        self._cached = 0
        self._walks: dict[int, np.ndarray] = {}
        self._totals: dict[int, list[tuple[int, int]]] = {}  # spec.key -> [(trades, aggs)] per day from start_day
        self._shocks: dict[tuple[str, str], list[tuple[int, float]]] = {}
        self._closes: dict[tuple, object] = {}  # finished-day candles and closes, keyed with the shock version
        self.shock_version = 0

    # ---- public API -------------------------------------------------------------------------------------------
    def spec(self, exchange: str, market: str) -> MarketSpec:
        return spec_for(exchange, market)

    def trades(self, exchange: str, market: str, start_ms: int, end_ms: int) -> Trades:
        """Trades with start_ms <= ts < end_ms, shocks applied."""
        spec = self.spec(exchange, market)
        start_ms = max(start_ms, self.config.history_start_ms)
        if end_ms <= start_ms:
            return Trades.empty()
        parts = []
        for day in range(start_ms // DAY_MS, (end_ms - 1) // DAY_MS + 1):
            block = self.day_trades(spec, day)
            lo = int(np.searchsorted(block.ts, start_ms, "left"))
            hi = int(np.searchsorted(block.ts, end_ms, "left"))
            if hi > lo:
                parts.append(block.slice(lo, hi))
        return Trades.concat(parts)

    def day_trades(self, spec: MarketSpec, day: int) -> Trades:
        """One UTC day of a market with shocks applied (the raw block is cached)."""
        block = self._block(spec, day)
        shocks = self._shocks.get((spec.exchange, spec.market))
        if not shocks or len(block) == 0 or block.ts[-1] < shocks[0][0]:
            return block
        return Trades(block.ts, self.apply_shocks(spec, block.ts, block.price), block.volume, block.buy, block.ids, block.agg)

    def candles(self, exchange: str, market: str, start_ms: int, end_ms: int, window_ms: int) -> Candles:
        """Candles whose windows start in [start_ms, end_ms), from trades before end_ms."""
        first = start_ms - start_ms % window_ms
        return ohlcv(self.trades(exchange, market, first, end_ms), window_ms)

    def day_candle(self, spec: MarketSpec, day: int, until_ms: int) -> Candles:
        """The day's candle from trades before ``until_ms`` (finished days are cached: 200-day requests stay cheap)."""
        if until_ms < (day + 1) * DAY_MS:
            block = self.day_trades(spec, day)
            return ohlcv(block.slice(0, int(np.searchsorted(block.ts, until_ms, "left"))), DAY_MS)
        key = ("day", spec.key, day, self.shock_version)
        candle = self._closes.get(key)
        if candle is None:
            candle = self._closes[key] = ohlcv(self.day_trades(spec, day), DAY_MS)
        return candle

    def running(self, spec: MarketSpec, day: int) -> Running:
        """Running day totals per trade (cached): a ticker at any trade is one lookup, not a pass over the day."""
        key = ("run", spec.key, day, self.shock_version)
        run = self._closes.get(key)
        if run is None:
            t = self.day_trades(spec, day)
            quote = t.price * t.volume
            run = self._closes[key] = Running(
                high=np.maximum.accumulate(t.price) if len(t) else t.price,
                low=np.minimum.accumulate(t.price) if len(t) else t.price,
                volume=np.cumsum(t.volume),
                quote=np.cumsum(quote),
                bid_volume=np.cumsum(np.where(t.buy, t.volume, 0.0)),
                ask_volume=np.cumsum(np.where(t.buy, 0.0, t.volume)),
            )
            for old in [k for k in self._closes if k[:3] == ("run", spec.key, day - 2)]:
                del self._closes[old]  # only today and yesterday are asked for
        return run

    def extremes_before(self, spec: MarketSpec, day: int, days: int = 30) -> tuple[float, int, float, int] | None:
        """(high, its day, low, its day) over the finished days in the ``days`` before ``day``.

        Feeds the ticker's 52-week fields. Each day costs a block generation (~15 ms) the first time, so the window is
        30 days, not 364: a full year would make a client's first ticker call take seconds per market.
        """
        key = ("52w", spec.key, day, self.shock_version)
        if key not in self._closes:
            best = None
            for d in range(max(day - days, self.config.start_day), day):
                c = self.day_candle(spec, d, (d + 1) * DAY_MS)
                if not len(c):
                    continue
                hi, lo = float(c.high[0]), float(c.low[0])
                if best is None:
                    best = [hi, d, lo, d]
                if hi > best[0]:
                    best[0], best[1] = hi, d
                if lo < best[2]:
                    best[2], best[3] = lo, d
            self._closes[key] = tuple(best) if best else None
        return self._closes[key]

    def day_close(self, spec: MarketSpec, day: int) -> float:
        """Close of the latest day <= ``day`` with trades (the prev_closing_price of the day after)."""
        for d in range(day, max(day - 7, self.config.start_day - 1), -1):
            c = self.day_candle(spec, d, (d + 1) * DAY_MS)
            if len(c):
                return float(c.close[0])
        # before the history start: the model's own anchor, on the price grid
        return float(spec.round_price(np.array([math.exp(self._anchor(spec, day + 1))]))[0])

    def add_shock(self, exchange: str, market: str, at_ms: int, pct: float) -> None:
        """From ``at_ms`` on, the market trades ``pct`` percent higher (recorded, so ground truth includes it)."""
        if pct <= -100:
            raise ValueError("pct must be above -100")
        spec = self.spec(exchange, market)
        shocks = self._shocks.setdefault((spec.exchange, spec.market), [])
        if shocks and at_ms < shocks[-1][0]:
            raise ValueError("shocks must come in time order")
        shocks.append((at_ms, 1.0 + pct / 100.0))
        self.shock_version += 1

    def shocks(self) -> dict[str, list[dict]]:
        return {f"{e}:{m}": [{"at_ms": t, "factor": f} for t, f in v] for (e, m), v in self._shocks.items()}

    def apply_shocks(self, spec: MarketSpec, ts: np.ndarray, price: np.ndarray) -> np.ndarray:
        shocks = self._shocks.get((spec.exchange, spec.market))
        if not shocks:
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

    # ---- generation -------------------------------------------------------------------------------------------
    def raw_block(self, spec: MarketSpec, day: int) -> Trades:
        """The cached day block without shocks (streams apply shocks to what they send)."""
        return self._block(spec, day)

    def _block(self, spec: MarketSpec, day: int) -> Trades:
        key = (spec.key, day)
        block = self._blocks.get(key)
        if block is not None:
            self._blocks.move_to_end(key)
            return block
        block = self._generate(spec, day) if day >= self.config.start_day else Trades.empty()
        self._blocks[key] = block
        self._cached += len(block)
        while self._cached > self._cache_trades and len(self._blocks) > 1:
            _, old = self._blocks.popitem(last=False)
            self._cached -= len(old)
        return block

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
        return (in_span, has, *cols)

    def _upbit_path(self, spec: MarketSpec, day: int) -> np.ndarray:
        """Boundary log prices x[0..1440] for an Upbit-style (own or real) path."""
        z = _rng(self.config.seed, spec.key, day, 2).standard_normal(MINUTES)
        sigma = spec.daily_vol / math.sqrt(MINUTES)
        real = self._real_day(spec, day)
        if real is None:
            return _bridge(self._anchor(spec, day), self._anchor(spec, day + 1), z, sigma)
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
        return x

    def _path(self, spec: MarketSpec, day: int) -> np.ndarray:
        if spec.exchange == "upbit" or spec.quote not in ("USDT", "FDUSD", "USDC"):
            return self._upbit_path(spec, day)
        # Binance USD symbols: the KRW path in dollars, with a premium the Upbit side pays over Binance
        krw = self._upbit_path(upbit_spec(f"KRW-{spec.base}"), day)
        usd_krw = self._upbit_path(upbit_spec(USD_KRW_MARKET), day)
        prem = _rng(self.config.seed, spec.key, 9).random(WALK_DAYS)
        i = min(max(day - EPOCH_DAY, 0), WALK_DAYS - 2)
        p0, p1 = 0.004 + 0.02 * prem[i], 0.004 + 0.02 * prem[i + 1]
        premium = p0 + (p1 - p0) * np.arange(MINUTES + 1) / MINUTES
        z = _rng(self.config.seed, spec.key, day, 2).standard_normal(MINUTES)
        noise = _bridge(0.0, 0.0, z, 0.0002)
        return krw - usd_krw - np.log1p(premium) + noise

    def _counts(self, spec: MarketSpec, day: int) -> tuple[np.ndarray, np.ndarray]:
        """Trades per minute and the 'continues the previous taker order' flag per trade: cheap, no prices."""
        rng = _rng(self.config.seed, spec.key, day, 1)
        lam = np.full(MINUTES, self.config.history_per_minute)
        live_minute = self.config.live_epoch_ms // MIN_MS - day * MINUTES
        if live_minute < MINUTES:
            lam[max(live_minute, 0) :] = self.config.live_rate * 60.0
        n = rng.poisson(lam)
        empty = rng.random(MINUTES)
        if spec.exchange == "upbit":
            n[empty < UPBIT_EMPTY_MINUTE_P] = 0
        else:
            n = np.maximum(n, 1)
        real = self._real_day(spec, day)
        if real is not None:
            in_span, has = real[0], real[1]
            n[in_span & has] = np.maximum(n[in_span & has], 4)  # room for open, high, low, close
            n[in_span & ~has] = 0
        total = int(n.sum())
        cont = rng.random(total) < (BINANCE_SWEEP_P if spec.exchange == "binance" else 0.0)
        starts = np.concatenate(([0], np.cumsum(n)[:-1]))[n > 0]
        cont[starts] = False
        return n, cont

    def _generate(self, spec: MarketSpec, day: int) -> Trades:
        n, cont = self._counts(spec, day)
        total = int(n.sum())
        if total == 0:
            return Trades.empty()
        x = self._path(spec, day)
        rng = _rng(self.config.seed, spec.key, day, 3)
        mi = np.repeat(np.arange(MINUTES), n)
        offsets = np.sort(mi * MIN_MS + rng.integers(0, MIN_MS, total))
        idx = np.arange(total)
        lead = np.maximum.accumulate(np.where(cont, 0, idx))
        offsets = offsets[lead]
        u = (offsets - mi * MIN_MS) / MIN_MS
        sigma = spec.daily_vol / math.sqrt(MINUTES) * 0.3
        logp = x[mi] + (x[mi + 1] - x[mi]) * u + rng.standard_normal(total) * sigma
        price = spec.round_price(np.exp(logp))
        buy = rng.random(total) < 0.5
        volume = rng.lognormal(math.log(spec.median_size), 1.0, total)
        real = self._real_day(spec, day)
        if real is not None:
            price, volume = self._fit_real(real, n, mi, idx, price, volume, rng, spec)
        price, buy = price[lead], buy[lead]
        volume = spec.round_volume(volume)
        ts = day * DAY_MS + offsets
        if spec.exchange == "upbit":
            run_start = np.concatenate(([True], ts[1:] != ts[:-1]))
            rank = idx - np.maximum.accumulate(np.where(run_start, idx, 0)) + 1
            ids = ts * 10_000 + rank
            agg = ids
        else:
            tid0, aid0 = self.id_base(spec, day)
            ids = tid0 + idx
            agg = aid0 + np.cumsum(~cont) - 1
        return Trades(ts.astype(np.int64), price, volume, buy, ids.astype(np.int64), agg.astype(np.int64))

    @staticmethod
    def _fit_real(real, n, mi, idx, price, volume, rng, spec):
        """Make each real minute's trades open at O, touch H and L, close at C and add up to about V."""
        _in_span, has, o, h, lo, c, v = real
        minute_start = np.concatenate(([0], np.cumsum(n)[:-1]))
        pos = idx - minute_start[mi]
        on = has[mi]
        nm = n[mi]
        r1, r2, r3 = rng.random(MINUTES), rng.random(MINUTES), rng.random(len(idx))
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
        weight_sum = np.bincount(mi, weights=volume, minlength=MINUTES)
        scaled = np.nan_to_num(v[mi]) * volume / np.where(weight_sum[mi] > 0, weight_sum[mi], 1.0)
        volume = np.where(on, scaled, volume)
        return price, volume
