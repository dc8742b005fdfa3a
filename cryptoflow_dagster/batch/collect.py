"""Fetch market-days of candles from their exchanges: the pages the bronze asset writes.

A run's (day, market) pairs go on one shared work queue (:func:`collect_days`): each worker takes the next pair as
soon as it is free, so the rate limiters always have requests waiting and no day waits for its slowest market before
the next day starts. Pages *within* a market-day stay sequential: each page's cursor comes from the one before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, TypeVar

import duckdb

from cryptoflow_dagster import lake
from cryptoflow_dagster.clients.binance import BinanceClient
from cryptoflow_dagster.clients.upbit import Page, UpbitClient
from cryptoflow_core import market_list
from cryptoflow_core.settings import Settings, validate_market

if TYPE_CHECKING:
    import polars as pl

INTERVALS = ("1m", "1d")
T = TypeVar("T")
_SKIPPED = object()  # what a worker returns for a pair it did not fetch because the queue had stopped


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
    configured = market_list.all_configured(settings)  # a selector (ALL, TOP50): the list the sidecar resolved
    if not wanted:
        return list(dict.fromkeys(configured))
    chosen = []
    for market in wanted:
        exchange = exchange_of(market)
        chosen.append((exchange, validate_market(exchange, market)))
    return list(dict.fromkeys(chosen))  # a market named twice is collected once


def fetch_candles(md: MarketDay, interval: str, upbit: UpbitClient, binance: BinanceClient) -> list[Page]:
    if md.exchange == "upbit":
        if interval == "1d":
            return [upbit.day_candle(md.market, md.start)]
        return list(upbit.candle_pages(md.market, interval, md.start, md.end))
    return list(binance.kline_pages(md.market, interval, md.start, md.end))


def collect_days(
    days: list[date],
    pairs: list[tuple[str, str]],
    fetch: Callable[[MarketDay], T],
    *,
    workers: int,
) -> Iterator[tuple[date, list[tuple[MarketDay, T]]]]:
    """``fetch`` every (day, market) on ``workers`` threads sharing one queue; yield each day once all its markets are in.

    Days are yielded as they complete (usually in order, since the queue is filled day by day), each with its
    market-days in ``pairs`` order, so the caller can write a whole day in one transaction while the workers go on
    fetching the next ones. The first error stops the queue (pairs not started are cancelled) and is raised here.
    """
    pairs = list(dict.fromkeys(pairs))
    pending: dict[date, dict[MarketDay, T]] = {day: {} for day in days}
    order = [MarketDay(ex, m, day) for day in days for ex, m in pairs]
    if not order:
        return
    stop = threading.Event()  # set by the first error (or an abandoned iteration): pairs not yet started are skipped

    def run(md: MarketDay):
        if stop.is_set():
            return _SKIPPED
        try:
            return fetch(md)
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="collect") as pool:
        futures: dict[Future, MarketDay] = {pool.submit(run, md): md for md in order}
        try:
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    md = futures.pop(future)
                    value = future.result()
                    if value is _SKIPPED:
                        continue  # the error that stopped the queue is raised from its own future
                    pending[md.day][md] = value
                    if len(pending[md.day]) == len(pairs):
                        got = pending.pop(md.day)
                        yield md.day, [(m, got[m]) for m in (MarketDay(ex, mk, md.day) for ex, mk in pairs)]
        finally:
            stop.set()
            for future in futures:
                future.cancel()


def replace_day(con: duckdb.DuckDBPyConnection, day: date, pairs: list[tuple[str, str]], frames: list[pl.DataFrame]) -> int:
    """Replace ``day``'s bronze candles of these (exchange, market) pairs with ``frames`` in one transaction.

    The day is the partition: a rebuild leaves either all of the run's markets for it or none, never a mix, and the
    other markets' rows of that day stay as they are. Returns the rows written.
    """
    import polars as pl  # on first use, not at import: loading the code location does not need it

    markets = " OR ".join(["(exchange = ? AND market = ?)"] * len(pairs))
    params = [day, *(value for pair in pairs for value in pair)]
    rows = pl.concat(frames, how="vertical") if frames else pl.DataFrame()
    return lake.replace_rows(con, "bronze.candles_raw", f"day = ? AND ({markets})", params, rows)
