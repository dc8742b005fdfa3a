"""Does the exchange simulator keep up? Live pace at 250 markets, and firehose throughput.

``python -m benchmarks.sim_firehose [--rates 1000,3000,5000] [--seconds 180] [--baseline-seconds 60]``
``python -m benchmarks.sim_firehose --firehose [--seconds 5]`` (messages/s one connection reads, as before)

Live pace (the endurance question): the simulator runs in a subprocess listing 250 markets (200 Upbit: the recorded KRW
listing plus BTC- markets of the same snapshot; 50 Binance USDT symbols) with ``--total-trade-rate`` R split by volume
share. Two raw-socket readers subscribe to everything (one Upbit connection, SIMPLE trades; one Binance combined
stream, ``@trade``) and note, per frame, the wall time it was read minus the trade's own time (Upbit ``ttms``,
Binance ``T``): the send lateness, as the client sees it (loopback). Every 5 s: the simulator's CPU seconds and RSS
from /proc. The baseline, measured in the same run at the same rate: a bare ``websockets`` server sending ready-made
trade frames on a 5 ms timer (what sending this many frames costs with the library the field uses, no model).
Results: benchmarks/results/sim_firehose.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, Result, proc_cpu_s, proc_rss_mib, write_result
from exchange_sim.testing import free_port, running_sim
from exchange_sim.universe import BINANCE_TOP, UPBIT_MARKET_ALL, upbit_listing

FIREHOSE_SCENARIOS = {
    "binance_btcusdt_trade": ("/ws/btcusdt@trade", None),
    "binance_4_symbols_combined": ("/stream?streams=btcusdt@trade/ethusdt@trade/xrpusdt@trade/solusdt@trade", None),
    "upbit_5_codes_trade": ("/websocket/v1", [{"ticket": "bench"}, {"type": "trade", "codes": [
        "KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-USDT"]}, {"format": "SIMPLE"}]),
}
SAMPLE_EVERY_S = 5.0
WARMUP_S = 10.0  # the first seconds (connection set-up, first chunks of 250 markets) are not scored
TIME_RE = {"upbit": re.compile(rb'"ttms":(\d+)'), "binance": re.compile(rb'"T":(\d+)')}


def universe_250() -> tuple[list[str], list[str]]:
    """200 Upbit markets (every recorded KRW market, then BTC- markets of the same recorded listing) and 50 Binance."""
    krw = list(upbit_listing()) + ["KRW-USDT"]
    others = [r["market"] for r in json.loads(UPBIT_MARKET_ALL.read_text(encoding="utf-8")) if r["market"].startswith("BTC-")]
    return (krw + others)[:200], [s for s, _ in BINANCE_TOP]


# ---- a raw WebSocket reader (header parsing only, so the client's JSON work does not cap the figures) ------------
def _mask_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + masked


def _connect(port: int, path: str, subscribe: list | None) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(4096)
    if not buf.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {buf[:200]!r}")
    if subscribe is not None:
        sock.sendall(_mask_frame(json.dumps(subscribe).encode()))
    return sock, buf.split(b"\r\n\r\n", 1)[1]


def _pong(payload: bytes) -> bytes:
    mask = os.urandom(4)
    return bytes([0x8A, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _frames(data: bytes, pings: list[bytes] | None = None) -> tuple[list[bytes], bytes]:
    """Complete frames' payloads off the front of ``data`` and the rest (server frames are unmasked); the payloads
    of PING frames go to ``pings`` (the reader must pong, or the server closes the connection after its ping timeout)."""
    out, pos = [], 0
    while len(data) - pos >= 2:
        size, header = data[pos + 1] & 0x7F, 2
        if size == 126:
            if len(data) - pos < 4:
                break
            size, header = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
        elif size == 127:
            if len(data) - pos < 10:
                break
            size, header = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
        if len(data) - pos < header + size:
            break
        opcode = data[pos] & 0x0F
        if opcode in (0x1, 0x2):  # text or binary
            out.append(data[pos + header : pos + header + size])
        elif opcode == 0x9 and pings is not None:
            pings.append(data[pos + header : pos + header + size])
        pos += header + size
    return out, data[pos:]


class Reader(threading.Thread):
    """Reads one connection until ``stop_at``; per trade: read wall ms minus the trade's time (ms)."""

    def __init__(self, port: int, path: str, subscribe: list | None, kind: str, score_from: float, stop_at: float):
        super().__init__(daemon=True)
        self.port, self.path, self.subscribe, self.kind = port, path, subscribe, kind
        self.score_from, self.stop_at = score_from, stop_at
        self.lateness: list[np.ndarray] = []
        self.received_at: list[float] = []  # wall s of each read that held trades (parallel to ``lateness``)
        self.first_frame_at: float | None = None
        self.connected_at = time.time()
        self.frames = 0
        self.error: str | None = None
        self.closed_early_s: float | None = None

    def run(self) -> None:
        try:
            sock, rest = _connect(self.port, self.path, self.subscribe)
            sock.settimeout(1.0)
            pattern = TIME_RE[self.kind]
            while time.time() < self.stop_at:
                try:
                    chunk = sock.recv(1 << 20)
                except socket.timeout:
                    continue
                if not chunk:  # the server closed the connection: reported with the results
                    self.closed_early_s = round(self.stop_at - time.time(), 1)
                    break
                now_ms = time.time() * 1000
                pings: list[bytes] = []
                payloads, rest = _frames(rest + chunk, pings)
                for ping in pings:
                    sock.sendall(_pong(ping))
                if not payloads:
                    continue
                if self.first_frame_at is None:
                    self.first_frame_at = now_ms / 1000
                self.frames += len(payloads)
                stamps = pattern.findall(b"\n".join(payloads))
                if stamps:
                    self.received_at.append(now_ms / 1000)
                    self.lateness.append(now_ms - np.array(stamps, dtype=np.float64))
            sock.close()
        except Exception as exc:  # reported in the results, not swallowed
            self.error = f"{type(exc).__name__}: {exc}"

    def values(self, start: float | None = None, end: float | None = None) -> np.ndarray:
        """Lateness (ms) of trades read in [start, end) wall seconds (default: from ``score_from`` on)."""
        start = self.score_from if start is None else start
        end = float("inf") if end is None else end
        parts = [v for at, v in zip(self.received_at, self.lateness) if start <= at < end]
        return np.concatenate(parts) if parts else np.empty(0)


def _percentiles(v: np.ndarray) -> dict[str, float | int | None]:
    if not len(v):
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    p50, p95, p99 = np.percentile(v, [50, 95, 99])
    return {"n": int(len(v)), "p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1),
            "p99_ms": round(float(p99), 1), "max_ms": round(float(v.max()), 1)}


def _sample(pid: int, until: float) -> list[dict]:
    samples = []
    t0 = time.time()
    while time.time() < until:
        samples.append({"t_s": round(time.time() - t0, 1), "cpu_s": round(proc_cpu_s(pid), 2), "rss_mib": round(proc_rss_mib(pid), 1)})
        time.sleep(SAMPLE_EVERY_S)
    return samples


def _process_figures(samples: list[dict], scored_from_s: float) -> dict:
    scored = [s for s in samples if s["t_s"] >= scored_from_s] or samples
    first, last = scored[0], scored[-1]
    span = max(last["t_s"] - first["t_s"], 1e-9)
    return {"cpu_cores": round((last["cpu_s"] - first["cpu_s"]) / span, 3), "rss_first_mib": first["rss_mib"],
            "rss_last_mib": last["rss_mib"], "rss_max_mib": max(s["rss_mib"] for s in scored),
            "rss_growth_mib_per_min": round((last["rss_mib"] - first["rss_mib"]) / span * 60, 2)}


def measure_sim(rate: float, seconds: float) -> dict:
    upbit, binance = universe_250()
    options = dict(upbit_markets=upbit, binance_symbols=binance, total_trade_rate=rate, history_days=2,
                   upbit_rate=10_000, binance_weight=10_000_000)
    with running_sim(**options) as sim:
        start = time.time()
        stop_at = start + seconds
        score_from = start + WARMUP_S
        readers = [
            Reader(sim.port, "/websocket/v1", [{"ticket": "bench"}, {"type": "trade", "codes": upbit, "is_only_realtime": True},
                                               {"format": "SIMPLE"}], "upbit", score_from, stop_at),
            Reader(sim.port, "/stream?streams=" + "/".join(f"{s.lower()}@trade" for s in binance), None, "binance",
                   score_from, stop_at),
        ]
        for r in readers:
            r.start()
        samples = _sample(sim.process.pid, stop_at)
        for r in readers:
            r.join(30)
        status = sim.status()
    # Steady state: from WARMUP_S on, and from 5 s after the later connection's first frame (subscribing to 250
    # markets opens 250 cursors, each generating its first chunk: that start-up is reported on its own).
    steady_from = max([score_from] + [(r.first_frame_at or stop_at) + 5 for r in readers])
    lateness = np.concatenate([r.values(steady_from) for r in readers])
    scored_s = max(stop_at - steady_from, 1e-9)
    startup = {r.kind: {"first_frame_after_s": round(r.first_frame_at - r.connected_at, 2) if r.first_frame_at else None,
                        "lateness_before_steady": _percentiles(r.values(0, steady_from))} for r in readers}
    return {"rate": rate, "markets": len(upbit) + len(binance), "seconds": seconds, "load_avg_1m_end": os.getloadavg()[0],
            "scored_s": round(scored_s, 1), "received_trades_per_s": round(len(lateness) / scored_s, 1),
            "configured_trades_per_s": round(sum(status["live_rates"].values()), 1),
            "lateness": _percentiles(lateness), "startup": startup,
            "by_exchange": {r.kind: _percentiles(r.values(steady_from)) for r in readers},
            "model_cache_at_end": status["model_cache"],
            "errors": [r.error for r in readers if r.error] + [f"{r.kind} closed {r.closed_early_s} s early" for r in readers
                                                                 if r.closed_early_s],
            **_process_figures(samples, steady_from - start), "samples": samples}


# ---- baseline: a bare websockets server sending ready-made frames at the same rate -------------------------------
async def _baseline_server(port: int, rate: float) -> None:
    import websockets

    async def handler(ws) -> None:
        start = time.time()
        sent = 0
        template = '{"e":"trade","E":%d,"s":"BTCUSDT","t":%d,"p":"110000.00000000","q":"0.01000000","T":%d,"m":true,"M":true}'
        try:
            while True:
                await asyncio.sleep(0.005)
                due = int((time.time() - start) * rate)
                for i in range(sent, due):
                    t = int((start + i / rate) * 1000)  # the trade's own time: when it became due
                    await ws.send(template % (int(time.time() * 1000), i, t))
                sent = due
        except websockets.ConnectionClosed:
            pass  # the reader is done

    async with websockets.serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        await asyncio.Future()


def measure_baseline(rate: float, seconds: float) -> dict:
    port = free_port()
    proc = __import__("subprocess").Popen([sys.executable, "-m", "benchmarks.sim_firehose", "--baseline-server",
                                           str(port), str(rate)], cwd=REPO)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("baseline server did not start") from None
                time.sleep(0.1)
        start = time.time()
        reader = Reader(port, "/", None, "binance", start + WARMUP_S, start + seconds)
        reader.start()
        samples = _sample(proc.pid, start + seconds)
        reader.join(30)
    finally:
        proc.terminate()
        proc.wait(10)
    v = reader.values()
    return {"rate": rate, "seconds": seconds, "load_avg_1m_end": os.getloadavg()[0],
            "received_trades_per_s": round(len(v) / (seconds - WARMUP_S), 1),
            "lateness": _percentiles(v), "errors": ([reader.error] if reader.error else [])
            + ([f"closed {reader.closed_early_s} s early"] if reader.closed_early_s else []),
            **_process_figures(samples, WARMUP_S), "samples": samples}


# ---- memory: the old whole-day generation against chunks, in process (tracemalloc) --------------------------------
OLD_MODEL_COMMIT = "ef75453"  # the last commit generating whole market-days (issue 17's measurement)


def _old_model_module():
    """exchange_sim/model.py as of OLD_MODEL_COMMIT, imported under another name (its imports still resolve)."""
    import importlib.util
    import subprocess
    import tempfile

    source = subprocess.run(["git", "show", f"{OLD_MODEL_COMMIT}:exchange_sim/model.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix="_old_model.py", delete=False) as fh:
        fh.write(source)
    spec = importlib.util.spec_from_file_location("old_sim_model", fh.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_sim_model"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    os.unlink(fh.name)
    return module


def measure_memory(rate: float, markets: int = 2) -> dict:
    """Serve 10 minutes of live trades at noon for ``markets`` markets at ``rate`` trades/s each (live since midnight):
    peak traced memory, memory still held, and time per path. The old path generates each whole market-day first."""
    import tracemalloc

    from exchange_sim import model as new_model

    day = 20_400
    noon = day * 86_400_000 + 12 * 3_600_000
    out = {}
    for name, module in (("old_whole_day", _old_model_module()), ("chunks", new_model)):
        tracemalloc.start()
        start = time.perf_counter()
        m = module.Model(module.ModelConfig(seed=42, history_start_ms=(day - 1) * 86_400_000,
                                            live_epoch_ms=day * 86_400_000, live_rate=rate))
        served = 0
        for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT")[:markets]:
            served += len(m.trades("binance", symbol, noon, noon + 600_000))
        elapsed = time.perf_counter() - start
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out[name] = {"trades_served": served, "seconds": round(elapsed, 2), "peak_mib": round(peak / 2**20, 1),
                     "held_mib": round(current / 2**20, 1)}
        del m
    return {"rate_per_market": rate, "markets": markets, **out}


# ---- firehose: how fast one connection can be fed ------------------------------------------------------------------
def count_frames(port: int, path: str, subscribe: list | None, seconds: float) -> float:
    sock, rest = _connect(port, path, subscribe)
    frames = 0
    start = time.monotonic()
    while time.monotonic() < start + seconds:
        payloads, rest = _frames(rest + sock.recv(1 << 20))
        frames += len(payloads)
    elapsed = time.monotonic() - start
    sock.close()
    return frames / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="1000,3000,5000", help="total live trades/s to try, comma-separated")
    parser.add_argument("--seconds", type=float, default=180.0, help="per rate (firehose: per scenario)")
    parser.add_argument("--baseline-seconds", type=float, default=60.0)
    parser.add_argument("--firehose", action="store_true", help="measure firehose msg/s instead of live pace")
    parser.add_argument("--memory", type=float, default=None, metavar="RATE",
                        help="in process: old whole-day generation vs chunks at RATE trades/s per market")
    parser.add_argument("--out", type=Path, default=None, help="results directory (default benchmarks/results)")
    parser.add_argument("--baseline-server", nargs=2, metavar=("PORT", "RATE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_server:
        asyncio.run(_baseline_server(int(args.baseline_server[0]), float(args.baseline_server[1])))
        return 0
    if args.memory is not None:
        mem = measure_memory(args.memory)
        print(json.dumps(mem, indent=1))
        result = Result("sim_memory", f"{mem['markets']} markets live at {args.memory:g} trades/s each, 10 minutes served at noon")
        old, new = mem["old_whole_day"], mem["chunks"]
        result.add("peak traced memory, chunks", "MiB", [new["peak_mib"]], baseline=f"whole-day blocks {old['peak_mib']} MiB")
        result.add("memory held after, chunks", "MiB", [new["held_mib"]], baseline=f"whole-day blocks {old['held_mib']} MiB")
        result.add("time to serve, chunks", "s", [new["seconds"]], baseline=f"whole-day blocks {old['seconds']} s")
        result.details = mem
        write_result(result, *([args.out] if args.out else []))
        return 0
    if args.firehose:
        result = Result("sim_firehose_throughput", "1 connection per scenario")
        with running_sim(firehose=True, history_days=2) as sim:
            for name, (path, subscribe) in FIREHOSE_SCENARIOS.items():
                result.add(name, "msg/s", [count_frames(sim.port, path, subscribe, args.seconds)], (">=", 50_000))
        print(json.dumps(result.as_json()["figures"], indent=2))
        write_result(result, *([args.out] if args.out else []))
        return 0
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    result = Result("sim_firehose", f"250 markets, total rates {args.rates}/s, {args.seconds:g} s each")
    runs = []
    for rate in rates:
        sim_run = measure_sim(rate, args.seconds)
        base = measure_baseline(sim_run["received_trades_per_s"] or rate, args.baseline_seconds)
        runs.append({"simulator": sim_run, "baseline_bare_websockets": base})
        tag = f"{rate:g}/s"
        print(json.dumps({"rate": rate, "sim": {k: v for k, v in sim_run.items() if k != "samples"},
                          "baseline": {k: v for k, v in base.items() if k != "samples"}}, indent=1), flush=True)
        result.add(f"send lateness p95 @ {tag}", "ms", [sim_run["lateness"]["p95_ms"]], ("<=", 1000.0),
                   baseline=f"bare websockets p95 {base['lateness']['p95_ms']} ms")
        result.add(f"send lateness p99 @ {tag}", "ms", [sim_run["lateness"]["p99_ms"]],
                   baseline=f"bare websockets p99 {base['lateness']['p99_ms']} ms")
        result.add(f"send lateness max @ {tag}", "ms", [sim_run["lateness"]["max_ms"]],
                   baseline=f"bare websockets max {base['lateness']['max_ms']} ms")
        result.add(f"simulator CPU @ {tag}", "cores", [sim_run["cpu_cores"]],
                   baseline=f"bare websockets {base['cpu_cores']} cores")
        result.add(f"simulator RSS growth @ {tag}", "MiB/min", [sim_run["rss_growth_mib_per_min"]], ("<=", 5.0),
                   note=f"RSS first {sim_run['rss_first_mib']} MiB, last {sim_run['rss_last_mib']} MiB")
        result.add(f"trades received @ {tag}", "trades/s", [sim_run["received_trades_per_s"]],
                   note=f"configured {sim_run['configured_trades_per_s']}/s incl. the per-market floor")
    result.details["runs"] = runs
    path = write_result(result, *([args.out] if args.out else []))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
