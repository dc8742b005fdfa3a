"""A lake for the API tests, filled through the platform's own writers: trades into silver.trades with lake.write /
lake.insert, intraday gold (1-minute bars, 24-hour stats, Korean premium) by the streaming job's own
``intraday_gold.refresh``, alerts by the outbox's ``record``. Trades are generated from a seed (a random walk per
market), so a test can compute what the API should answer from the same trades, independently."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import polars as pl

from cryptoflow_dagster import lake
from cryptoflow_dagster.streaming import intraday_gold

DAY = datetime(2025, 9, 1, tzinfo=timezone.utc)
MARKETS = (("upbit", "KRW-BTC", 160_000_000.0), ("upbit", "KRW-USDT", 1_390.0), ("binance", "BTCUSDT", 115_000.0))


def trades(exchange: str, market: str, start: datetime, count: int, every_s: float, price: float, seed: int,
           first_id: int = 1) -> pl.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        price *= 1 + rng.gauss(0, 0.0005)
        volume = round(rng.uniform(0.001, 0.5), 6)
        rows.append((exchange, market, first_id + i, start + timedelta(seconds=i * every_s), price, volume,
                     rng.choice(("buy", "sell"))))
    frame = pl.DataFrame(rows, schema={"exchange": pl.String, "market": pl.String, "trade_id": pl.Int64,
                                       "ts": pl.Datetime("us", "UTC"), "price": pl.Float64, "volume": pl.Float64,
                                       "side": pl.String}, orient="row")
    return frame.with_columns(quote_volume=pl.col("price") * pl.col("volume"), day=pl.col("ts").dt.date())


def commit(con, frame: pl.DataFrame, *, gold: bool = True) -> None:
    """One lake commit: the trades into silver and, with ``gold``, the intraday gold of the minutes they touch."""
    now = datetime.now(timezone.utc)
    frame = frame.with_columns(ingest_time=pl.lit(now, pl.Datetime("us", "UTC")))
    ranges = frame.group_by("exchange", "market").agg(
        lo=pl.col("ts").min().dt.truncate("1m"), hi=pl.col("ts").max().dt.truncate("1m"))

    def work(c):
        lake.insert(c, "silver.trades", frame)
        if gold:
            c.register(intraday_gold.RANGES, ranges)
            try:
                intraday_gold.refresh(c, now)
            finally:
                c.unregister(intraday_gold.RANGES)

    lake.write(con, work)


def fill_day(settings) -> pl.DataFrame:
    """A UTC day (DAY) of trades every 30 s for each of MARKETS (2,880 each), committed in 4 pieces; returns them."""
    frames = [trades(ex, m, DAY, 2880, 30.0, price, seed=i) for i, (ex, m, price) in enumerate(MARKETS)]
    everything = pl.concat(frames)
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        for part in range(4):
            lo, hi = DAY + timedelta(hours=6 * part), DAY + timedelta(hours=6 * (part + 1))
            commit(con, everything.filter((pl.col("ts") >= lo) & (pl.col("ts") < hi)))
    return everything
