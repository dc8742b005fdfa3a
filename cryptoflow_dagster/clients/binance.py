"""Binance spot REST: klines, aggTrades and historical trades, paged as Binance pages (oldest first, startTime/fromId)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from cryptoflow_dagster.clients.http import ExchangeError, RestClient, split_json_array
from cryptoflow_dagster.clients.ratelimit import WeightLimiter
from cryptoflow_dagster.clients.upbit import Page
from cryptoflow_core.settings import validate_binance_symbol

KLINES_PAGE = 1000
TRADES_PAGE = 1000
# Request weights from Binance's docs; the limiter reserves them before sending.
WEIGHT = {"/api/v3/klines": 2, "/api/v3/aggTrades": 4, "/api/v3/historicalTrades": 25, "/api/v3/trades": 25}
INTERVAL_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000, "1d": 86_400_000}


def to_ms(ts: datetime) -> int:
    return int(ts.astimezone(timezone.utc).timestamp() * 1000)


class BinanceClient:
    def __init__(self, base_url: str, *, weight_per_minute: int = 6000, safety: float = 0.8, **http: Any) -> None:
        self.limiter = WeightLimiter(weight_per_minute, safety=safety)
        self.http = RestClient(base_url, name="binance", **http)

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, params: dict[str, Any]) -> Page:
        weight = WEIGHT.get(path, 1)
        reply = self.http.get_json(
            path,
            params,
            before=lambda: self.limiter.acquire(weight),
            after=lambda ticket, r: self.limiter.answered(
                ticket, r.status_code if r is not None else None, r.headers.get("X-MBX-USED-WEIGHT-1M") if r is not None else None
            ),
            on_429=self.limiter.block,
        )
        if not isinstance(reply.data, list):
            raise ExchangeError(f"binance GET {path} {params}: expected a JSON array, got {reply.text[:200]!r}")
        return Page(path, dict(params), reply.data, split_json_array(reply.text))

    def klines(
        self, symbol: str, interval: str, *, start_ms: int | None = None, end_ms: int | None = None, limit: int = KLINES_PAGE
    ) -> Page:
        validate_binance_symbol(symbol)
        if interval not in INTERVAL_MS:
            raise ValueError(f"unsupported kline interval {interval!r}: expected one of {sorted(INTERVAL_MS)}")
        params = {"symbol": symbol, "interval": interval, "startTime": start_ms, "endTime": end_ms, "limit": min(limit, KLINES_PAGE)}
        params = {k: v for k, v in params.items() if v is not None}
        return self.get("/api/v3/klines", params)

    def kline_pages(self, symbol: str, interval: str, start: datetime, end: datetime) -> Iterator[Page]:
        """Every page of klines opening in [start, end), walking ``startTime`` forward past the newest kline seen."""
        start_ms, end_ms = to_ms(start), to_ms(end) - 1
        while start_ms <= end_ms:
            page = self.klines(symbol, interval, start_ms=start_ms, end_ms=end_ms)
            if not page.items:
                return
            yield page
            last_open = max(int(k[0]) for k in page.items)
            if len(page.items) < page.params["limit"]:
                return
            start_ms = last_open + INTERVAL_MS[interval]

    def agg_trades(
        self,
        symbol: str,
        *,
        from_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = TRADES_PAGE,
    ) -> Page:
        validate_binance_symbol(symbol)
        params = {"symbol": symbol, "fromId": from_id, "startTime": start_ms, "endTime": end_ms, "limit": min(limit, TRADES_PAGE)}
        params = {k: v for k, v in params.items() if v is not None}
        return self.get("/api/v3/aggTrades", params)

    def historical_trades(self, symbol: str, *, from_id: int | None = None, limit: int = TRADES_PAGE) -> Page:
        """Trades from id ``from_id`` on (oldest first); ids are contiguous per symbol, so this is how an id gap is filled."""
        validate_binance_symbol(symbol)
        params = {"symbol": symbol, "fromId": from_id, "limit": min(limit, TRADES_PAGE)}
        params = {k: v for k, v in params.items() if v is not None}
        return self.get("/api/v3/historicalTrades", params)

    def trades_between_ids(self, symbol: str, first_id: int, last_id: int) -> Iterator[Page]:
        """Pages of historical trades covering ids first_id..last_id inclusive (gap repair)."""
        next_id = first_id
        while next_id <= last_id:
            page = self.historical_trades(symbol, from_id=next_id, limit=min(TRADES_PAGE, last_id - next_id + 1))
            if not page.items:
                return
            yield page.keep(lambda t: int(t["id"]) <= last_id)
            next_id = max(int(t["id"]) for t in page.items) + 1
