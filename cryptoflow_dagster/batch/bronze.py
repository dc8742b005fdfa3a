"""REST pages -> bronze rows (``bronze.candles_raw``, ``bronze.fear_greed_raw``), with the trace columns that make a load
replayable: the item verbatim, the request's parameters, when and by which run it was ingested."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime, timezone

import polars as pl

from cryptoflow_dagster.clients.binance import INTERVAL_MS
from cryptoflow_dagster.clients.fear_greed import entry_day
from cryptoflow_dagster.clients.upbit import Page, candle_start

CANDLES_RAW_SCHEMA = {
    "exchange": pl.String,
    "market": pl.String,
    "interval": pl.String,
    "candle_start": pl.Datetime("us", "UTC"),
    "raw_json": pl.String,
    "unique_key": pl.String,
    "ingest_time": pl.Datetime("us", "UTC"),
    "ingest_run_id": pl.String,
    "api_params_json": pl.String,
    "day": pl.Date,
}
FEAR_GREED_RAW_SCHEMA = {
    "day": pl.Date,
    "raw_json": pl.String,
    "ingest_time": pl.Datetime("us", "UTC"),
    "ingest_run_id": pl.String,
}


def unique_key(exchange: str, market: str, interval: str, start: datetime) -> str:
    return f"{exchange}:{market}:{interval}:{start.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def item_start(exchange: str, item: object) -> datetime:
    """Window start of a candle: Upbit's ``candle_date_time_utc``, Binance's open time (element 0, ms)."""
    if exchange == "upbit":
        return candle_start(item)  # type: ignore[arg-type]
    return datetime.fromtimestamp(int(item[0]) / 1000, tz=timezone.utc)  # type: ignore[index]


def candle_rows(
    exchange: str, market: str, interval: str, pages: Iterable[Page], *, run_id: str, ingest_time: datetime
) -> pl.DataFrame:
    rows = []
    for page in pages:
        params = json.dumps({"path": page.path, **page.params}, sort_keys=True)
        for item, raw in zip(page.items, page.raw):
            start = item_start(exchange, item)
            rows.append(
                {
                    "exchange": exchange,
                    "market": market,
                    "interval": interval,
                    "candle_start": start,
                    "raw_json": raw,
                    "unique_key": unique_key(exchange, market, interval, start),
                    "ingest_time": ingest_time,
                    "ingest_run_id": run_id,
                    "api_params_json": params,
                    "day": start.date(),
                }
            )
    return pl.DataFrame(rows, schema=CANDLES_RAW_SCHEMA)


def fear_greed_rows(page: Page, *, run_id: str, ingest_time: datetime) -> pl.DataFrame:
    rows = [
        {"day": entry_day(item), "raw_json": raw, "ingest_time": ingest_time, "ingest_run_id": run_id}
        for item, raw in zip(page.items, page.raw)
    ]
    return pl.DataFrame(rows, schema=FEAR_GREED_RAW_SCHEMA)


def expected_minutes(day: date, now: datetime | None = None) -> int:
    """Minutes of ``day`` that have ended by ``now`` (1440 for a past day): the most 1-minute candles it can have."""
    now = now or datetime.now(timezone.utc)
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    elapsed = int((now - start).total_seconds() // 60)
    return max(0, min(1440, elapsed))


__all__ = ["CANDLES_RAW_SCHEMA", "INTERVAL_MS", "candle_rows", "expected_minutes", "fear_greed_rows", "unique_key"]
