"""The streaming job and the sensor on hand-made landing files, with a real Dagster instance and a real DuckLake."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import dagster as dg
import pytest

from cryptoflow_dagster import lake
from cryptoflow_dagster.defs.streaming.jobs import single_pass, streaming_ingest_job
from cryptoflow_dagster.defs.streaming.repair import gap_repair_job
from cryptoflow_dagster.defs.gold.intraday import intraday_gold_assets
from cryptoflow_dagster.defs.silver.trades import trade_assets
from cryptoflow_dagster.definitions import defs as load_code_location
from cryptoflow_dagster.resources import build_resources
from streaming_sensor.batches import MicroBatcher
from cryptoflow_dagster.defs.streaming.sensors import STREAMING_JOB, landing_files_sensor

T0 = 1_785_395_040_000  # 2026-07-30 07:04:00 UTC, a minute start


def upbit(market: str, sid: int, ms: int, price: float, volume: float, side: str = "BID", **extra) -> bytes:
    msg = {"type": "trade", "code": market, "trade_timestamp": ms, "trade_price": price, "trade_volume": volume,
           "ask_bid": side, "sequential_id": sid, "stream_type": "REALTIME", **extra}
    return json.dumps(msg).encode()


def binance(symbol: str, tid: int, ms: int, price: str, qty: str, buyer_maker: bool = False) -> bytes:
    data = {"e": "trade", "E": ms, "s": symbol, "t": tid, "p": price, "q": qty, "T": ms, "m": buyer_maker, "M": True}
    return json.dumps({"stream": f"{symbol.lower()}@trade", "data": data}).encode()


def land(batcher: MicroBatcher, exchange: str, market, tid, ms, raw: bytes, error=None) -> None:
    batcher.add(exchange, "trade", market, tid, ms, int(time.time() * 1e6), "feedsession01", raw, error)


def fill_landing(settings) -> MicroBatcher:
    """Two flushes: duplicates across files, out-of-order ids, a new field, dead letters of every kind."""
    b = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
    land(b, "upbit", "KRW-BTC", 11, T0 + 1000, upbit("KRW-BTC", 11, T0 + 1000, 100_000_000.0, 0.5))
    land(b, "upbit", "KRW-BTC", 12, T0 + 2000, upbit("KRW-BTC", 12, T0 + 2000, 101_000_000.0, 0.25, "ASK"))
    land(b, "upbit", "KRW-USDT", 21, T0 + 1500, upbit("KRW-USDT", 21, T0 + 1500, 1400.0, 100.0))
    land(b, "binance", "BTCUSDT", 502, T0 + 2500, binance("BTCUSDT", 502, T0 + 2500, "70000.5", "0.002", True))
    land(b, "binance", "BTCUSDT", 501, T0 + 2400, binance("BTCUSDT", 501, T0 + 2400, "70000.0", "0.001"))  # out of order
    land(b, "upbit", None, None, None, b"\xff\xfe{not json", "invalid JSON: unexpected character")
    b.flush()
    land(b, "upbit", "KRW-BTC", 12, T0 + 2000, upbit("KRW-BTC", 12, T0 + 2000, 101_000_000.0, 0.25, "ASK"))  # duplicate
    land(b, "upbit", "KRW-BTC", 13, T0 + 61_000, upbit("KRW-BTC", 13, T0 + 61_000, 99_000_000.0, 1.0, brand_new={"a": 1}))
    land(b, "upbit", "KRW-DOGE", None, None, upbit("KRW-DOGE", 1, T0, 1.0, 1.0), "unsubscribed market 'KRW-DOGE'")
    # passed the sidecar's checks but silver cannot read a price: still a dead letter, not a crash
    land(b, "binance", "BTCUSDT", 503, T0 + 3000, json.dumps({"data": {"t": 503, "T": T0 + 3000}, "stream": "x"}).encode())
    b.flush()
    return b


def query(settings, sql: str):
    with lake.session(settings, read_only=True) as con:
        return con.execute(sql).fetchall()


def run_job(instance):
    result = streaming_ingest_job.execute_in_process(run_config=single_pass(), instance=instance, resources=build_resources())
    assert result.success
    return result


def test_streaming_job_lands_bronze_silver_gold_and_dead_letters_exactly_once(settings, dagster_instance):
    fill_landing(settings)
    instance = dagster_instance
    result = run_job(instance)
    materialized = {(e.asset_key.to_user_string(), e.partition) for e in result.get_asset_materialization_events()}
    assert ("silver/trades", "2026-07-30") in materialized and ("gold/kimchi_premium_1m", "2026-07-30") in materialized

    silver = query(settings, "SELECT exchange, market, trade_id, price, volume, side FROM silver.trades ORDER BY ALL")
    assert silver == [
        ("binance", "BTCUSDT", 501, 70000.0, 0.001, "buy"),
        ("binance", "BTCUSDT", 502, 70000.5, 0.002, "sell"),
        ("upbit", "KRW-BTC", 11, 100_000_000.0, 0.5, "buy"),
        ("upbit", "KRW-BTC", 12, 101_000_000.0, 0.25, "sell"),
        ("upbit", "KRW-BTC", 13, 99_000_000.0, 1.0, "buy"),
        ("upbit", "KRW-USDT", 21, 1400.0, 100.0, "buy"),
    ]
    assert query(settings, "SELECT count(*) FROM bronze.trades_raw") == [(7,)]  # bronze keeps the duplicate
    raw13 = query(settings, "SELECT raw_json FROM bronze.trades_raw WHERE trade_id = 13")[0][0]
    assert json.loads(raw13)["brand_new"] == {"a": 1}  # a new field is kept verbatim
    dead = query(settings, "SELECT raw, error FROM bronze.dead_letters ORDER BY error")
    assert [d[1] for d in dead] == ["invalid JSON: unexpected character", "unreadable price, volume or side",
                                    "unsubscribed market 'KRW-DOGE'"]
    assert dead[0][0] == b"\xff\xfe{not json"  # raw bytes exactly, even when not UTF-8

    bars = query(settings, "SELECT market, ts, open, high, low, close, volume, trade_count, vwap "
                           "FROM gold.ohlcv_1m_from_trades WHERE market = 'KRW-BTC' ORDER BY ts")
    minute = datetime.fromtimestamp(T0 / 1000, timezone.utc)
    assert bars[0][1] == minute and bars[0][2:8] == (100_000_000.0, 101_000_000.0, 100_000_000.0, 101_000_000.0, 0.75, 2)
    assert bars[0][8] == pytest.approx((100_000_000.0 * 0.5 + 101_000_000.0 * 0.25) / 0.75)
    assert len(bars) == 2
    stats = query(settings, "SELECT open_24h, last_price, high_24h, trade_count_24h, change_pct FROM gold.market_stats_24h "
                            "WHERE market = 'KRW-BTC'")
    assert stats == [(100_000_000.0, 99_000_000.0, 101_000_000.0, 3, pytest.approx(-1.0))]
    (premium,) = query(settings, "SELECT asset, upbit_krw, binance_usdt, usdt_krw, premium_pct FROM gold.kimchi_premium_1m "
                                 "WHERE ts = '2026-07-30 07:04:00+00'")
    assert premium[:4] == ("BTC", 101_000_000.0, 70000.5, 1400.0)
    assert premium[4] == pytest.approx((101_000_000.0 / (70000.5 * 1400.0) - 1) * 100)
    files = query(settings, "SELECT rows, dead_letters FROM ops.ingested_files ORDER BY file")
    assert sorted(files) == [(1, 1), (2, 0), (3, 1), (4, 1)]  # one file per exchange per flush

    run_job(instance)  # nothing pending: a second run changes nothing
    assert query(settings, "SELECT count(*) FROM bronze.trades_raw") == [(7,)]
    assert query(settings, "SELECT count(*) FROM silver.trades") == [(6,)]
    assert query(settings, "SELECT count(*) FROM bronze.dead_letters") == [(3,)]


def test_a_day_rebuild_restores_silver_and_gold_from_bronze(settings, dagster_instance):
    fill_landing(settings)
    instance = dagster_instance
    run_job(instance)
    before = query(settings, "SELECT * EXCLUDE (ingest_time) FROM silver.trades ORDER BY ALL")
    bars_before = query(settings, "SELECT * EXCLUDE (updated_at) FROM gold.ohlcv_1m_from_trades ORDER BY ALL")
    with lake.session(settings) as con:
        con.execute("DELETE FROM silver.trades WHERE trade_id = 12")
        con.execute("DELETE FROM gold.ohlcv_1m_from_trades")
    result = dg.materialize([trade_assets(settings)[1], intraday_gold_assets(settings)], partition_key="2026-07-30",
                            resources=build_resources(), instance=instance)
    assert result.success
    assert query(settings, "SELECT * EXCLUDE (ingest_time) FROM silver.trades ORDER BY ALL") == before
    assert query(settings, "SELECT * EXCLUDE (updated_at) FROM gold.ohlcv_1m_from_trades ORDER BY ALL") == bars_before


def test_sensor_requests_one_run_for_every_pending_file_and_waits_for_the_run_in_flight(settings, dagster_instance):
    defs = load_code_location()
    instance = dagster_instance
    ctx = dg.build_sensor_context(instance=instance, cursor=None, definitions=defs, resources=build_resources())
    assert isinstance(landing_files_sensor(ctx), dg.SkipReason)

    b = fill_landing(settings)
    newest = max(p.name for p in settings.landing_dir.rglob("*.parquet"))
    result = landing_files_sensor(dg.build_sensor_context(instance=instance, cursor=None, definitions=defs, resources=build_resources()))
    assert [r.run_key for r in result.run_requests] == [newest] and result.cursor == newest

    result = landing_files_sensor(dg.build_sensor_context(instance=instance, cursor=newest, definitions=defs, resources=build_resources()))
    assert isinstance(result, dg.SkipReason)  # nothing after the cursor

    land(b, "upbit", "KRW-BTC", 99, T0, upbit("KRW-BTC", 99, T0, 1.0, 1.0))
    b.flush()
    in_flight = instance.create_run_for_job(streaming_ingest_job)  # NOT_STARTED: counts as in flight
    result = landing_files_sensor(dg.build_sensor_context(instance=instance, cursor=newest, definitions=defs, resources=build_resources()))
    assert isinstance(result, dg.SkipReason) and "in flight" in result.skip_message
    instance.report_run_canceled(in_flight)
    repairing = instance.create_run_for_job(gap_repair_job)  # gap repair writes silver too: wait for it as well
    assert isinstance(landing_files_sensor(dg.build_sensor_context(instance=instance, cursor=newest, definitions=defs, resources=build_resources())),
                      dg.SkipReason)
    instance.report_run_canceled(repairing)
    result = landing_files_sensor(dg.build_sensor_context(instance=instance, cursor=newest, definitions=defs, resources=build_resources()))
    assert len(result.run_requests) == 1 and result.cursor > newest
    assert STREAMING_JOB == streaming_ingest_job.name

    # A run that ended after taking every file past the cursor (as a long-lived run does): no run for nothing, and the
    # cursor moves on
    run_job(instance)
    result = landing_files_sensor(dg.build_sensor_context(instance=instance, cursor=newest, definitions=defs, resources=build_resources()))
    assert result.run_requests == [] and "all ingested" in result.skip_reason.skip_message
    assert result.cursor > newest


KILLER = """
import sys
from cryptoflow_dagster import lake
from cryptoflow_core.settings import load_settings
from cryptoflow_dagster.streaming import ingest

ingest.CHUNK_FILES = int(sys.argv[1])
with lake.session() as con:
    lake.ensure_schema(con)
    print("ready", flush=True)
    ingest.ingest_pending(con, load_settings().landing_dir, "doomed")
"""


def test_a_run_killed_half_way_and_retried_neither_loses_nor_doubles(settings, dagster_instance):
    b = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
    n = 0
    for f in range(20):
        for _ in range(100):
            land(b, "binance", "BTCUSDT", n, T0 + n, binance("BTCUSDT", n, T0 + n, "70000.0", "0.001"))
            n += 1
        land(b, "binance", "BTCUSDT", n - 1, T0 + n - 1, binance("BTCUSDT", n - 1, T0 + n - 1, "70000.0", "0.001"))
        b.flush()
    with subprocess.Popen([sys.executable, "-c", KILLER, "3"], stdout=subprocess.PIPE, env=os.environ.copy()) as proc:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.6)  # somewhere inside the chunks' transactions
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    partial = query(settings, "SELECT count(*) FROM bronze.trades_raw")[0][0]
    files_done = query(settings, "SELECT count(*) FROM ops.ingested_files")[0][0]
    assert partial == files_done * 101  # whatever committed, committed whole: bronze rows match ingested files

    run_job(dagster_instance)
    assert query(settings, "SELECT count(*), count(DISTINCT trade_id) FROM silver.trades") == [(n, n)]
    assert query(settings, "SELECT count(*) FROM bronze.trades_raw") == [(20 * 101,)]
    assert query(settings, "SELECT count(*) FROM ops.ingested_files") == [(20,)]


def test_gap_repair_schedule_waits_for_a_streaming_run_in_flight(settings):
    from cryptoflow_dagster.defs.streaming.repair import gap_repair_schedule

    with dg.instance_for_test() as instance:  # a schedule context wants an instance it can reference
        assert isinstance(gap_repair_schedule(dg.build_schedule_context(instance=instance)), dg.RunRequest)
        streaming = instance.create_run_for_job(streaming_ingest_job)
        assert isinstance(gap_repair_schedule(dg.build_schedule_context(instance=instance)), dg.SkipReason)
        instance.report_run_canceled(streaming)
        assert isinstance(gap_repair_schedule(dg.build_schedule_context(instance=instance)), dg.RunRequest)


def test_a_stop_signal_is_told_apart_from_a_failure_however_it_surfaces():
    """The streaming op ends in order on a stop signal, also when it arrived mid-query and DuckDB wrapped it."""
    from cryptoflow_dagster.defs.streaming.jobs import _stop_signal

    try:
        try:
            raise dg.DagsterExecutionInterruptedError()
        except BaseException as interrupt:
            raise RuntimeError("Query interrupted") from interrupt
    except RuntimeError as wrapped:
        assert _stop_signal(wrapped)
    assert _stop_signal(KeyboardInterrupt())
    assert not _stop_signal(RuntimeError("Query interrupted"))  # without the signal behind it: a real failure
    assert not _stop_signal(ValueError("bad row"))
