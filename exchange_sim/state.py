"""The one object every route shares: configuration, the trade model, faults, limiters and the Slack store."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from exchange_sim import universe
from exchange_sim.config import SimConfig
from exchange_sim.faults import Faults
from exchange_sim.markets import MarketSpec
from exchange_sim.model import DAY_MS, MIN_MS, Model, ModelConfig
from exchange_sim.ratelimit import BinanceLimiter, UpbitLimiter
from exchange_sim.realdata import discover, load_all

log = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Counters:
    rest_requests: int = 0
    ws_connections: int = 0
    ws_messages: int = 0
    per_market_sent: dict[str, int] = field(default_factory=dict)


class Sim:
    def __init__(self, config: SimConfig):
        self.config = config
        started = now_ms()
        if config.history_start is not None:
            start = datetime(config.history_start.year, config.history_start.month, config.history_start.day, tzinfo=timezone.utc)
        else:
            start = datetime.fromtimestamp(started / 1000, timezone.utc) - timedelta(days=config.history_days)
        start_ms = int(start.timestamp() * 1000) // DAY_MS * DAY_MS
        real_paths = discover() if config.real_csv is None else config.real_csv
        self.model = Model(
            ModelConfig(
                seed=config.seed,
                history_start_ms=start_ms,
                live_epoch_ms=config.live_epoch_ms if config.live_epoch_ms is not None else started // MIN_MS * MIN_MS,
                history_per_minute=config.history_per_minute,
                live_rate=config.trade_rate,
                live_rates=universe.rates(config.upbit_markets, config.binance_symbols, config.total_trade_rate,
                                          config.min_trade_rate) if config.total_trade_rate > 0 else {},
                real=load_all(real_paths),
            )
        )
        self.started_ms = started
        self.faults = Faults()
        self.faults.update(config.faults)
        self.upbit_limiter = UpbitLimiter(config.upbit_rate_per_s, config.upbit_ban_after, config.upbit_ban_s)
        self.binance_limiter = BinanceLimiter(config.binance_weight_per_min, config.binance_ban_after, config.binance_ban_s)
        self.counters = Counters()
        self.slack_messages: list[dict[str, Any]] = []
        # the latest trade time any stream sent per market: a shock lands after it, so no sent trade changes price
        self.emitted_until: dict[tuple[str, str], int] = {}
        self.upbit = {m: self.model.spec("upbit", m) for m in config.upbit_markets}
        self.binance = {s: self.model.spec("binance", s) for s in config.binance_symbols}

    @property
    def history_start_ms(self) -> int:
        return self.model.config.history_start_ms

    def shock(self, exchange: str, market: str, pct: float) -> int:
        at = max(now_ms() + 1, self.emitted_until.get((exchange, market), 0) + 1)
        self.model.add_shock(exchange, market, at, pct)
        return at

    def spec_or_none(self, exchange: str, market: str) -> MarketSpec | None:
        return (self.upbit if exchange == "upbit" else self.binance).get(market)

    async def rest_faults(self) -> Response | None:
        """Slow, 429-burst and 5xx faults for exchange REST routes (never for /_sim or the Slack sink)."""
        f = self.faults
        self.counters.rest_requests += 1
        if f.rest_slow_ms:
            await asyncio.sleep(f.rest_slow_ms / 1000)
        if f.rest_429_burst > 0:
            f.rest_429_burst -= 1
            return PlainTextResponse("Too many API requests.", status_code=429, headers={"Retry-After": "1"})
        if f.rest_5xx_every and self.counters.rest_requests % f.rest_5xx_every == 0:
            return JSONResponse({"error": {"name": "server_error", "message": "simulated outage"}}, status_code=503)
        return None


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"
