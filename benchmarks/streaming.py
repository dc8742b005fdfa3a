"""The near-real-time path, measured: sidecar throughput and event -> silver / gold latency.

``python -m benchmarks.streaming hotpath``  parse + buffer + Parquet flush of real recorded frames, in process (no network)
``python -m benchmarks.streaming firehose`` the real sidecar process against the simulator in firehose mode: msg/s, CPU
``python -m benchmarks.streaming latency``  sidecar at ~1,000 msg/s + back-to-back streaming runs on a real Dagster instance:
                                            p50/p95 of (run finished - trade time) for silver.trades (gold is written in the
                                            same transaction, so it is visible at the same moment)
Add ``--out FILE`` to write the figures as JSON. Targets (issue 4): >= 50,000 msg/s on <= 1 core; p95 <= 10 s to silver,
<= 15 s to gold.market_stats_24h. docs/decisions/0004-streaming-gold.md records what was measured.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def recorded_binance_frames() -> list[bytes]:
    with (SHARED / "binance" / "ws_trades_TRXUSDT_spot_2025-03-04.csv").open() as fh:
        return [
            orjson.dumps({"stream": r["Stream"], "data": {
                "e": "trade", "E": int(r["EventTime"]) // 1000, "s": r["Symbol"], "t": int(r["TradeId"]), "p": r["Price"],
                "q": r["Quantity"], "T": int(r["TransactionTime"]) // 1000, "m": r["IsBuyerMarketMaker"] == "1", "M": True}})
            for r in csv.DictReader(fh)
        ]


def hotpath(n: int = 500_000) -> dict:
    from streaming_sensor.batches import MicroBatcher
    from streaming_sensor.feeds import BinanceFeed

    frames = recorded_binance_frames()
    feed = BinanceFeed("ws://unused", ("TRXUSDT",))
    with tempfile.TemporaryDirectory() as tmp:
        batcher = MicroBatcher(Path(tmp) / "landing", "0123456789abcdef", Path(tmp) / "spill")
        parse_s = add_s = flush_s = 0.0
        done = 0
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        while done < n:
            t0 = time.perf_counter()
            parsed = [feed.parse(f) for f in frames]
            t1 = time.perf_counter()
            now_us = time.time_ns() // 1000
            for f, p in zip(frames, parsed):
                batcher.add("binance", "trade", p.market, p.trade_id, p.event_ms, now_us, "s", f, p.error)
            t2 = time.perf_counter()
            batcher.flush()
            t3 = time.perf_counter()
            parse_s, add_s, flush_s = parse_s + t1 - t0, add_s + t2 - t1, flush_s + t3 - t2
            done += len(frames)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
    return {"messages": done, "msg_per_s": done / wall, "cpu_core_share": cpu / wall,
            "us_per_msg": {"parse": 1e6 * parse_s / done, "buffer": 1e6 * add_s / done, "parquet_flush": 1e6 * flush_s / done}}


def _sidecar(env: dict, *args: str) -> subprocess.Popen:
    log = open(Path(env["CRYPTOFLOW_HOME"]) / "sidecar.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "streaming_sensor", *args], env=env, stdout=log, stderr=log)


def firehose(seconds: float = 10.0) -> dict:
    from exchange_sim.testing import running_sim

    with tempfile.TemporaryDirectory() as home, running_sim(firehose=True, binance_symbols=["BTCUSDT", "ETHUSDT"],
                                                            upbit_markets=["KRW-BTC"]) as sim:
        env = {**os.environ, **sim.env(), "CRYPTOFLOW_HOME": home, "CRYPTOFLOW_BINANCE_SYMBOLS": "BTCUSDT,ETHUSDT",
               "CRYPTOFLOW_UPBIT_MARKETS": "KRW-BTC"}
        proc = _sidecar(env, "--exchange", "binance", "--duration", str(seconds))
        _, status, usage = os.wait4(proc.pid, 0)
        beat = json.loads((Path(home) / "landing" / "_heartbeat.json").read_text())
    messages = beat["counters"]["messages"]
    return {"seconds": seconds, "messages": messages, "msg_per_s": messages / seconds, "files": beat["counters"]["files"],
            "cpu_core_share": (usage.ru_utime + usage.ru_stime) / seconds, "exit_status": status}


def latency(seconds: float = 60.0, rate: float = 10.0) -> dict:
    """9 markets x ``rate`` trades/s. The simulator generates a whole market-day per block, so its live rate cannot go
    near 111/s per market (1,000 msg/s in all) on a small machine; the per-run lake work grows slowly with batch size
    (see ``hotpath`` and the ingest figures in ADR 0004), the run start-up does not grow at all."""
    import dagster as dg

    from exchange_sim.testing import running_sim

    with tempfile.TemporaryDirectory() as home, running_sim(trade_rate=rate) as sim:
        os.environ.update({**sim.env(), "CRYPTOFLOW_HOME": home, "DAGSTER_HOME": home})
        for key in ("CRYPTOFLOW_UPBIT_MARKETS", "CRYPTOFLOW_BINANCE_SYMBOLS"):
            os.environ.pop(key, None)  # the defaults: 5 Upbit + 4 Binance markets, as the simulator serves
        from cryptoflow_dagster import lake
        from cryptoflow_dagster.defs.streaming.jobs import single_pass, streaming_ingest_job
        from cryptoflow_dagster.resources import build_resources
        from cryptoflow_dagster.settings import load_settings

        proc = _sidecar(dict(os.environ))
        instance = dg.DagsterInstance.local_temp(home)
        lags: list[float] = []
        runs: list[float] = []
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                t0 = time.monotonic()
                result = streaming_ingest_job.execute_in_process(run_config=single_pass(), instance=instance, resources=build_resources())
                done = time.time()
                runs.append(time.monotonic() - t0)
                with lake.session(load_settings(), read_only=True) as con:
                    lags += [done - r[0] for r in con.execute(
                        "SELECT epoch_ms(ts) / 1000.0 FROM silver.trades WHERE trade_id IN (SELECT trade_id FROM "
                        "bronze.trades_raw WHERE ingest_run_id = ?)", [result.run_id]).fetchall()]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            sidecar_log = (Path(home) / "sidecar.log").read_text()[-2000:]
            if not lags:
                print(sidecar_log, file=sys.stderr)
    lags.sort()
    runs.sort()

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    return {"seconds": seconds, "trades": len(lags), "msg_per_s": len(lags) / seconds,
            "event_to_silver_s": {"p50": pct(lags, 0.5), "p95": pct(lags, 0.95), "max": lags[-1] if lags else None},
            "run_s": {"p50": pct(runs, 0.5), "p95": pct(runs, 0.95), "runs": len(runs)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streaming")
    parser.add_argument("what", choices=["hotpath", "firehose", "latency"])
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--rate", type=float, default=10.0, help="latency: simulator trades/s per market")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.what == "hotpath":
        figures = hotpath()
    elif args.what == "firehose":
        figures = firehose(args.seconds or 10.0)
    else:
        figures = latency(args.seconds or 60.0, args.rate)
    text = json.dumps({args.what: figures}, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
