"""Which markets the simulator lists (``ALL`` / ``TOP<n>``), what they are called, and how the trade rate splits.

Upbit: every KRW market of a real ``/v1/market/all`` response recorded on 2021-12-15 (105 KRW markets, names as Upbit
gave them; exchange_sim/recorded/PROVENANCE.md), plus any market the platform asks for that it lacks (KRW-USDT was
listed in 2023). Binance: 50 large USDT spot symbols, compiled by hand because no recorded ``ticker/24hr`` snapshot
was found (PROVENANCE.md says so); their approximate USD prices are from the same hand list.

Trade-rate shares: no recorded per-market 24 h volumes were found either, so the shares are a Zipf law (share of the
market at rank r ~ 1/r within its exchange) over the list order (Upbit: listing order, BTC and ETH first; Binance:
the hand list's order, largest first), documented as synthetic. ``rates()`` splits a total rate by these shares with a
floor so the thinnest market still trades.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

RECORDED = Path(__file__).resolve().parent / "recorded"
UPBIT_MARKET_ALL = RECORDED / "upbit" / "market_all_2021-12-15.json"

# (symbol, approximate USD price in 2025-09): hand-compiled, largest quote volume first (see the module docstring)
BINANCE_TOP: tuple[tuple[str, float], ...] = (
    ("BTCUSDT", 110_000.0), ("ETHUSDT", 4_300.0), ("SOLUSDT", 200.0), ("XRPUSDT", 2.8), ("DOGEUSDT", 0.22),
    ("BNBUSDT", 860.0), ("SUIUSDT", 3.4), ("ADAUSDT", 0.82), ("PEPEUSDT", 0.00001), ("TRXUSDT", 0.34),
    ("LINKUSDT", 23.0), ("AVAXUSDT", 24.0), ("LTCUSDT", 110.0), ("ENAUSDT", 0.7), ("WIFUSDT", 0.85),
    ("BCHUSDT", 560.0), ("AAVEUSDT", 310.0), ("DOTUSDT", 3.9), ("NEARUSDT", 2.5), ("UNIUSDT", 9.5),
    ("HBARUSDT", 0.23), ("XLMUSDT", 0.37), ("ARBUSDT", 0.5), ("TONUSDT", 3.2), ("SHIBUSDT", 0.000013),
    ("APTUSDT", 4.4), ("FETUSDT", 0.65), ("ICPUSDT", 4.8), ("OPUSDT", 0.72), ("FILUSDT", 2.4),
    ("ATOMUSDT", 4.5), ("ETCUSDT", 21.0), ("INJUSDT", 13.0), ("TIAUSDT", 1.6), ("SEIUSDT", 0.3),
    ("WLDUSDT", 1.2), ("RENDERUSDT", 3.6), ("CRVUSDT", 0.8), ("LDOUSDT", 1.2), ("ALGOUSDT", 0.24),
    ("VETUSDT", 0.024), ("STXUSDT", 0.65), ("GRTUSDT", 0.09), ("SANDUSDT", 0.28), ("CHZUSDT", 0.04),
    ("THETAUSDT", 0.8), ("EGLDUSDT", 15.0), ("AXSUSDT", 2.4), ("MANAUSDT", 0.3), ("FLOWUSDT", 0.38),
)


@functools.cache
def upbit_listing() -> dict[str, tuple[str, str]]:
    """KRW market -> (korean_name, english_name), in the recorded listing order."""
    rows = json.loads(UPBIT_MARKET_ALL.read_text(encoding="utf-8"))
    return {r["market"]: (r["korean_name"], r["english_name"]) for r in rows if r["market"].startswith("KRW-")}


def usd_prices() -> dict[str, float]:
    """Base asset -> approximate USD price, from the Binance hand list."""
    return {symbol.removesuffix("USDT"): price for symbol, price in BINANCE_TOP}


def resolve(exchange: str, wanted: tuple[str, ...]) -> tuple[str, ...]:
    """Expand ``ALL`` (every listed market) and ``TOP<n>`` (the first n) in a market list; explicit codes stay."""
    listed = list(upbit_listing()) if exchange == "upbit" else [s for s, _ in BINANCE_TOP]
    out: list[str] = []
    for item in wanted:
        key = item.strip().upper()
        if key == "ALL":
            out += listed
        elif key.startswith("TOP") and key[3:].isdigit():
            out += listed[: int(key[3:])]
        elif key:
            out.append(item.strip())
    return tuple(dict.fromkeys(out))


def weights(exchange: str, markets: tuple[str, ...]) -> dict[str, float]:
    """Zipf weight 1/rank per market within its exchange; markets not in the lists rank after them in given order."""
    listed = list(upbit_listing()) if exchange == "upbit" else [s for s, _ in BINANCE_TOP]
    order = {m: i for i, m in enumerate(listed)}
    ranked = sorted(markets, key=lambda m: (order.get(m, len(listed)), markets.index(m)))
    return {m: 1.0 / (rank + 1) for rank, m in enumerate(ranked)}


def rates(upbit: tuple[str, ...], binance: tuple[str, ...], total: float, floor: float) -> dict[str, float]:
    """"exchange:market" -> live trades/s: ``total`` split by the Zipf shares over both exchanges, at least ``floor``.

    The floor is added on top of the split, not taken from it, so the sum is ``total + floor x markets`` at most;
    with 250 markets and the default floor of 0.05/s that is 12.5/s beyond the total."""
    w = {f"upbit:{m}": v for m, v in weights("upbit", upbit).items()}
    w.update({f"binance:{s}": v for s, v in weights("binance", binance).items()})
    norm = sum(w.values()) or 1.0
    return {k: total * v / norm + floor for k, v in w.items()}
