"""Every market end to end (issue 17): ~250 markets from the simulator through the sidecar into silver, on the whole
platform as ``cryptoflow demo`` runs it (Dagster code server + webserver + daemon: landing sensor, streaming runs with
hand-over, market alert sensor, gap repair), over a whole window.

The sidecar resolves ``CRYPTOFLOW_UPBIT_MARKETS=ALL`` and ``CRYPTOFLOW_BINANCE_SYMBOLS=TOP50`` from the simulator's
REST (``/v1/market/all``; ``exchangeInfo`` + ``ticker/24hr`` where served), as it would from the exchanges. Figures:
silver p50/p95/p99/max over every trade of the window (``cryptoflow slo``), per-chunk lake transaction time, streaming
runs in the window, and the CPU of each process (sidecar, simulator, code server, daemon, webserver, streaming runs)
sampled from /proc every second. After the window, silver is compared with the simulator's ground truth for a sample of
markets (lost, doubled).

Settings (environment): ``CRYPTOFLOW_BENCH_WIDTH_MINUTES`` (5; ``make endurance`` sets 60), ``..._UPBIT`` (200 KRW
markets), ``..._BINANCE`` (50 USDT symbols), ``..._RATE`` (trades/s per market, 2), ``..._WARMUP_S`` (60). Any
``CRYPTOFLOW_*`` platform setting in the environment (``CRYPTOFLOW_STREAM_RUN_MAX_S``, ``..._HANDOVER_S``) reaches the
platform's processes. ``python -m benchmarks.width`` writes ``benchmarks/results/width.json``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path

import orjson

from benchmarks.common import CLK_TCK, Result, python_child
from chaos.checks import compare_trades
from cryptoflow_core import market_list
from cryptoflow_core.settings import load_settings
from cryptoflow_dagster import lake
from cryptoflow_dagster.cli import services
from cryptoflow_dagster.cli.children import Children
from cryptoflow_dagster.cli.demo import child_env
from cryptoflow_dagster.instance import prepare_instance
from cryptoflow_dagster.slo import report
from cryptoflow_dagster.webserver import wait_until_loaded
from exchange_sim.testing import running_sim

# Which process a command line belongs to (first match wins: the daemon's and webserver's command lines name the code
# server's workspace file, so they are looked for before it).
_ROLES = (("streaming run", "execute_run"), ("streaming run", "api execute"),
          # the standing code server starts each run as a multiprocessing child (spawn)
          ("streaming run", "multiprocessing.spawn"), ("daemon", "dagster-daemon"),
          ("webserver", "dagster-webserver"), ("sidecar", "streaming_sensor"), ("simulator", "exchange_sim"),
          ("code server", "code-server"))

_CHUNKS = """
    WITH snaps AS (SELECT snapshot_time AS t FROM ducklake_snapshots('{catalog}')),
    chunks AS (SELECT ingested_at, count(*) AS files FROM ops.ingested_files
               WHERE ingested_at >= $since AND ingested_at < $until GROUP BY 1)
    SELECT files, epoch_ms((SELECT min(t) FROM snaps WHERE t >= c.ingested_at)) / 1000.0 - epoch_ms(c.ingested_at) / 1000.0
    FROM chunks c
"""


class CpuSampler:
    """CPU seconds per process role over a window: every process below ``root`` (and the simulator's), sampled from
    /proc every second; a process that starts in the window counts from zero, one that ends keeps its last sample."""

    def __init__(self, pids_of_interest) -> None:
        self.pids_of_interest = pids_of_interest
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._sample(first=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        out: dict[str, float] = {}
        for pid, (role, cpu) in self.last.items():
            out[role] = out.get(role, 0.0) + cpu - self.first.get(pid, 0.0)
        return out

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def _sample(self, first: bool = False) -> None:
        for pid in self.pids_of_interest():
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            role = next((r for r, needle in _ROLES if needle in cmd), None)
            if role is None:
                continue
            cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
            if first:
                self.first[pid] = cpu
            elif pid not in self.first and pid not in self.last:
                self.first[pid] = 0.0
            self.last[pid] = (role, cpu)


def _descendants(roots: list[int]) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    out, frontier = set(roots), list(roots)
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in out:
                out.add(child)
                frontier.append(child)
    return sorted(out)


def run(quick: bool, runs: int) -> Result:
    minutes = float(os.environ.get("CRYPTOFLOW_BENCH_WIDTH_MINUTES", 2.0 if quick else 5.0))
    n_upbit = int(os.environ.get("CRYPTOFLOW_BENCH_WIDTH_UPBIT", 200))
    n_binance = int(os.environ.get("CRYPTOFLOW_BENCH_WIDTH_BINANCE", 50))
    rate = float(os.environ.get("CRYPTOFLOW_BENCH_WIDTH_RATE", 2))
    warmup_s = float(os.environ.get("CRYPTOFLOW_BENCH_WIDTH_WARMUP_S", 60))
    upbit = [f"KRW-W{i:03d}" for i in range(n_upbit)]
    binance = [f"W{i:03d}USDT" for i in range(n_binance)]
    result = Result("width", f"{n_upbit} Upbit (ALL) + {n_binance} Binance (TOP{n_binance}) markets at {rate:g} "
                             f"trades/s each (Upbit tickers besides) for {minutes:g} min after {warmup_s:.0f} s warm-up; "
                             f"whole platform")
    with tempfile.TemporaryDirectory(prefix="bench-width-") as tmp, \
            running_sim(trade_rate=rate, upbit_markets=upbit, binance_symbols=binance, history_days=2) as sim:
        home = Path(tmp)
        port = services.free_port()
        base = {**os.environ, **sim.env(), "CRYPTOFLOW_HOME": str(home), "CRYPTOFLOW_UI_PORT": str(port),
                "CRYPTOFLOW_UPBIT_MARKETS": "ALL", "CRYPTOFLOW_BINANCE_SYMBOLS": f"TOP{n_binance}"}
        base.pop("DAGSTER_HOME", None)
        settings = load_settings(base)
        env = child_env(settings, base, history_start=date.today())
        prepare_instance(settings)
        with lake.session(settings) as con:
            lake.ensure_schema(con)
        with Children() as children:
            web = services.start_dagster(children, env, "127.0.0.1", port, home / "logs")
            wait_until_loaded(f"http://127.0.0.1:{port}", timeout_s=300,
                              still_running=lambda: web.process.poll() is None)
            sidecar = python_child("streaming_sensor", env=env, log=home / "logs" / "sidecar.log")
            roots = [os.getpid(), sim.process.pid]
            sampler = CpuSampler(lambda: _descendants(roots))
            try:
                time.sleep(warmup_s)
                beat = orjson.loads(settings.heartbeat_path.read_bytes())
                msgs0 = beat["counters"]["messages"]
                since = datetime.now(timezone.utc)
                t0 = time.monotonic()
                sampler.start()
                time.sleep(minutes * 60)
                cpu = sampler.stop()
                wall = time.monotonic() - t0
                until = datetime.now(timezone.utc)
                beat = orjson.loads(settings.heartbeat_path.read_bytes())
                received = beat["counters"]["messages"] - msgs0
                time.sleep(30)  # the window's last files reach silver
            finally:
                sidecar.terminate()
                sidecar.wait(60)
        resolved = {e: market_list.configured_markets(settings, e, resolve_missing=False) for e in ("upbit", "binance")}
        # read once every writer is stopped (a SQLite catalog is not opened read-only beside a committing daemon)
        with lake.session(settings, read_only=True) as con:
            overall = report(con, since, until)
            window = {"since": since, "until": until}
            chunks = con.execute(_CHUNKS.format(catalog=lake.CATALOG), window).fetchall()
            runs_in_window = con.execute(
                "SELECT ingest_run_id, min(ingest_time)::VARCHAR, max(ingest_time)::VARCHAR, count(*) "
                "FROM bronze.trades_raw WHERE source = 'ws' AND ingest_time >= $since - INTERVAL 10 MINUTE "
                "AND ingest_time < $until + INTERVAL 1 MINUTE GROUP BY 1 ORDER BY 2", window).fetchall()
            # every 10th market, compared per connection (each has its own streamed window: they open 0.25 s apart)
            per = settings.stream_markets_per_connection
            truth = {}
            for exchange, markets in resolved.items():
                for first in range(0, len(markets), per):
                    group = [(exchange, m) for m in markets[first:first + per]][::10]
                    truth |= compare_trades(con, sim, group) if group else {}
    silver = overall["silver"]
    for stat in ("p50", "p95", "p99", "max"):
        result.add(f"silver {stat} (whole window)", "s", [silver[stat]], ("<=", 10.0) if stat == "p95" else None)
    chunk_s = sorted(c[1] for c in chunks if c[1] is not None)
    if chunk_s:
        result.add("per-chunk lake transaction, median", "s", [chunk_s[len(chunk_s) // 2]], None, None,
                   f"{len(chunk_s)} chunks, {sum(c[0] for c in chunks)} files")
        result.add("per-chunk lake transaction, p95", "s", [chunk_s[int(0.95 * (len(chunk_s) - 1))]])
        result.add("per-chunk lake transaction, max", "s", [chunk_s[-1]])
    result.add("messages received by the sidecar", "msg/s", [received / wall])
    for role, seconds in sorted(cpu.items()):
        result.add(f"CPU: {role}", "cores", [seconds / wall])
    lost = sum(e["lost"] or 0 for e in truth.values())
    doubled = sum(e["duplicated"] for e in truth.values())
    result.add("lost trades (ground truth, sampled markets)", "trades", [lost], ("<=", 0))
    result.add("duplicated trades (ground truth, sampled markets)", "trades", [doubled], ("<=", 0))
    result.details = {"overall": overall, "markets": {e: len(m) for e, m in resolved.items()},
                      "connections": sorted(beat["streams"]), "runs_in_window": runs_in_window,
                      "cpu_s": cpu, "wall_s": wall, "chunks": len(chunks), "ground_truth": truth,
                      "since": since.isoformat(), "until": until.isoformat()}
    return result


if __name__ == "__main__":  # python -m benchmarks.width [--quick]: writes benchmarks/results/width.json
    from benchmarks.common import write_result

    print(write_result(run("--quick" in sys.argv, 1)))
