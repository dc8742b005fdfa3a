"""End to end against the exchange simulator: real sidecar process, real WebSocket, real Dagster runs, real lake.

Stream for a few seconds, ingest, repair, and compare silver.trades with the simulator's ground truth for the window
the stream covered: zero lost, zero duplicated, every price, volume and side as the exchange sent it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest

from chaos.checks import END_MARGIN_MS, compare_trades
from cryptoflow_dagster import lake
from cryptoflow_dagster.defs.streaming.jobs import single_pass, streaming_ingest_job
from cryptoflow_dagster.defs.streaming.repair import gap_repair_job
from cryptoflow_dagster.resources import build_resources
from exchange_sim.testing import running_sim
from cryptoflow_core.heartbeat import read_heartbeat

UPBIT = ("KRW-BTC", "KRW-USDT")
BINANCE = ("BTCUSDT",)
MARKETS = [("upbit", m) for m in UPBIT] + [("binance", s) for s in BINANCE]


@pytest.fixture
def stream_env(settings, monkeypatch):
    """A simulator and the environment a sidecar needs to stream from it into this test's home."""

    def start(**sim_options):
        stack = running_sim(trade_rate=6, upbit_markets=list(UPBIT), binance_symbols=list(BINANCE), **sim_options)
        sim = stack.__enter__()
        started.append(stack)
        env = {**sim.env(), "CRYPTOFLOW_UPBIT_MARKETS": ",".join(UPBIT), "CRYPTOFLOW_BINANCE_SYMBOLS": ",".join(BINANCE)}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return sim

    started: list = []
    yield start
    for stack in started:
        stack.__exit__(None, None, None)


def sidecar(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streaming_sensor", *args], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stream_until(proc: subprocess.Popen, settings, messages: int, timeout_s: float = 60.0,
                 traded: tuple = (None, ()), min_trades: int = 1) -> None:
    """Let the sidecar run until its own heartbeat counted ``messages`` (time-based waits break on a loaded machine).

    ``traded=(sim, markets)`` also waits until the simulator made ``min_trades`` trades in every one of ``markets``
    while its exchange's stream was connected, inside what compare_trades will compare (it leaves the last
    END_MARGIN_MS out). Without it, a sidecar shard holding one Upbit market can stop inside one of Upbit's empty
    minutes (3 % of them) with no trade of that exchange to compare, and a test that asks for a few trades of a market
    to compare depends on how fast the machine reached ``messages``.
    """
    sim, markets = traded
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        beat = read_heartbeat(settings.heartbeat_path)
        if (beat and beat.get("pid") == proc.pid and beat["counters"]["messages"] >= messages
                and all(_trades_while_connected(sim, beat, exchange, market) >= min_trades
                        for exchange, market in markets)):
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    raise AssertionError(f"the sidecar did not receive {messages} messages, or {markets} had fewer than {min_trades} "
                         f"trades, in {timeout_s} s")


def _trades_while_connected(sim, beat: dict, exchange: str, market: str) -> int:
    since = (beat["streams"].get(exchange) or {}).get("connected_since")
    if since is None:
        return 0
    # a second after the connection opened: the subscription is in place by then
    start_ms = int(datetime.fromisoformat(since).timestamp() * 1000) + 1000
    return len(sim.ground_truth(market, start_ms, int(time.time() * 1000) - 1000 - END_MARGIN_MS, exchange=exchange))


def ingest(instance) -> None:
    assert streaming_ingest_job.execute_in_process(run_config=single_pass(), instance=instance, resources=build_resources()).success


def silver_rows(settings, exchange: str, market: str) -> list[tuple]:
    with lake.session(settings, read_only=True) as con:
        return con.execute(
            "SELECT trade_id, epoch_ms(ts), price, volume, side FROM silver.trades WHERE exchange = ? AND market = ? "
            "ORDER BY trade_id", [exchange, market]).fetchall()


def assert_matches_ground_truth(sim, settings, markets: list[tuple[str, str]]) -> dict[str, int]:
    """silver.trades equals the simulator's trades over the streamed window (chaos.checks.compare_trades): nothing
    lost, doubled, invented or altered. Returns how many trades each market had in the window (an empty Upbit minute
    can leave a market with none)."""
    with lake.session(settings, read_only=True) as con:
        entries = compare_trades(con, sim, markets)
    for name, e in entries.items():
        assert e["lost"] is not None, f"nothing streamed for {name.split(':')[0]}"
        assert e["duplicated"] == 0, f"{name}: {e['duplicated']} duplicated trades in silver"
        assert e["lost"] == 0, f"{name} lost {e['lost']} of {e['truth']} trades, e.g. {e['lost_ids']}"
        assert e["extra"] == 0, f"{name} has {e['extra']} trades the exchange never made"
        assert e["mismatched"] == 0, f"{name}: {e['mismatched']} trades differ from the exchange's values"
    return {name: e["truth"] for name, e in entries.items()}


def test_stream_then_stop_equals_ground_truth(stream_env, settings, dagster_instance):
    sim = stream_env()
    proc = sidecar()
    stream_until(proc, settings, 200)  # ~7 s at 3 markets x 6 trades/s (plus Upbit tickers)
    proc.send_signal(signal.SIGTERM)  # a clean stop flushes everything buffered
    _, err = proc.communicate(timeout=30)  # reaps it and closes its stderr pipe
    assert proc.returncode == 0, err

    beat = read_heartbeat(settings.heartbeat_path)
    assert {s["state"] for s in beat["streams"].values()} == {"stopped"}
    assert beat["counters"]["messages"] > 0 and beat["counters"]["files"] > 0 and beat["counters"]["malformed"] == 0

    ingest(dagster_instance)
    counted = assert_matches_ground_truth(sim, settings, MARKETS)
    # the comparison had trades to compare on both exchanges (the window leaves the last 2 s out, and Binance's
    # connection may open a second after Upbit's)
    assert sum(counted.values()) >= 30 and counted["binance:BTCUSDT"] >= 5
    with lake.session(settings, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM bronze.dead_letters").fetchone() == (0,)
        # every trade minute of every market is a bar, and the bars add up to silver
        assert con.execute(
            "SELECT (SELECT sum(trade_count) FROM gold.ohlcv_1m_from_trades) = (SELECT count(*) FROM silver.trades)"
        ).fetchone() == (True,)
        # a 24h row per market that traded (the simulator's Upbit markets have empty minutes, the same ones every run)
        streamed = con.execute("SELECT count(DISTINCT (exchange, market)) FROM silver.trades").fetchone()[0]
        assert streamed >= 2 and con.execute("SELECT count(*) FROM gold.market_stats_24h").fetchone() == (streamed,)


def test_faults_and_sigkill_then_repair_still_equal_ground_truth(stream_env, settings, dagster_instance):
    # The simulator counts messages per connection, and a connection lives 3 s (Binance ~18 messages, Upbit ~70): a
    # malformed frame every 15th message puts some in every connection (every 40th left the second sidecar's
    # connections without any whenever they were cut at exactly 3 s, and the malformed counter at 0: CI, once).
    sim = stream_env(faults={"ws_disconnect_every_s": 3, "ws_malformed_every": 15, "ws_duplicate_every": 9,
                             "ws_out_of_order_every": 13, "ws_schema_drift_after": 25})
    first = sidecar()
    stream_until(first, settings, 80)
    first.send_signal(signal.SIGKILL)  # no flush: what it buffered is lost, to be found as a gap and repaired
    first.communicate(timeout=10)
    time.sleep(2)  # downtime: trades happen that no sidecar sees
    second = sidecar()
    stream_until(second, settings, 150)  # long enough for the simulator's forced disconnects (every 3 s)
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err

    beat = read_heartbeat(settings.heartbeat_path)
    assert beat["counters"]["reconnects"] >= 1 and beat["counters"]["malformed"] >= 1

    instance = dagster_instance
    ingest(instance)
    result = gap_repair_job.execute_in_process(instance=instance, resources=build_resources())
    assert result.success
    assert_matches_ground_truth(sim, settings, MARKETS)

    with lake.session(settings, read_only=True) as con:
        dead = con.execute("SELECT error, raw FROM bronze.dead_letters").fetchall()
        assert dead and all(e.startswith("invalid JSON") for e, _ in dead)
        gaps = con.execute("SELECT exchange, kind, repaired_at IS NOT NULL, repaired_rows FROM ops.gaps").fetchall()
        assert {g[0] for g in gaps} == {"upbit", "binance"}
        assert all(g[2] for g in gaps), gaps  # every gap found was repaired
        assert sum(g[3] for g in gaps if g[0] == "binance") > 0 and sum(g[3] for g in gaps if g[0] == "upbit") > 0
        drifted = con.execute("SELECT count(*) FROM bronze.trades_raw WHERE raw_json LIKE '%sim_added_field%'").fetchone()[0]
        assert drifted > 0  # the new field is kept in raw_json and broke nothing
        assert con.execute("SELECT count(*) FROM bronze.trades_raw WHERE source = 'rest'").fetchone()[0] > 0

    # a second repair run finds nothing new and changes nothing
    before = {m: silver_rows(settings, *m) for m in MARKETS}
    assert gap_repair_job.execute_in_process(instance=instance, resources=build_resources()).success
    assert {m: silver_rows(settings, *m) for m in MARKETS} == before
