"""End to end with the exchange simulator: real sidecar process, real streaming runs and sensors, the sim's Slack sink.

A price shock in the simulator becomes exactly one alert, found by the market alert sensor on the landed files before
any streaming run ingests them and delivered in the same tick (the shock persists over several micro-batches: the
cooldown holds the repeats); killing the sidecar gives one sidecar-down alert and restarting it one recovery.
"""

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import dagster as dg

from cryptoflow_dagster import lake
from cryptoflow_core.heartbeat import last_beat
from cryptoflow_dagster.resources import slack_resource
from cryptoflow_dagster.defs.alerts.sensors import alert_delivery_sensor, market_alert_sensor, sidecar_heartbeat_sensor
from cryptoflow_dagster.defs.streaming.jobs import single_pass, streaming_ingest_job
from cryptoflow_dagster.resources import LakeResource, build_resources
from cryptoflow_core.settings import load_settings
from exchange_sim.testing import running_sim


def sidecar() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streaming_sensor"], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ingest(instance: dg.DagsterInstance) -> None:
    assert streaming_ingest_job.execute_in_process(run_config=single_pass(), instance=instance, resources=build_resources()).success


def alert_rows(settings, rule: str) -> list[tuple]:
    with lake.session(settings, read_only=True) as con:
        return con.execute("SELECT exchange, market, value, status FROM gold.alerts WHERE rule = ? ORDER BY event_time",
                           [rule]).fetchall()


def wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def test_sim_price_shock_one_alert_and_sidecar_down_then_back(settings, monkeypatch, dagster_instance):
    instance = dagster_instance
    with running_sim(trade_rate=6, upbit_markets=["KRW-BTC"], binance_symbols=["BTCUSDT"]) as sim:
        env = {**sim.env(), "CRYPTOFLOW_UPBIT_MARKETS": "KRW-BTC", "CRYPTOFLOW_BINANCE_SYMBOLS": "BTCUSDT",
               "CRYPTOFLOW_HEARTBEAT_STALE_S": "3",
               "CRYPTOFLOW_ALERT_WATCH_S": "4"}  # the test is the daemon: short ticks, called in its own loop
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)  # no token: the sink still gets everything
        settings = load_settings()
        procs = [sidecar()]
        try:
            resources = {"lake": LakeResource(), "slack": slack_resource()}
            heartbeat_cursor = market_cursor = None

            def market_tick() -> None:
                nonlocal market_cursor
                ctx = dg.build_sensor_context(instance=instance, cursor=market_cursor, resources=resources)
                market_alert_sensor(ctx)
                market_cursor = ctx.cursor

            def heartbeat_tick() -> None:
                nonlocal heartbeat_cursor
                ctx = dg.build_sensor_context(instance=instance, cursor=heartbeat_cursor, resources=resources)
                sidecar_heartbeat_sensor(ctx)
                heartbeat_cursor = ctx.cursor

            def deliver() -> None:
                alert_delivery_sensor(dg.build_sensor_context(instance=instance, resources=resources))

            wait_for(lambda: last_beat(settings.heartbeat_path)[0] is not None)
            time.sleep(2)
            ingest(instance)  # the calm baseline, in silver
            market_tick()
            assert alert_rows(settings, "price_move") == []
            sim.shock("KRW-BTC", 8.0)

            def shock_alerted() -> bool:
                market_tick()  # the shock's files are landed, not ingested: the sensor alerts and delivers at once
                return bool(alert_rows(settings, "price_move"))

            # the next shocked trade, then its flush (slower under load); an empty Upbit minute can hold that trade
            # back for up to a minute or two
            wait_for(shock_alerted, timeout_s=150)
            (row,) = alert_rows(settings, "price_move")
            assert row[:2] == ("upbit", "KRW-BTC") and row[2] > 7.0 and row[3] == "sent"
            time.sleep(1.5)  # the shocked price stays: the next tick and a streaming run see it again
            ingest(instance)
            market_tick()
            assert len(alert_rows(settings, "price_move")) == 1

            heartbeat_tick()  # alive: nothing to say
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(10)
            time.sleep(3.5)
            heartbeat_tick()
            heartbeat_tick()  # still down: no second alert
            assert len(alert_rows(settings, "sidecar_down")) == 1
            procs.append(sidecar())
            started = datetime.now(timezone.utc)
            wait_for(lambda: (last_beat(settings.heartbeat_path)[0] or started) > started)
            heartbeat_tick()
            assert len(alert_rows(settings, "sidecar_recovered")) == 1
            deliver()
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        texts = [m["text"] for m in sim.slack_messages()]
    assert len([t for t in texts if "KRW-BTC moved +" in t]) == 1
    assert len([t for t in texts if t.startswith("Sidecar down")]) == 1
    assert len([t for t in texts if t.startswith("Sidecar back")]) == 1
