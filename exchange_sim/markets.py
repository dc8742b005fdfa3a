"""What the simulator knows about each market: price grid, lot size, typical price level and volatility.

Upbit and Binance round prices differently (Upbit KRW markets use a price-dependent tick table, Binance a fixed
tick per symbol); both grids live here so the trade model, the REST adapters and exchangeInfo agree.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from cryptoflow_core.settings import validate_binance_symbol, validate_upbit_market
from exchange_sim import universe

# Price level on 2025-09-01 (KRW) and daily log-volatility per base asset; close to the real levels so charts look sane.
_ASSETS: dict[str, tuple[str, str, float, float, float]] = {
    # base: (korean name, english name, KRW price, daily vol, median trade size)
    "BTC": ("비트코인", "Bitcoin", 150_000_000.0, 0.025, 0.01),
    "ETH": ("이더리움", "Ethereum", 6_100_000.0, 0.035, 0.15),
    "XRP": ("리플", "XRP", 3_900.0, 0.045, 300.0),
    "SOL": ("솔라나", "Solana", 280_000.0, 0.05, 3.0),
    "USDT": ("테더", "Tether", 1_390.0, 0.003, 500.0),
}

# Binance spot filters for the default symbols (tickSize, stepSize), as exchangeInfo reports them.
_BINANCE_FILTERS: dict[str, tuple[float, float]] = {
    "BTC": (0.01, 0.00001),
    "ETH": (0.01, 0.0001),
    "XRP": (0.0001, 0.1),
    "SOL": (0.01, 0.001),
}

# Upbit KRW price units: (lower bound, tick), checked from the top.
_UPBIT_KRW_TICKS = (
    (2_000_000.0, 1000.0),
    (1_000_000.0, 500.0),
    (500_000.0, 100.0),
    (100_000.0, 50.0),
    (10_000.0, 10.0),
    (1_000.0, 1.0),
    (100.0, 0.1),
    (10.0, 0.01),
    (1.0, 0.001),
    (0.0, 0.0001),
)

USD_KRW_MARKET = "KRW-USDT"


@dataclass(frozen=True)
class MarketSpec:
    exchange: str  # "upbit" | "binance"
    market: str  # "KRW-BTC" | "BTCUSDT"
    base: str
    quote: str
    korean_name: str
    english_name: str
    ref_price: float  # in the quote currency, on 2025-09-01
    daily_vol: float
    median_size: float
    lot: float  # volume step
    tick: float  # Binance fixed tick; 0 for Upbit (price-dependent table)
    key: int  # stable 32-bit id for seeding

    def round_price(self, price: np.ndarray) -> np.ndarray:
        """Put prices on the market's grid (the same rounding everywhere, so shocks and candles stay on it)."""
        if self.tick:
            decimals = _decimals(self.tick)
            return np.round(np.round(price / self.tick) * self.tick, decimals)
        ticks = upbit_ticks(price, self.quote)
        return np.round(np.round(price / ticks) * ticks, 4)

    def round_volume(self, volume: np.ndarray) -> np.ndarray:
        decimals = _decimals(self.lot)
        return np.maximum(np.round(np.round(volume / self.lot) * self.lot, decimals), self.lot)


def _decimals(step: float) -> int:
    text = f"{step:.10f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


_KRW_BOUNDS = np.array([bound for bound, _ in reversed(_UPBIT_KRW_TICKS)])  # ascending
_KRW_TICK_OF = np.array([tick for _, tick in reversed(_UPBIT_KRW_TICKS)])


def upbit_ticks(price: np.ndarray, quote: str = "KRW") -> np.ndarray:
    price = np.asarray(price, dtype=np.float64)
    if quote != "KRW":
        # BTC- and USDT- markets quote in small units; eight decimals is their finest grid.
        return np.full_like(price, 1e-8 if quote == "BTC" else 0.001)
    # the tick of the highest bound at or below the price (one search, not a pass per tier: streams call this often)
    return _KRW_TICK_OF[np.maximum(np.searchsorted(_KRW_BOUNDS, price, "right") - 1, 0)]


def _key(exchange: str, market: str) -> int:
    return zlib.crc32(f"{exchange}:{market}".encode())


def _asset(base: str) -> tuple[str, str, float, float, float]:
    if base in _ASSETS:
        return _ASSETS[base]
    kname, ename = universe.upbit_listing().get(f"KRW-{base}", (base, base.title()))
    usd = universe.usd_prices().get(base)
    # A listed asset sits near its approximate price; any other valid code still gets a stable, plausible level.
    level = usd * _ASSETS["USDT"][2] if usd else 10.0 ** (1 + zlib.crc32(base.encode()) % 5)
    return (kname, ename, level, 0.05, 1000.0 / level * 10)


def upbit_spec(market: str) -> MarketSpec:
    validate_upbit_market(market)
    quote, base = market.split("-", 1)
    kname, ename, krw, vol, size = _asset(base)
    ref = krw if quote == "KRW" else krw / _ASSETS["USDT"][2] if quote == "USDT" else krw / _ASSETS["BTC"][2]
    return MarketSpec("upbit", market, base, quote, kname, ename, ref, vol, size, 1e-8, 0.0, _key("upbit", market))


def binance_spec(symbol: str) -> MarketSpec:
    validate_binance_symbol(symbol)
    quote = next((q for q in ("USDT", "FDUSD", "USDC", "BTC", "ETH", "BNB") if symbol.endswith(q) and symbol != q), None)
    if quote is None:
        raise ValueError(f"cannot split Binance symbol {symbol!r} into base and quote asset")
    base = symbol[: -len(quote)]
    kname, ename, krw, vol, size = _asset(base)
    usd = krw / _ASSETS["USDT"][2]
    ref = usd if quote in ("USDT", "FDUSD", "USDC") else usd / (_ASSETS[quote][2] / _ASSETS["USDT"][2])
    tick, lot = _BINANCE_FILTERS.get(base, (None, None))
    if tick is None:
        tick = max(10.0 ** (np.floor(np.log10(ref)) - 4), 1e-8)  # Binance prints 8 decimals: no finer tick
        lot = 10.0 ** max(-5, min(0, -int(np.floor(np.log10(max(ref, 1e-9)))) + 0))
    return MarketSpec("binance", symbol, base, quote, kname, ename, ref, vol, size, lot, tick, _key("binance", symbol))


def spec_for(exchange: str, market: str) -> MarketSpec:
    if exchange == "upbit":
        return upbit_spec(market)
    if exchange == "binance":
        return binance_spec(market)
    raise ValueError(f"unknown exchange {exchange!r}: expected upbit or binance")
