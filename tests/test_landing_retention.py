"""Upbit tickers reach bronze exactly once, and landing retention deletes only files the lake already holds."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import dagster as dg

from cryptoflow_dagster import lake
from cryptoflow_dagster.defs.maintenance.landing_retention import landing_retention_job
from cryptoflow_dagster.defs.streaming.jobs import single_pass, streaming_ingest_job
from cryptoflow_dagster.maintenance.landing_retention import prune_landing
from cryptoflow_dagster.resources import build_resources
from cryptoflow_core import landing_files
from streaming_sensor.batches import MicroBatcher
from tests.test_stream_job import T0, binance, land, query


def ticker(market: str, ms: int, price: float) -> bytes:
    return json.dumps({"type": "ticker", "code": market, "trade_price": price, "acc_trade_volume_24h": 1234.5,
                       "timestamp": ms, "stream_type": "REALTIME"}).encode()


def ingest_once() -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        assert streaming_ingest_job.execute_in_process(run_config=single_pass(), instance=instance,
                                                       resources=build_resources()).success


def test_ticker_files_land_in_bronze_once_with_dead_letters(settings):
    b = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
    now_us = int(time.time() * 1e6)
    b.add("upbit", "ticker", "KRW-BTC", None, T0, now_us, "s1", ticker("KRW-BTC", T0, 100_000_000.0), None)
    b.add("upbit", "ticker", "KRW-ETH", None, T0 + 5, now_us, "s1", ticker("KRW-ETH", T0 + 5, 5_000_000.0), None)
    b.add("upbit", "ticker", None, None, None, now_us, "s1", b"\x00{broken", "invalid JSON: unexpected character")
    land(b, "binance", "BTCUSDT", 1, T0, binance("BTCUSDT", 1, T0, "70000.0", "0.001"))
    b.flush()
    ingest_once()
    ingest_once()  # nothing new: nothing doubled
    rows = query(settings, "SELECT market, event_time, json_extract(raw_json, '$.acc_trade_volume_24h')::DOUBLE "
                           "FROM bronze.tickers_raw ORDER BY market")
    assert [(r[0], r[2]) for r in rows] == [("KRW-BTC", 1234.5), ("KRW-ETH", 1234.5)]
    assert rows[0][1] == datetime.fromtimestamp(T0 / 1000, timezone.utc)
    assert query(settings, "SELECT raw, error FROM bronze.dead_letters") == [(b"\x00{broken", "invalid JSON: unexpected character")]
    ledger = query(settings, "SELECT file, rows, dead_letters FROM ops.ingested_files ORDER BY file")
    assert [(f.split("/")[1], r, d) for f, r, d in ledger] == [("trade", 1, 0), ("ticker", 3, 1)]
    assert query(settings, "SELECT count(*) FROM silver.trades") == [(1,)]


def test_retention_deletes_ingested_old_files_and_keeps_the_rest(settings):
    b = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
    for i in range(3):
        land(b, "binance", "BTCUSDT", i, T0 + i, binance("BTCUSDT", i, T0 + i, "70000.0", "0.001"))
        b.flush()
    ingest_once()
    land(b, "binance", "BTCUSDT", 3, T0 + 3, binance("BTCUSDT", 3, T0 + 3, "70000.0", "0.001"))
    b.flush()  # landed after the run: not in the lake
    files = landing_files.list_files(settings.landing_dir)
    assert len(files) == 4
    with lake.session(settings) as con:
        # a cut-off before every file: nothing is old enough
        assert prune_landing(con, settings.landing_dir, datetime.now(timezone.utc) - timedelta(days=1)).deleted_files == 0
        report = prune_landing(con, settings.landing_dir, datetime.now(timezone.utc) + timedelta(hours=1))
    assert (report.deleted_files, report.kept_not_ingested) == (3, 1)
    assert report.deleted_bytes > 0
    assert [f.name for f in landing_files.list_files(settings.landing_dir)] == [files[-1].name]  # the un-ingested one stays
    ingest_once()  # and it still makes it into the lake
    assert query(settings, "SELECT count(*) FROM silver.trades") == [(4,)]


def test_retention_job_keeps_everything_younger_than_the_setting(settings, monkeypatch, dagster_instance):
    b = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
    land(b, "binance", "BTCUSDT", 1, T0, binance("BTCUSDT", 1, T0, "70000.0", "0.001"))
    b.flush()
    ingest_once()
    monkeypatch.setenv("CRYPTOFLOW_LANDING_RETENTION_DAYS", "7")
    result = landing_retention_job.execute_in_process(instance=dagster_instance, resources=build_resources())
    assert result.success
    assert len(landing_files.list_files(settings.landing_dir)) == 1  # a minute-old file is kept for a week
