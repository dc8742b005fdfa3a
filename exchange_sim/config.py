"""Simulator options: defaults from ``cryptoflow_core.settings``, overridden by CLI flags (``python -m exchange_sim``)."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from cryptoflow_core.settings import load_settings, validate_binance_symbol, validate_upbit_market
from exchange_sim import universe
from exchange_sim.faults import Faults

# Real recorded market data shipped with the simulator (PROVENANCE.md there says where each file comes from).
RECORDED_DATA = Path(__file__).resolve().parent / "recorded"


@dataclass(frozen=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    seed: int = 42
    history_days: int = 120
    history_start: date | None = None  # overrides history_days (tests ask for 2025-09, where real data is)
    trade_rate: float = 3.0  # live trades per second per market (when total_trade_rate is 0)
    total_trade_rate: float = 0.0  # >0: live trades/s over all markets, split by volume share (universe.rates)
    min_trade_rate: float = 0.05  # with total_trade_rate: trades/s every market gets on top of its share
    history_per_minute: float = 20.0
    upbit_markets: tuple[str, ...] = ("KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-USDT")
    binance_symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT")
    real_csv: dict[str, Path] | None = None  # market -> CSV; None: the recorded files in exchange_sim/recorded/upbit
    fear_greed_csv: Path | None = None
    upbit_rate_per_s: int = 10  # per group, per client address
    upbit_ban_after: int = 10  # 429s in a row (each within 2 s of the last) before 418
    upbit_ban_s: float = 2.0  # first 418 ban; doubles on each repeat
    binance_weight_per_min: int = 6000
    binance_ban_after: int = 10
    binance_ban_s: float = 120.0
    ws_ping_interval_s: float = 20.0
    ws_idle_timeout_s: float = 120.0
    firehose: bool = False  # live streams send as fast as the client reads instead of at wall-clock pace
    live_epoch_ms: int | None = None  # default: server start
    faults: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for market in self.upbit_markets:
            validate_upbit_market(market)
        for symbol in self.binance_symbols:
            validate_binance_symbol(symbol)


def _bool(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def parse_args(argv: list[str] | None = None, env: dict[str, str] | None = None) -> SimConfig:
    env = dict(os.environ if env is None else env)
    settings = load_settings(env)
    p = argparse.ArgumentParser(prog="python -m exchange_sim", description="Offline Upbit/Binance/Fear&Greed/Slack simulator")
    p.add_argument("--host", default=settings.sim_host)
    p.add_argument("--port", type=int, default=settings.sim_port)
    p.add_argument("--seed", type=int, default=settings.sim_seed)
    p.add_argument("--history-days", type=int, default=settings.sim_history_days)
    p.add_argument("--history-start", type=date.fromisoformat, default=settings.sim_history_start or None,
                   help="first UTC day of history (YYYY-MM-DD); default: today minus --history-days")
    p.add_argument("--trade-rate", type=float, default=settings.sim_trade_rate, help="live trades/s per market")
    p.add_argument("--total-trade-rate", type=float, default=settings.sim_total_trade_rate,
                   help="live trades/s over all markets, split by volume share (0: --trade-rate per market)")
    p.add_argument("--min-trade-rate", type=float, default=settings.sim_min_trade_rate,
                   help="with --total-trade-rate: trades/s every market gets on top of its share")
    p.add_argument("--markets", default=settings.sim_markets,
                   help="ALL: also list every recorded market (Upbit KRW snapshot, 50 Binance USDT symbols)")
    p.add_argument("--history-per-minute", type=float, default=20.0, help="mean trades per minute before server start")
    p.add_argument("--upbit-markets", default=",".join(settings.upbit_markets),
                   help="comma-separated codes; ALL = every recorded KRW market, TOP<n> = the first n")
    p.add_argument("--binance-symbols", default=",".join(settings.binance_symbols),
                   help="comma-separated symbols; ALL / TOP50 = the recorded list, TOP<n> = its first n")
    p.add_argument("--real-csv", action="append", default=[], metavar="MARKET=PATH",
                   help="real 1-minute candles shaping a market's path (repeatable); default: exchange_sim/recorded/upbit/*_1m_*.csv")
    p.add_argument("--no-real-data", action="store_true", help="pure seeded model, no recorded candles")
    p.add_argument("--fear-greed-csv", type=Path, default=None)
    p.add_argument("--upbit-rate", type=int, default=10, help="Upbit requests/s per group")
    p.add_argument("--upbit-ban-after", type=int, default=10)
    p.add_argument("--upbit-ban-s", type=float, default=2.0)
    p.add_argument("--binance-weight", type=int, default=6000, help="Binance weight per minute")
    p.add_argument("--binance-ban-after", type=int, default=10)
    p.add_argument("--binance-ban-s", type=float, default=120.0)
    p.add_argument("--ws-ping-interval", type=float, default=20.0)
    p.add_argument("--ws-idle-timeout", type=float, default=120.0)
    p.add_argument("--firehose", action="store_true", default=_bool(settings.sim_firehose))
    p.add_argument("--live-epoch-ms", type=int, default=None)
    p.add_argument("--faults", default=settings.sim_faults, help="JSON object of fault switches (see exchange_sim/faults.py)")
    a = p.parse_args(argv)
    real: dict[str, Path] | None = None
    if a.no_real_data:
        real = {}
    elif a.real_csv:
        real = {}
        for item in a.real_csv:
            market, _, path = item.partition("=")
            if not path:
                p.error(f"--real-csv wants MARKET=PATH, got {item!r}")
            real[validate_upbit_market(market)] = Path(path)
    try:
        faults = json.loads(a.faults) if a.faults else {}
    except ValueError as exc:
        p.error(f"--faults / CRYPTOFLOW_SIM_FAULTS is not JSON: {exc}")
    if not isinstance(faults, dict):
        p.error("--faults must be a JSON object")
    try:
        Faults().update(faults)
    except ValueError as exc:
        p.error(str(exc))
    history_start = a.history_start
    if isinstance(history_start, str):  # argparse leaves a string default unconverted
        try:
            history_start = date.fromisoformat(history_start)
        except ValueError:
            p.error(f"CRYPTOFLOW_SIM_HISTORY_START={history_start!r} is not YYYY-MM-DD")
    if a.markets.strip().upper() not in ("", "ALL"):
        p.error(f"--markets / CRYPTOFLOW_SIM_MARKETS must be ALL or empty, got {a.markets!r}")
    listing = ("ALL",) if a.markets.strip().upper() == "ALL" else ()
    upbit = tuple(m.strip() for m in a.upbit_markets.split(",") if m.strip())
    binance = tuple(s.strip() for s in a.binance_symbols.split(",") if s.strip())
    upbit = universe.resolve("upbit", upbit + listing)
    binance = universe.resolve("binance", binance + listing)
    if a.total_trade_rate < 0 or a.min_trade_rate < 0:
        p.error("--total-trade-rate and --min-trade-rate must not be negative")
    try:
        config = SimConfig(
            host=a.host, port=a.port, seed=a.seed, history_days=a.history_days, history_start=history_start,
            trade_rate=a.trade_rate, total_trade_rate=a.total_trade_rate, min_trade_rate=a.min_trade_rate,
            history_per_minute=a.history_per_minute, upbit_markets=upbit, binance_symbols=binance,
            real_csv=real, fear_greed_csv=a.fear_greed_csv, upbit_rate_per_s=a.upbit_rate, upbit_ban_after=a.upbit_ban_after,
            upbit_ban_s=a.upbit_ban_s, binance_weight_per_min=a.binance_weight, binance_ban_after=a.binance_ban_after,
            binance_ban_s=a.binance_ban_s, ws_ping_interval_s=a.ws_ping_interval, ws_idle_timeout_s=a.ws_idle_timeout,
            firehose=a.firehose, live_epoch_ms=a.live_epoch_ms, faults=faults,
        )
    except ValueError as exc:  # a market code that is not one
        p.error(str(exc))
    return config
