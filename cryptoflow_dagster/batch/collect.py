"""Fetch one market-day of candles from its exchange: the pages the bronze asset writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from cryptoflow_dagster.clients.binance import BinanceClient
from cryptoflow_dagster.clients.upbit import Page, UpbitClient
from cryptoflow_dagster.settings import Settings, validate_market

INTERVALS = ("1m", "1d")


@dataclass(frozen=True)
class MarketDay:
    exchange: str
    market: str
    day: date

    @property
    def start(self) -> datetime:
        return datetime(self.day.year, self.day.month, self.day.day, tzinfo=timezone.utc)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=1)


def exchange_of(market: str) -> str:
    """Upbit codes carry a quote prefix (``KRW-BTC``), Binance symbols do not (``BTCUSDT``)."""
    return "upbit" if "-" in market else "binance"


def select_markets(settings: Settings, wanted: list[str] | None) -> list[tuple[str, str]]:
    """(exchange, market) pairs to collect: all configured ones, or the validated subset a run asked for."""
    configured = [("upbit", m) for m in settings.upbit_markets] + [("binance", s) for s in settings.binance_symbols]
    if not wanted:
        return configured
    chosen = []
    for market in wanted:
        exchange = exchange_of(market)
        chosen.append((exchange, validate_market(exchange, market)))
    return chosen


def fetch_candles(md: MarketDay, interval: str, upbit: UpbitClient, binance: BinanceClient) -> list[Page]:
    if md.exchange == "upbit":
        if interval == "1d":
            return [upbit.day_candle(md.market, md.start)]
        return list(upbit.candle_pages(md.market, interval, md.start, md.end))
    return list(binance.kline_pages(md.market, interval, md.start, md.end))
