"""Sidecar ingest: the real sidecar process (``python -m streaming_sensor``) on the simulator's firehose into durable
Parquet landing files, beside a bare websockets receive loop (the floor), the bare loop writing every frame durably
(the durable floor) and a naive stdlib-json, write-per-message client on the same stream (see ``ingest_clients``).
Rounds interleave the clients so a change in machine load hits all.

Sidecar figures are taken from outside: its heartbeat (message counter, rewritten every second) and /proc (CPU, RSS),
over the steady window from its first counted message to its last heartbeat, so imports and connect are left out
exactly as the baselines leave them out. After it stops, the landing files are read back: every counted message
must be in a Parquet file (durable), or the round fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from benchmarks.common import REPO, Result, proc_cpu_s, proc_rss_mib, python_child, run_json_child
from exchange_sim.testing import running_sim
from streaming_sensor.feeds import BinanceFeed
from cryptoflow_core.landing_files import list_files

SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT")


def _landed_rows(landing: Path, channels: tuple[str, ...] = ("trade",)) -> int:
    return sum(pq.ParquetFile(f.path).metadata.num_rows for f in list_files(landing, channels=channels))


# The sidecar as it was before the Upbit patterns (issue 17): every Upbit frame through ``UpbitFeed.parse``.
PER_FRAME = ("import sys; from streaming_sensor import feeds; "
             "feeds.UpbitFeed.trade_pattern = feeds.UpbitFeed.ticker_pattern = None; "
             "from streaming_sensor.sidecar import main; sys.exit(main(sys.argv[1:]))")


def run_sidecar(env: dict[str, str], home: Path, seconds: float, cpu: int | None = None, exchange: str = "binance",
                per_frame: bool = False) -> dict:
    """One sidecar run on one exchange's stream; steady-window rate, CPU share and RSS samples.

    ``cpu``: pin the sidecar to that one core (set right after the spawn, while the interpreter is still starting, so
    every thread it later starts inherits it): the direct measurement of "at most one core". ``per_frame``: the Upbit
    path before its patterns (the baseline)."""
    beat_path = home / "landing" / "_heartbeat.json"
    home.mkdir(parents=True, exist_ok=True)
    args = ("--exchange", exchange, "--duration", str(seconds + 3))
    child_env = {**env, "CRYPTOFLOW_HOME": str(home)}
    if per_frame:
        log = open(home / "sidecar.log", "ab")
        proc = subprocess.Popen([sys.executable, "-c", PER_FRAME, *args], env=child_env, cwd=REPO, stdout=log, stderr=log)
        log.close()  # the child holds its own copy
    else:
        proc = python_child("streaming_sensor", *args, env=child_env, log=home / "sidecar.log")
    if cpu is not None:
        os.sched_setaffinity(proc.pid, {cpu})
    samples: list[tuple[float, int, float, float]] = []  # (time, messages, cpu_s, rss_mib) at each new heartbeat
    last_update = None
    ended: tuple[float, float] | None = None  # (time, CPU s) when it exited (wait4's rusage)
    try:
        while ended is None:
            pid, _, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                ended = (time.monotonic(), usage.ru_utime + usage.ru_stime)
                break
            time.sleep(0.2)
            try:
                beat = orjson.loads(beat_path.read_bytes())
                cpu, rss = proc_cpu_s(proc.pid), proc_rss_mib(proc.pid)
            except (FileNotFoundError, ProcessLookupError, orjson.JSONDecodeError):
                continue
            if beat["updated_at"] == last_update or beat["streams"].get(exchange, {}).get("state") != "connected":
                continue
            last_update = beat["updated_at"]
            if beat["counters"]["messages"] > 0:
                samples.append((time.monotonic(), beat["counters"]["messages"], cpu, rss))
    finally:
        if ended is None:
            proc.kill()
            proc.wait()
    if exchange == "upbit" and samples:
        # Upbit frames are bigger and come with tickers: under the firehose the sidecar flushes (and counts) rarely,
        # so the window runs from the first counted heartbeat to the process's exit (its last flush included).
        total = orjson.loads(beat_path.read_bytes())["counters"]["messages"]
        landed = _landed_rows(home / "landing", ("trade", "ticker"))
        if landed != total:
            raise RuntimeError(f"sidecar counted {total} messages but landed {landed} rows")
        first = samples[0]
        return {"messages": total - first[1], "seconds": ended[0] - first[0], "cpu_s": ended[1] - first[2],
                "total_messages": total, "landed_rows": landed, "rss_mib_max": max(s[3] for s in samples)}
    if len(samples) < 3:
        raise RuntimeError(f"sidecar produced too few heartbeats: {(home / 'sidecar.log').read_text()[-2000:]}")
    first, last = samples[0], samples[-1]
    wall = last[0] - first[0]
    total = orjson.loads(beat_path.read_bytes())["counters"]["messages"]
    landed = _landed_rows(home / "landing", ("trade",) if exchange == "binance" else ("trade", "ticker"))
    if landed != total:
        raise RuntimeError(f"sidecar counted {total} messages but landed {landed} rows")
    rss = [s[3] for s in samples]
    return {"messages": last[1] - first[1], "seconds": wall, "cpu_s": last[2] - first[2], "total_messages": total,
            "landed_rows": landed, "rss_mib_first": rss[0], "rss_mib_max": max(rss), "rss_mib_last": rss[-1],
            "rss_mib": [round(r, 1) for r in rss]}


def run(quick: bool, runs: int) -> Result:
    seconds = 8.0 if quick else 20.0
    result = Result("sidecar_ingest", f"{runs} rounds x {seconds:.0f} s per client, Binance combined stream of "
                                      f"{len(SYMBOLS)} symbols, simulator firehose")
    rows: dict[str, list[dict]] = {"bare": [], "durable": [], "naive": [], "sidecar": [], "sidecar_one_core": []}
    with running_sim(firehose=True, binance_symbols=list(SYMBOLS), history_days=2) as sim, \
            tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        env = {**os.environ, **sim.env(), "CRYPTOFLOW_BINANCE_SYMBOLS": ",".join(SYMBOLS)}
        url = BinanceFeed(sim.binance_ws_url, SYMBOLS).url()  # the sidecar's own subscription URL
        for i in range(runs):
            rows["bare"].append(run_json_child("benchmarks.ingest_clients", "bare", url, str(seconds), env=env))
            rows["durable"].append(run_json_child("benchmarks.ingest_clients", "durable", url, str(seconds),
                                                  str(Path(tmp) / f"durable-{i}"), env=env))
            naive_dir = Path(tmp) / f"naive-{i}"
            rows["naive"].append(run_json_child("benchmarks.ingest_clients", "naive", url, str(seconds), str(naive_dir),
                                                env=env))
            rows["sidecar"].append(run_sidecar(env, Path(tmp) / f"sidecar-{i}", seconds))
            rows["sidecar_one_core"].append(run_sidecar(env, Path(tmp) / f"sidecar-pinned-{i}", seconds, cpu=0))
    rate = {k: [r["messages"] / r["seconds"] for r in v] for k, v in rows.items()}
    cpu_per_m = {k: [1e6 * r["cpu_s"] / r["messages"] for r in v] for k, v in rows.items()}
    cores = {k: [r["cpu_s"] / r["seconds"] for r in v] for k, v in rows.items()}
    ratio = [s / b for s, b in zip(rate["sidecar"], rate["bare"])]
    result.add("sidecar messages/s", "msg/s", rate["sidecar"], (">=", 50_000), "bare loop, naive json")
    result.add("bare websockets loop messages/s (floor)", "msg/s", rate["bare"])
    result.add("naive json + write per message messages/s", "msg/s", rate["naive"])
    result.add("sidecar / bare loop (same round)", "ratio", ratio, (">=", 0.80), "bare loop")
    result.add("floor: durable loop messages/s", "msg/s", rate["durable"], None, None,
               "the bare loop + (frame, receive time) kept and written as atomic Parquet files from a thread, no verdicts")
    result.add("floor: durable loop / bare loop (same round)", "ratio",
               [d / b for d, b in zip(rate["durable"], rate["bare"])], None, "bare loop",
               "what writing every frame durably costs before any parsing")
    result.add("sidecar / durable loop (same round)", "ratio",
               [s / d for s, d in zip(rate["sidecar"], rate["durable"])], None, "durable loop",
               "what the sidecar's verdicts, heartbeat and routing cost")
    result.add("durable loop CPU s per million messages", "cpu-s/M", cpu_per_m["durable"])
    result.add("sidecar CPU s per million messages", "cpu-s/M", cpu_per_m["sidecar"], None, "bare, naive")
    result.add("bare loop CPU s per million messages", "cpu-s/M", cpu_per_m["bare"])
    result.add("naive CPU s per million messages", "cpu-s/M", cpu_per_m["naive"])
    result.add("sidecar cores used (unpinned, taking all the firehose gives)", "cores", cores["sidecar"])
    result.add("sidecar messages/s pinned to one core", "msg/s", rate["sidecar_one_core"], (">=", 50_000), None,
               "sched_setaffinity to core 0: at most one core by construction")
    result.add("sidecar cores used, pinned to one core", "cores", cores["sidecar_one_core"], ("<=", 1.0))
    # Buffers and pyarrow's pools fill in the first two seconds; after that the resident size must stay flat.
    result.add("sidecar RSS growth after 2 s warm-up", "MiB",
               [r["rss_mib"][-1] - r["rss_mib"][min(2, len(r["rss_mib"]) - 1)] for r in rows["sidecar"]], None, None,
               "last heartbeat's RSS minus the third's")
    result.add("sidecar RSS, steady", "MiB", [max(r["rss_mib"][2:] or r["rss_mib"]) for r in rows["sidecar"]])
    result.details = {"rounds": rows, "url_path": url.split("/", 3)[-1]}
    return result


UPBIT_MARKETS = ("KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL")


def run_upbit(quick: bool, runs: int) -> Result:
    """Upbit frames (trades and tickers, DEFAULT format) on the simulator's firehose: the sidecar with the Upbit
    patterns against the same sidecar parsing every Upbit frame one by one (before issue 17), rounds interleaved."""
    seconds = 8.0 if quick else 20.0
    result = Result("sidecar_ingest_upbit", f"{runs} rounds x {seconds:.0f} s per variant, Upbit trade + ticker of "
                                            f"{len(UPBIT_MARKETS)} markets, simulator firehose")
    rows: dict[str, list[dict]] = {"patterns": [], "per_frame": []}
    with running_sim(firehose=True, upbit_markets=list(UPBIT_MARKETS), history_days=2) as sim, \
            tempfile.TemporaryDirectory(prefix="bench-ingest-upbit-") as tmp:
        env = {**os.environ, **sim.env(), "CRYPTOFLOW_UPBIT_MARKETS": ",".join(UPBIT_MARKETS)}
        for i in range(runs):
            rows["per_frame"].append(run_sidecar(env, Path(tmp) / f"per-frame-{i}", seconds, exchange="upbit",
                                                 per_frame=True))
            rows["patterns"].append(run_sidecar(env, Path(tmp) / f"patterns-{i}", seconds, exchange="upbit"))
    rate = {k: [r["messages"] / r["seconds"] for r in v] for k, v in rows.items()}
    cpu_per_m = {k: [1e6 * r["cpu_s"] / r["messages"] for r in v] for k, v in rows.items()}
    cores = {k: [r["cpu_s"] / r["seconds"] for r in v] for k, v in rows.items()}
    result.add("upbit sidecar messages/s, patterns", "msg/s", rate["patterns"], None, "per-frame parse")
    result.add("upbit sidecar messages/s, per-frame parse (before)", "msg/s", rate["per_frame"])
    result.add("patterns / per-frame (same round)", "ratio", [a / b for a, b in zip(rate["patterns"], rate["per_frame"])])
    result.add("upbit sidecar CPU s per million messages, patterns", "cpu-s/M", cpu_per_m["patterns"], None,
               "per-frame parse")
    result.add("upbit sidecar CPU s per million messages, per-frame parse (before)", "cpu-s/M", cpu_per_m["per_frame"])
    result.add("upbit sidecar cores used, patterns", "cores", cores["patterns"])
    result.add("upbit sidecar cores used, per-frame parse (before)", "cores", cores["per_frame"])
    result.details = {"rounds": rows}
    return result


if __name__ == "__main__":  # python -m benchmarks.sidecar_ingest --upbit [--quick] [--runs N]
    import argparse

    from benchmarks.common import write_result

    parser = argparse.ArgumentParser()
    parser.add_argument("--upbit", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    a = parser.parse_args()
    print(write_result((run_upbit if a.upbit else run)(a.quick, a.runs)))
