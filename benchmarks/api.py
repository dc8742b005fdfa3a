"""The market-data API under load, beside what reading the lake costs without it (issue 18; ADR 0020).

``run(quick, runs)`` (``python -m benchmarks.run --only api``) builds a lake on a fresh ``CRYPTOFLOW_HOME``: a UTC day of
trades for 9 markets, written as the streaming job writes them (``lake.write``: silver.trades and, in the same
transaction, ``intraday_gold.refresh``: 1-minute bars, 24-hour stats, Korean premium). Then, with a **writer process**
committing new trades for the 9 markets every ``WRITER_EVERY_S`` (27 trades a commit, the demo's rate, intraday gold
refreshed in the same transaction, as the stream commits):

1. **writer alone**: the writer's commit latency (``lake.write``, turn and COMMIT included) with nobody reading;
2. **floor**: the same queries the API runs, read directly with DuckDB (``lake.session(read_only=True)`` in this
   process, one after another): what a read costs with no HTTP, JSON or API around it;
3. **API under load**: ``cryptoflow serve`` in its own process, ``CLIENTS`` concurrent HTTP clients (asyncio + httpx,
   keep-alive), each sending a request about every ``CLIENT_EVERY_S`` (jittered), cycling through: latest price
   (``/v1/markets`` for one market), 24-hour stats (one market), a day of 1-minute bars of one market (JSON), a day of
   1-minute bars of every market (Parquet). Per endpoint p50/p95/p99/max over the whole window, and p95 per slice
   (``runs`` slices) for the spread. Meanwhile a WebSocket client subscribed to every market measures **commit ->
   received** for each pushed trade (the writer notes when each commit returned), and the writer's commit latency is
   measured again (**with readers**). The API reports how long its read transactions were open (``/v1/server``) and
   its memory is sampled (RSS) before and after the bulk requests.
4. **``cryptoflow query``** (what people do today): the latest-price query as a subprocess, ``QUERY_RUNS`` times.
5. **Framework overhead** (FastAPI against bare Starlette, for ADR 0020): the same in-memory answer through each
   framework's routing, called as ASGI apps in this process (no network), ``FRAMEWORK_CALLS`` times each.

``python -m benchmarks.api writer HOME SECONDS OUT.json`` is the writer process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, Result, proc_rss_mib

UPBIT = ("KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-USDT")
BINANCE = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT")
MARKETS = [("upbit", m) for m in UPBIT] + [("binance", s) for s in BINANCE]
PRICES = {"KRW-BTC": 1.5e8, "KRW-ETH": 5.2e6, "KRW-XRP": 4300.0, "KRW-SOL": 2.6e5, "KRW-USDT": 1400.0,
          "BTCUSDT": 1.07e5, "ETHUSDT": 3700.0, "XRPUSDT": 3.05, "SOLUSDT": 185.0}
CLIENTS = 50
CLIENT_EVERY_S = 2.0  # each of the 50 refreshes about every 2 s: 25 requests/s in all
WRITER_EVERY_S = 0.5
TRADES_PER_MARKET_PER_COMMIT = 3
QUERY_RUNS = 10
FRAMEWORK_CALLS = 3000
# full: a trade every 2 s per market for the day (388,800 trades), 120 s windows; quick: every 10 s, 30 s windows
SIZES = {"full": {"trade_every_s": 2.0, "window_s": 120.0}, "quick": {"trade_every_s": 10.0, "window_s": 30.0}}


# ---- the lake -----------------------------------------------------------------------------------------------------
def _trades(start: datetime, count: int, every_s: float, first_id: int, rng: random.Random) -> Any:
    import polars as pl

    rows = []
    for exchange, market in MARKETS:
        price = PRICES[market]
        for i in range(count):
            price *= 1 + rng.gauss(0, 0.0005)
            volume = rng.uniform(0.001, 0.5)
            ts = start + timedelta(seconds=i * every_s)
            rows.append((exchange, market, first_id + i, ts, price, volume, price * volume,
                         rng.choice(("buy", "sell")), ts.date()))
    return pl.DataFrame(rows, orient="row", schema={
        "exchange": pl.String, "market": pl.String, "trade_id": pl.Int64, "ts": pl.Datetime("us", "UTC"),
        "price": pl.Float64, "volume": pl.Float64, "quote_volume": pl.Float64, "side": pl.String, "day": pl.Date})


def _commit(con: Any, frame: Any) -> float:
    """One commit as the stream makes it: the trades and the intraday gold of the minutes they touch. Returns its
    wall time (turn, transaction and COMMIT)."""
    import polars as pl

    from cryptoflow_dagster import lake
    from cryptoflow_dagster.streaming import intraday_gold

    now = datetime.now(timezone.utc)
    frame = frame.with_columns(ingest_time=pl.lit(now, pl.Datetime("us", "UTC")))
    ranges = frame.group_by("exchange", "market").agg(
        lo=pl.col("ts").min().dt.truncate("1m"), hi=pl.col("ts").max().dt.truncate("1m"))

    def work(c: Any) -> None:
        lake.insert(c, "silver.trades", frame)
        c.register(intraday_gold.RANGES, ranges)
        try:
            intraday_gold.refresh(c, now)
        finally:
            c.unregister(intraday_gold.RANGES)

    began = time.perf_counter()
    lake.write(con, work)
    return time.perf_counter() - began


def fill(settings: Any, day: datetime, every_s: float) -> int:
    from cryptoflow_dagster import lake

    per_hour = int(3600 / every_s)
    rng = random.Random(18)
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        for hour in range(24):
            _commit(con, _trades(day + timedelta(hours=hour), per_hour, every_s, 1 + hour * per_hour, rng))
    return 24 * per_hour * len(MARKETS)


# ---- the writer process -------------------------------------------------------------------------------------------
def writer_main(home: str, seconds: float, out: str) -> None:
    """Commit 27 trades (3 per market) every WRITER_EVERY_S for ``seconds``; note each commit's latency and when it
    returned (wall clock, for commit -> received), keyed by its first trade id."""
    from cryptoflow_core.settings import load_settings
    from cryptoflow_dagster import lake

    settings = load_settings({**os.environ, "CRYPTOFLOW_HOME": home})
    rng = random.Random(os.getpid())
    commits = []
    lost_races: list[str] = []  # lake.write logs each commit that lost a race and was retried: a reader never causes one

    class Races(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "lost a race" in record.getMessage():
                lost_races.append(record.getMessage()[:200])

    logging.getLogger("cryptoflow_dagster.lake.transactions").addHandler(Races())
    logging.getLogger("cryptoflow_dagster.lake.transactions").setLevel(logging.INFO)
    next_id = 10_000_000
    with lake.session(settings) as con:
        print("ready", flush=True)
        sys.stdin.readline()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            tick = time.monotonic()
            now = datetime.now(timezone.utc)
            frame = _trades(now, TRADES_PER_MARKET_PER_COMMIT, 0.001, next_id, rng)
            latency = _commit(con, frame)
            commits.append({"first_id": next_id, "count": TRADES_PER_MARKET_PER_COMMIT, "latency_s": latency,
                            "returned_at": time.time(), "started_mono": tick})
            next_id += TRADES_PER_MARKET_PER_COMMIT
            time.sleep(max(0.0, WRITER_EVERY_S - (time.monotonic() - tick)))
    Path(out).write_text(json.dumps({"commits": commits, "lost_races": lost_races}))


class Writer:
    def __init__(self, home: Path, seconds: float, out: Path):
        self.out = out
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.api", "writer", str(home), str(seconds),
                                      str(out)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        self.started = time.time()

    def finish(self) -> list[dict]:
        self.proc.wait(600)
        self.proc.stdin.close()
        self.proc.stdout.close()
        written = json.loads(self.out.read_text())
        self.lost_races = len(written["lost_races"])
        return written["commits"]


# ---- statistics ---------------------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50": pct(values, 0.5), "p95": pct(values, 0.95), "p99": pct(values, 0.99),
            "max": max(values) if values else None}


def per_slice_p95(samples: list[tuple[float, float]], since: float, until: float, slices: int) -> list[float]:
    step = (until - since) / slices
    out = []
    for i in range(slices):
        part = [v for t, v in samples if since + i * step <= t < since + (i + 1) * step]
        if part:
            out.append(pct(part, 0.95))
    return out


# ---- the floor: the same reads without the API ----------------------------------------------------------------------
def floor_reads(settings: Any, day: datetime, seconds: float) -> dict[str, list[float]]:
    from cryptoflow_dagster import lake
    from cryptoflow_serving import queries

    stats_sql, stats_params = queries.latest_sql(
        queries.RESOURCES["stats_24h"], queries.Filters("upbit", ("KRW-BTC",)))
    bars_sql, bars_params = queries.page_sql(
        queries.RESOURCES["bars_1m_trades"],
        queries.Filters("upbit", ("KRW-BTC",), day, day + timedelta(days=1)), order="asc", limit=1440, after=None)
    price_sql = """SELECT arg_max(price, (ts, trade_id)), max(ts) FROM silver.trades
                   WHERE exchange = ? AND market = ?"""
    reads = {"latest price": (price_sql, ["upbit", "KRW-BTC"]), "24h stats": (stats_sql, stats_params),
             "day of 1m bars, one market": (bars_sql, bars_params)}
    out: dict[str, list[float]] = {k: [] for k in reads}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for name, (sql, params) in reads.items():
            began = time.perf_counter()
            with lake.session(settings, read_only=True) as con:
                con.execute(sql, params).fetchall()
            out[name].append(time.perf_counter() - began)
    return out


# ---- the API under load -------------------------------------------------------------------------------------------
def endpoints(day: datetime) -> list[tuple[str, str, dict[str, Any]]]:
    """What a client asks, in turn: mostly "now" (a price, 24-hour stats: what a dashboard polls), 3 requests in 16
    a day of 1-minute bars of one market, 1 in 16 the day of every market as Parquet."""
    d = day.date().isoformat()
    price = [("latest price", "/v1/markets", {"exchange": ex, "market": m}) for ex, m in MARKETS[:3] + MARKETS[5:8]]
    stats = [("24h stats", "/v1/stats/24h", {"exchange": ex, "market": m}) for ex, m in MARKETS[:3] + MARKETS[5:8]]
    bars = ("day of 1m bars, one market", "/v1/bars/1m", {"exchange": "upbit", "market": "KRW-BTC", "day": d,
                                                          "limit": 1440})
    bulk = ("day of 1m bars, all markets (parquet)", "/v1/bars/1m", {"day": d, "format": "parquet"})
    plan = []
    for i in range(6):
        plan += [price[i], stats[i]]
        if i in (1, 4):
            plan.append(bars)
    plan += [bars, bulk]
    return plan  # 16 requests: 6 prices, 6 stats, 3 days of one market, 1 bulk day


async def _client(http: Any, plan: list, until: float, samples: dict, errors: list, rng: random.Random) -> None:
    import httpx

    i = rng.randrange(len(plan))
    await asyncio.sleep(rng.uniform(0, CLIENT_EVERY_S))
    while time.monotonic() < until:
        name, path, params = plan[i % len(plan)]
        i += 1
        began = time.perf_counter()
        status, size, server_s = None, 0, None
        try:
            r = await http.get(path, params=params)
            status, size = r.status_code, len(r.content)
            timing = r.headers.get("server-timing", "")
            if "dur=" in timing:
                server_s = float(timing.split("dur=")[1]) / 1000
        except httpx.HTTPError as exc:
            errors.append(f"{name}: {type(exc).__name__}")
        took = time.perf_counter() - began
        if status == 200:
            samples.setdefault(name, []).append((time.monotonic(), took, size))
            if server_s is not None:
                samples.setdefault(name + " [in the API]", []).append((time.monotonic(), server_s, size))
        elif status is not None and len(errors) < 50:
            errors.append(f"{name}: HTTP {status}")
        await asyncio.sleep(max(0.0, rng.uniform(0.5, 1.5) * CLIENT_EVERY_S - took))


async def load(base: str, ws_url: str, day: datetime, seconds: float) -> tuple[dict, list, dict]:
    """CLIENTS concurrent clients (a connection each, from one pool: one httpx client, so 50 TLS contexts are not
    built on the event loop) and the live client, for ``seconds``."""
    import httpx
    import websockets

    plan = endpoints(day)
    samples: dict[str, list] = {}
    errors: list[str] = []
    received: dict[int, float] = {}
    rng = random.Random(50)
    async with websockets.connect(ws_url, max_size=None) as ws, httpx.AsyncClient(
            base_url=base, timeout=60, limits=httpx.Limits(max_connections=CLIENTS,
                                                           max_keepalive_connections=CLIENTS)) as http:
        await ws.send(json.dumps({"subscribe": {"markets": ["*"], "channels": ["trades"]}}))
        until = time.monotonic() + seconds

        async def live() -> None:
            while time.monotonic() < until + 2:
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=max(0.1, until + 2 - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                now = time.time()
                msg = json.loads(raw)
                if msg.get("type") == "trade":
                    received.setdefault(msg["trade_id"], now)

        tasks = [_client(http, plan, until, samples, errors, random.Random(rng.random())) for _ in range(CLIENTS)]
        await asyncio.gather(live(), *tasks)
    return samples, errors, received


def push_delays(commits: list[dict], received: dict[int, float]) -> tuple[list[tuple[float, float]], int]:
    """(commit time, commit returned -> the live client had the commit's first trade) per commit (all of a commit's
    trades come in one poll), and the number of commits whose trades never arrived."""
    delays, missing = [], 0
    for c in commits:
        got = received.get(c["first_id"])
        if got is None:
            missing += 1
        else:
            delays.append((c["returned_at"], got - c["returned_at"]))
    return delays, missing


# ---- cryptoflow query ---------------------------------------------------------------------------------------------
def query_cli(home: Path) -> list[float]:
    env = {**os.environ, "CRYPTOFLOW_HOME": str(home)}
    sql = "SELECT arg_max(price, (ts, trade_id)) FROM silver.trades WHERE exchange = 'upbit' AND market = 'KRW-BTC'"
    times = []
    for _ in range(QUERY_RUNS):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cryptoflow_dagster.cli", "query", sql, "--format", "json"], env=env,
                       cwd=REPO, check=True, capture_output=True, timeout=120)
        times.append(time.perf_counter() - began)
    return times


# ---- FastAPI against bare Starlette ---------------------------------------------------------------------------------
def framework_overhead() -> dict[str, list[float]]:
    from fastapi import FastAPI, Query
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.routing import Route

    from cryptoflow_serving.formats import JSONResponse

    body = {"data": [{"exchange": "upbit", "market": "KRW-BTC", "last_price": 1.5e8,
                      "last_trade_ts": datetime.now(timezone.utc), "last_trade_id": 1}], "count": 1,
            "next_cursor": None, "snapshot": 1}
    fast = FastAPI()

    @fast.get("/v1/markets")
    async def markets(exchange: str | None = None, market: list[str] | None = Query(None)) -> JSONResponse:
        return JSONResponse(body)

    async def bare(request: Request) -> JSONResponse:
        request.query_params.get("exchange")
        request.query_params.getlist("market")
        return JSONResponse(body)

    star = Starlette(routes=[Route("/v1/markets", bare)])

    async def call(app: Any) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
                 "path": "/v1/markets", "raw_path": b"/v1/markets", "root_path": "",
                 "query_string": b"exchange=upbit&market=KRW-BTC", "headers": [(b"host", b"x")],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            pass

        await app(scope, receive, send)

    async def measure(app: Any) -> list[float]:
        for _ in range(200):
            await call(app)
        out = []
        for _ in range(FRAMEWORK_CALLS):
            began = time.perf_counter()
            await call(app)
            out.append(time.perf_counter() - began)
        return out

    result = {}
    for _ in range(2):  # alternated, so drift in the machine's load hits both
        result.setdefault("fastapi", []).extend(asyncio.run(measure(fast)))
        result.setdefault("starlette", []).extend(asyncio.run(measure(star)))
    return result


# ---- the whole run ------------------------------------------------------------------------------------------------
def run(quick: bool, runs: int) -> Result:
    import httpx

    from cryptoflow_core.settings import load_settings
    from cryptoflow_serving.testing import running_api

    size = SIZES["quick" if quick else "full"]
    window = float(os.environ.get("CRYPTOFLOW_BENCH_API_WINDOW_S", size["window_s"]))
    day = (datetime.now(timezone.utc) - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    result = Result("api", f"a UTC day of trades for 9 markets (a trade every {size['trade_every_s']:g} s each) + a "
                           f"writer committing 27 trades every {WRITER_EVERY_S:g} s with intraday gold; {CLIENTS} HTTP "
                           f"clients at ~{1 / CLIENT_EVERY_S:g} req/s each for {window:g} s; p95 per {runs} slices")
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        home = Path(tmp) / "home"
        env = {"CRYPTOFLOW_HOME": str(home), "CRYPTOFLOW_API_RATE_LIMIT": "0"}
        settings = load_settings({**os.environ, **env})
        began = time.perf_counter()
        details["trades_in_lake"] = fill(settings, day, size["trade_every_s"])
        details["fill_s"] = round(time.perf_counter() - began, 1)

        # 1. the writer alone
        writer = Writer(home, window / 2, Path(tmp) / "alone.json")
        alone = writer.finish()
        races = {"writer alone": writer.lost_races}

        # 2. the floor, while the writer commits
        writer = Writer(home, window / 2, Path(tmp) / "floor_writer.json")
        floor = floor_reads(settings, day, window / 2 - 1)
        floor_commits = writer.finish()
        races["writer + floor reads"] = writer.lost_races

        # 3. the API under load, while the writer commits
        with running_api(env) as api, httpx.Client(base_url=api.url, timeout=60) as http:
            http.get("/v1/markets").raise_for_status()  # the feed has seeded
            rss_before = proc_rss_mib(api.process.pid)
            writer = Writer(home, window, Path(tmp) / "loaded_writer.json")
            since = time.monotonic()
            samples, errors, received = asyncio.run(load(api.url, api.ws_url, day, window))
            until = time.monotonic()
            loaded_commits = writer.finish()
            races["writer + API under load"] = writer.lost_races
            rss_after = proc_rss_mib(api.process.pid)
            server = http.get("/v1/server").json()

        # 4. cryptoflow query; 5. the frameworks
        cli = query_cli(home)
        frameworks = framework_overhead()

    ms = 1000.0
    targets = {"latest price": 20.0, "24h stats": 20.0, "day of 1m bars, one market": 100.0}
    floor_names = {"latest price", "24h stats", "day of 1m bars, one market"}
    for name, rows in sorted(samples.items()):
        lat = [t * ms for _, t, _ in rows]
        slices = per_slice_p95([(m, t * ms) for m, t, _ in rows], since, until, runs)
        whole = spread(lat)
        result.add(f"API {name}: p95 per slice", "ms", slices,
                   ("<=", targets[name]) if name in targets else None,
                   f"floor: {name}" if name in floor_names else None,
                   f"whole window p50 {whole['p50']:.1f} / p95 {whole['p95']:.1f} / p99 {whole['p99']:.1f} / max "
                   f"{whole['max']:.1f} ms over {whole['n']} requests; {statistics.median(s for *_, s in rows):,.0f} "
                   "bytes per answer")
        details.setdefault("endpoints", {})[name] = whole
    for name, values in floor.items():
        lat = [v * ms for v in values]
        whole = spread(lat)
        result.add(f"floor: {name}", "ms", [whole["p50"], whole["p95"]], None, None,
                   f"bare DuckDB read of the same rows (values: p50, p95; {whole['n']} reads, one at a time); p99 "
                   f"{whole['p99']:.1f}, max {whole['max']:.1f} ms")
        details.setdefault("floor", {})[name] = whole
    cli_ms = [v * ms for v in cli]
    result.add("cryptoflow query (latest price, a subprocess)", "ms", cli_ms, None, None,
               "what people do today: python start, lake attach, one query")
    for label, commits in (("writer alone", alone), ("writer + floor reads", floor_commits),
                           ("writer + API under load", loaded_commits)):
        lat = [c["latency_s"] * ms for c in commits]
        whole = spread(lat)
        result.add(f"commit latency, {label}: p50, p95, p99, max", "ms",
                   [whole["p50"], whole["p95"], whole["p99"], whole["max"]], None,
                   None if label == "writer alone" else "commit latency, writer alone: p50, p95, p99, max",
                   f"{whole['n']} commits of 27 trades + intraday gold; {races[label]} lost a race (retried)")
        details.setdefault("commits", {})[label] = whole
    delays, missing = push_delays(loaded_commits, received)
    push = spread([d * ms for _, d in delays])
    first, last = (delays[0][0], delays[-1][0] + 1e-6) if delays else (0.0, 1.0)
    result.add("live push: commit -> received p95 per slice", "ms",
               per_slice_p95([(t, d * ms) for t, d in delays], first, last, runs), None, None,
               f"p50 {push['p50']:.0f} / p95 {push['p95']:.0f} / p99 {push['p99']:.0f} / max {push['max']:.0f} ms over "
               f"{push['n']} commits ({missing} commits never pushed); poll every 0.5 s")
    details["live_push"] = {**push, "missing_commits": missing}
    reads = server["reads"]
    result.add("API read transaction held open: p50, p99, max", "ms",
               [reads["held_ms_p50"], reads["held_ms_p99"], reads["held_ms_max"]], None, None,
               f"{reads['count']} read transactions (requests and live polls); readers take no writer's turn")
    fw = {k: [v * 1e6 for v in vals] for k, vals in frameworks.items()}
    for k, vals in fw.items():
        result.add(f"framework: {k}, one request through the ASGI app", "us",
                   [pct(vals, 0.5), pct(vals, 0.95)], None, None if k == "starlette" else
                   "framework: starlette, one request through the ASGI app", "values: p50, p95 of "
                   f"{len(vals)} calls in-process (no network, no lake)")
    details.update({"lost_races": races, "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
                    "errors": errors[:50], "error_count": len(errors), "api_rss_mib": {"before": rss_before,
                    "after": rss_after}, "server": server, "frameworks_us": {k: spread(v) for k, v in fw.items()},
                    "cryptoflow_query_ms": spread(cli_ms), "window_s": window})
    result.details = details
    return result


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "writer":
        writer_main(sys.argv[2], float(sys.argv[3]), sys.argv[4])
    else:
        from benchmarks.common import write_result

        outcome = run("--quick" in sys.argv, 5)
        print(json.dumps(outcome.as_json()["figures"], indent=1))
        print(write_result(outcome))
