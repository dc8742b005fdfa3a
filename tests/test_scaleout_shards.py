"""Sharding the sidecar: two processes on disjoint market sets, one simulator, one landing folder, one lake.

Each shard keeps its own heartbeat (CRYPTOFLOW_SIDECAR_SHARD) and writes its own uniquely named files; one ingest run
takes both shards' files, and silver equals the simulator's ground truth for every market of both shards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


from cryptoflow_dagster import lake
from cryptoflow_core.settings import load_settings
from exchange_sim.testing import running_sim
from cryptoflow_core.heartbeat import read_heartbeat
from test_stream_e2e import assert_matches_ground_truth, ingest, stream_until

SHARDS = {"a": (("KRW-BTC",), ("BTCUSDT",)), "b": (("KRW-ETH",), ("ETHUSDT",))}


def shard_env(sim, name: str) -> dict[str, str]:
    upbit, binance = SHARDS[name]
    return {**os.environ, **sim.env(), "CRYPTOFLOW_SIDECAR_SHARD": name,
            "CRYPTOFLOW_UPBIT_MARKETS": ",".join(upbit), "CRYPTOFLOW_BINANCE_SYMBOLS": ",".join(binance)}


def shard_markets(name: str) -> list[tuple[str, str]]:
    upbit, binance = SHARDS[name]
    return [("upbit", m) for m in upbit] + [("binance", s) for s in binance]


def test_two_sidecar_shards_share_landing_and_lake_and_match_ground_truth(settings, dagster_instance):
    upbit = [m for u, _ in SHARDS.values() for m in u]
    binance = [s for _, b in SHARDS.values() for s in b]
    with running_sim(trade_rate=6, upbit_markets=upbit, binance_symbols=binance) as sim:
        envs = {name: shard_env(sim, name) for name in SHARDS}
        procs = {name: subprocess.Popen([sys.executable, "-m", "streaming_sensor"], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True) for name, env in envs.items()}
        try:
            for name, proc in procs.items():
                # each shard's one Upbit market can sit in an empty minute: wait for a trade of each market, and for
                # the 5 of each Binance symbol the comparison below asks for (a fast start once stopped at 4)
                stream_until(proc, load_settings(envs[name]), 60, timeout_s=150, traded=(sim, shard_markets(name)))
                stream_until(proc, load_settings(envs[name]), 60, timeout_s=150,
                             traded=(sim, [("binance", s) for s in SHARDS[name][1]]), min_trades=5)
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)  # a clean stop flushes what each shard buffered
            for proc in procs.values():
                assert proc.wait(30) == 0, proc.stderr.read()
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
                proc.stderr.close()

        # one heartbeat per shard, each naming only its own markets' streams, and one shared landing folder
        beats = {name: read_heartbeat(load_settings(env).heartbeat_path) for name, env in envs.items()}
        assert beats["a"]["pid"] == procs["a"].pid and beats["b"]["pid"] == procs["b"].pid
        assert not (settings.landing_dir / "_heartbeat.json").exists()
        writers = {p.name.split("-")[1] for p in settings.landing_dir.rglob("*.parquet")}
        assert len(writers) == 2

        ingest(dagster_instance)
        for name in SHARDS:  # each shard's connections have their own window
            counted = assert_matches_ground_truth(sim, settings, shard_markets(name))
            assert sum(counted.values()) >= 10 and all(counted[f"binance:{s}"] >= 5 for s in SHARDS[name][1])

    with lake.session(settings, read_only=True) as con:
        markets = {r[0] for r in con.execute("SELECT DISTINCT market FROM silver.trades").fetchall()}
        assert con.execute("SELECT count(*) FROM bronze.dead_letters").fetchone() == (0,)
    assert markets == set(upbit) | set(binance)  # every market of both shards traded while streamed, into one lake
