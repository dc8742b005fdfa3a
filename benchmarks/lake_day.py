"""A day of the stream into the lake, with lake maintenance off and on (issue 16's proof; ADR 0017).

``run(quick, runs)`` (``python -m benchmarks.run --only lake_day``) fills one UTC day per mode, the modes side by side
(same load), each in a process of its own on a fresh ``CRYPTOFLOW_HOME``: ``off`` (no maintenance) and ``on``. A commit
is the real streaming path: the trades of one micro-batch (9 markets, Upbit and Binance frames as the exchanges send
them) written as landing files by the sidecar's ``MicroBatcher`` and ingested by ``streaming.ingest.ingest_pending``
(bronze, dead letters, silver through ``silver_trades.insert_new``, intraday gold, the ``ops.ingested_files`` ledger:
one lake transaction), back to back. Trade times advance through the day, so the whole day lands in one ``day``
partition. One trade in 100 is landed again with the next commit (a replay), and a malformed frame every 50 commits.

**What is compressed.** The demo's day is 86,400 commits (a landing flush a second) of 27 trades (9 markets x 3/s):
2,332,800 trades. Here the day has ``commits`` commits that carry the day's trades between them (``trades`` per
commit), so each commit stands for 86,400 / commits seconds of trades. Maintenance runs every ``maintain_every``
commits: the 10-minute cadence keeps its ratio to the day (600 of 86,400 commits -> commits / 144).

**Maintenance** (mode ``on``) runs in a process of its own, as the Dagster run does, taking writers' turns between the
stream's: ``lake_upkeep.run_steps`` step by step with the ``lake_maintenance`` job's steps and the settings' defaults,
one pass at a time (requests that wait are coalesced), a failed step ending the pass as it fails the run (mode
``on_isolated``: the pass goes on with the next step); catalog upkeep (``orphans``, ``catalog``) once, at the commit
standing for 02:40 (its cron). Snapshot times are wall-clock times, so the time-based settings act in wall time: a
1-day retention expires nothing in a run of minutes, and on a SQLite catalog files replaced today are deleted only
after the UTC day ends (ADR 0017).

**Measured per chunk** (from outside ingest.py: its module references are wrapped, and the lake transaction's
connection is a timing proxy): wall time and the process's CPU time, and wall time by step: pending check
(``not_ingested``), read landing, stage (SQL typing, ranges, per-file counts), writers' turn + BEGIN, ledger (the
in-transaction check and the ``ops.ingested_files`` insert), bronze insert, dead letters, silver ``insert_new``,
intraday gold refresh, COMMIT, and the rest. **Sampled** every 5 % of the day: live data files, bytes, delete files and
inlined rows per table, snapshots, catalog bytes, bytes on disk under the data path, and the read latency (median of 3)
of a day of ``silver.trades`` and of ``gold.market_stats_24h``. **Checked** at the end: silver holds every distinct
trade written exactly once (lost 0, doubled 0), bronze every readable frame, dead letters every malformed one, the
ledger every file.

``python -m benchmarks.lake_day WORK --mode off|on|on_isolated [--commits N] [--trades T] [--maintain-every K]
[--stop-after C]`` fills one mode and writes WORK/<mode>.json; ``--plot OFF.json ON.json OUT.png`` draws the curves.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, Result, disk_bytes

DAY = date(2026, 7, 30)  # the day filled (a fixed UTC day: any day works, trade times only need to advance through it)
DAY_START = datetime(DAY.year, DAY.month, DAY.day, tzinfo=timezone.utc)
UPBIT = ("KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-USDT")
BINANCE = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT")
MARKETS = [("upbit", m) for m in UPBIT] + [("binance", s) for s in BINANCE]
PRICES = {"KRW-BTC": 1.5e8, "KRW-ETH": 5.2e6, "KRW-XRP": 4300.0, "KRW-SOL": 2.6e5, "KRW-USDT": 1400.0,
          "BTCUSDT": 1.07e5, "ETHUSDT": 3700.0, "XRPUSDT": 3.05, "SOLUSDT": 185.0}
DEMO_COMMITS, DEMO_TRADES_PER_COMMIT = 86_400, 27  # one landing flush a second, 9 markets x 3 trades/s
MAINTENANCE_EVERY_S = 600  # CRYPTOFLOW_LAKE_MAINTENANCE_CRON's default, */10 * * * *
CATALOG_UPKEEP_AT_S = 2 * 3600 + 40 * 60  # CRYPTOFLOW_LAKE_CATALOG_UPKEEP_CRON's default, 40 2 * * *
DUPLICATE_EVERY = 100  # one trade in 100 is landed again in the next commit's files (a replay): silver keeps one
DEAD_LETTER_EVERY = 50  # a malformed frame every 50 commits: a dead letter, never a silver row
SAMPLES = 20  # every 5 % of the day
# off: no maintenance; on: lake_upkeep's pass as the lake_maintenance job runs it (a failed step fails the pass);
# on_isolated: the same steps, but a failed step does not stop the pass's later ones (what a fix would give)
MODES = ("off", "on", "on_isolated")
# What run() fills side by side: off and on; CRYPTOFLOW_BENCH_LAKE_DAY_MODES=off,on,on_isolated adds the third (a third
# fill on the 2 cores makes every chunk slower: the full size then takes ~35 minutes instead of ~25).
RUN_MODES = tuple(m for m in os.environ.get("CRYPTOFLOW_BENCH_LAKE_DAY_MODES", "off,on").split(",") if m in MODES)
STEPS = ("pending_check", "read_landing", "stage", "turn_begin", "ledger", "bronze", "dead_letters", "silver",
         "gold", "commit", "other")

# The demo's 2,332,800 trades in 864 commits of 100 s of trades each (100x fewer commits, 100x the trades per commit):
# both fills side by side took 36 minutes on the shared 2-core machine at load 3.5-13 (0.8-4.8 s a chunk; BENCHMARKS.md).
FULL = {"commits": 864, "trades": 2_700}
# A few minutes: 144 commits of 10 minutes of trades, a tenth of the day's trades, maintenance after every commit.
QUICK = {"commits": 144, "trades": 1_620}


def maintenance_every(commits: int) -> int:
    return max(1, round(commits * MAINTENANCE_EVERY_S / DEMO_COMMITS))


# --- the trades --------------------------------------------------------------------------------------------------


def _frame(exchange: str, market: str, tid: int, ms: int, price: float, volume: float, sell: bool) -> bytes:
    if exchange == "upbit":
        return (f'{{"type":"trade","code":"{market}","trade_timestamp":{ms},"trade_price":{price!r},'
                f'"trade_volume":{volume!r},"ask_bid":"{"ASK" if sell else "BID"}","sequential_id":{tid},'
                f'"stream_type":"REALTIME"}}').encode()
    return (f'{{"stream":"{market.lower()}@trade","data":{{"e":"trade","E":{ms},"s":"{market}","t":{tid},'
            f'"p":"{price!r}","q":"{volume!r}","T":{ms},"m":{"true" if sell else "false"},"M":true}}}}').encode()


class Day:
    """The day's trades, commit by commit: ids 1.. per market, times spread evenly over the commit's stretch of day."""

    def __init__(self, commits: int, trades: int):
        self.commits, self.trades = commits, trades
        self.next_id = {m: 1 for _, m in MARKETS}
        self.replay: list[tuple] = []  # frames landed again with the next commit
        self.landed_readable = 0  # readable frames landed (bronze rows), replays included
        self.dead = 0

    def commit_start(self, i: int) -> datetime:
        return DAY_START + timedelta(seconds=86_400 * i / self.commits)

    def land(self, batcher, i: int) -> list[Path]:
        start_us = int(self.commit_start(i).timestamp() * 1e6)
        span_us = int(86_400e6 / self.commits)
        rows, replay = list(self.replay), []
        for k in range(self.trades):
            exchange, market = MARKETS[k % len(MARKETS)]
            tid = self.next_id[market]
            self.next_id[market] += 1
            ms = (start_us + span_us * k // self.trades) // 1000
            price = PRICES[market] * (1 + 0.01 * ((tid * 7919) % 200 - 100) / 100)
            row = (exchange, market, tid, ms, _frame(exchange, market, tid, ms, price, 0.001 * (1 + tid % 17),
                                                       tid % 3 == 0))
            rows.append(row)
            if (i * self.trades + k) % DUPLICATE_EVERY == 0:
                replay.append(row)
        self.replay = replay
        receive_us = start_us + span_us
        for exchange, market, tid, ms, raw in rows:
            batcher.add(exchange, "trade", market, tid, ms, receive_us, "benchlakeday01", raw, None)
        self.landed_readable += len(rows)
        if i % DEAD_LETTER_EVERY == DEAD_LETTER_EVERY - 1:
            batcher.add("upbit", "trade", None, None, None, receive_us, "benchlakeday01", b"\xff{not json",
                        "invalid JSON: unexpected character")
            self.dead += 1
        return batcher.flush(now=datetime.fromtimestamp(receive_us / 1e6, timezone.utc))

    def distinct(self) -> int:
        return sum(n - 1 for n in self.next_id.values())


# --- timing the ingest path from outside --------------------------------------------------------------------------


class _Proxy:
    """A module or connection whose named attributes are replaced; everything else is the original's."""

    def __init__(self, inner: Any, **replaced: Any):
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_replaced", replaced)

    def __getattr__(self, name: str) -> Any:
        replaced = object.__getattribute__(self, "_replaced")
        return replaced[name] if name in replaced else getattr(object.__getattribute__(self, "_inner"), name)


class ChunkClock:
    """Marks the boundaries of one chunk's steps; :meth:`steps` turns them into seconds per step."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.perf_counter())  # the first time: a retried transaction keeps its start

    def steps(self, total_start: float, total_end: float) -> dict[str, float]:
        m = self.marks
        # the chunk's boundaries in order; a step is the time from its mark to the next one
        order = [("pending_check", "pending"), ("read_landing", "read"), ("stage", "read_end"),
                 ("turn_begin", "write"), ("ledger", "work"), ("bronze", "bronze"), ("dead_letters", "dead"),
                 ("silver", "silver"), ("gold", "gold"), ("ledger_insert", "ledger_insert"), ("commit", "work_end"),
                 ("other", "write_end")]
        points = [(step, m[name]) for step, name in order if name in m] + [("end", total_end)]
        out = {s: 0.0 for s in STEPS}
        for (step, t0), (_, t1) in zip(points, points[1:]):
            out["ledger" if step == "ledger_insert" else step] += max(0.0, t1 - t0)
        return out


def instrument(clock_ref: list[ChunkClock]) -> None:
    """Wrap what ``streaming.ingest`` calls so that each step of a chunk marks the clock in ``clock_ref[0]``."""
    from cryptoflow_dagster import dead_letters, lake, silver_trades
    from cryptoflow_dagster.streaming import ingest, intraday_gold

    def marked(name: str, fn, end: str | None = None):
        def wrapper(*args, **kwargs):
            clock_ref[0].mark(name)
            try:
                return fn(*args, **kwargs)
            finally:
                if end:
                    clock_ref[0].mark(end)
        return wrapper

    real_write = lake.write

    def execute_marked(con):
        def execute(sql, *args, **kwargs):
            head = " ".join(str(sql).split())[:40]
            if head.startswith("INSERT INTO bronze.trades_raw"):
                clock_ref[0].mark("bronze")
            elif head.startswith("INSERT INTO ops.ingested_files"):
                clock_ref[0].mark("ledger_insert")
            return con.execute(sql, *args, **kwargs)
        return execute

    def write(con, work, **kwargs):
        clock_ref[0].mark("write")

        def timed(c):
            clock_ref[0].mark("work")
            out = work(_Proxy(c, execute=execute_marked(c)))
            clock_ref[0].marks["work_end"] = time.perf_counter()  # the last attempt's end: COMMIT follows
            return out

        out = real_write(con, timed, **kwargs)
        clock_ref[0].mark("write_end")
        return out

    ingest.not_ingested = marked("pending", ingest.not_ingested)
    ingest.read_landing = marked("read", ingest.read_landing, end="read_end")
    ingest.lake = _Proxy(lake, write=write)
    ingest.dead_letters = _Proxy(dead_letters, insert=marked("dead", dead_letters.insert))
    ingest.silver_trades = _Proxy(silver_trades, insert_new=marked("silver", silver_trades.insert_new))
    ingest.intraday_gold = _Proxy(intraday_gold, refresh=marked("gold", intraday_gold.refresh))


# --- sampling the lake --------------------------------------------------------------------------------------------

SILVER_DAY = "SELECT count(*), sum(volume) FROM silver.trades WHERE day = DATE '{day}'"
STATS_24H = "SELECT * FROM gold.market_stats_24h"


def _median_ms(con, sql: str, times: int = 3) -> float:
    out = []
    for _ in range(times):
        t0 = time.perf_counter()
        con.execute(sql).fetchall()
        out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(out)


def sample(con, reader, settings, commit: int, day: Day) -> dict[str, Any]:
    from cryptoflow_dagster.maintenance import lake_upkeep as up

    t0 = time.perf_counter()
    health = up.lake_health(con)
    meta = up.METADATA
    deletes = dict(con.execute(
        f"""SELECT s.schema_name || '.' || t.table_name, count(*) FROM {meta}.ducklake_delete_file d
            JOIN {meta}.ducklake_table t ON t.table_id = d.table_id AND t.end_snapshot IS NULL
            JOIN {meta}.ducklake_schema s USING (schema_id)
            WHERE d.end_snapshot IS NULL GROUP BY ALL"""
    ).fetchall())
    names = dict(con.execute(
        f"""SELECT t.table_id, s.schema_name || '.' || t.table_name FROM {meta}.ducklake_table t
            JOIN {meta}.ducklake_schema s USING (schema_id) WHERE t.end_snapshot IS NULL"""
    ).fetchall())
    inlined = {names.get(k, str(k)): v for k, v in up.inlined_rows(con).items() if v}
    table_bytes = dict(con.execute(
        f"""SELECT s.schema_name || '.' || t.table_name, sum(f.file_size_bytes) FROM {meta}.ducklake_data_file f
            JOIN {meta}.ducklake_table t ON t.table_id = f.table_id AND t.end_snapshot IS NULL
            JOIN {meta}.ducklake_schema s USING (schema_id)
            WHERE f.end_snapshot IS NULL GROUP BY ALL"""
    ).fetchall())
    return {
        "commit": commit, "day_fraction": commit / day.commits,
        "live_files": health["live_files"], "delete_files": health["delete_files"],
        "inlined_rows": health["inlined_rows"], "snapshots": health["snapshots"],
        "catalog_bytes": health["catalog_bytes"], "files_awaiting_deletion": health["files_awaiting_deletion"],
        "disk_bytes": disk_bytes(Path(settings.data_path)),
        "live_files_per_table": {k[len("live_files."):]: v for k, v in health.items()
                                 if k.startswith("live_files.") and v},
        "delete_files_per_table": deletes, "inlined_rows_per_table": inlined,
        "live_bytes_per_table": {k: int(v) for k, v in table_bytes.items()},
        "read_silver_day_ms": _median_ms(reader, SILVER_DAY.format(day=DAY.isoformat())),
        "read_stats_24h_ms": _median_ms(reader, STATS_24H),
        "sample_s": time.perf_counter() - t0,
        "load_avg": os.getloadavg()[0],
    }


# --- one mode -----------------------------------------------------------------------------------------------------


def prefill_previous_day(con, trades: int) -> int:
    """The day before ``DAY``, already in the lake as a compacted day would be: ``trades`` trades in silver (ids below
    the day's, so none collides) and their 1-minute bars built by the stream's own refresh. Without it the 24-hour
    stats at the day's start would read a few minutes of bars instead of the ~1,440 per market they read at 23:59 and
    every minute of a platform that has run a day: the start of the measured day would be cheaper than any real one."""
    from cryptoflow_dagster import lake
    from cryptoflow_dagster.streaming import intraday_gold

    per_market = trades // len(MARKETS)
    prices = ", ".join(f"('{e}', '{m}', {PRICES[m]!r})" for e, m in MARKETS)
    start = DAY_START - timedelta(days=1)

    def work(c) -> None:
        c.execute(f"""
            INSERT INTO silver.trades BY NAME
            SELECT exchange, market, r - $n AS trade_id, $start + to_microseconds(CAST(r * 86400e6 / $n AS BIGINT)) AS ts,
                price * (1 + 0.01 * ((r * 7919) % 200 - 100) / 100) AS price, 0.001 * (1 + r % 17) AS volume,
                price * (1 + 0.01 * ((r * 7919) % 200 - 100) / 100) * 0.001 * (1 + r % 17) AS quote_volume,
                CASE WHEN r % 3 = 0 THEN 'sell' ELSE 'buy' END AS side, now() AS ingest_time, now() AS receive_time,
                'ws' AS source, CAST($start AS DATE) AS day
            FROM (VALUES {prices}) m(exchange, market, price), range($n) t(r)""", {"n": per_market, "start": start})
        c.execute(f"CREATE TEMP TABLE {intraday_gold.RANGES} AS SELECT exchange, market, $lo AS lo, $hi AS hi "
                  f"FROM (VALUES {prices}) m(exchange, market, price)",
                  {"lo": start, "hi": DAY_START - timedelta(minutes=1)})
        intraday_gold.refresh(c, datetime.now(timezone.utc))
        c.execute(f"DROP TABLE {intraday_gold.RANGES}")

    lake.write(con, work)
    return per_market * len(MARKETS)


def fill_day(work: Path, mode: str, commits: int, trades: int, maintain_every: int,
             stop_after: int | None = None) -> dict[str, Any]:
    home = work / f"home-{mode}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    os.environ["CRYPTOFLOW_HOME"] = str(home)
    from cryptoflow_core import landing_files
    from cryptoflow_core.settings import load_settings
    from cryptoflow_dagster import lake
    from cryptoflow_dagster.streaming import ingest
    from streaming_sensor.batches import MicroBatcher

    settings = load_settings()
    clock_ref = [ChunkClock()]
    instrument(clock_ref)
    day = Day(commits, trades)
    batcher = MicroBatcher(settings.landing_dir, "0b5e4c11d4a70001", settings.home / "spill")
    catalog_at = round(commits * CATALOG_UPKEEP_AT_S / 86_400)
    sample_at = {max(1, round(commits * k / SAMPLES)) for k in range(1, SAMPLES + 1)} | {1}
    per_chunk: list[dict[str, float]] = []
    samples: list[dict[str, Any]] = []
    landing_s = 0.0
    passes_file = work / f"passes-{mode}.jsonl"
    passes_file.unlink(missing_ok=True)
    maintainer = None
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        prefilled = prefill_previous_day(con, commits * trades)
        if mode != "off":  # lake maintenance in a process of its own, as the Dagster run is: it takes writers' turns
            maintainer = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.lake_day", str(work), "--maintainer", str(passes_file),
                 *(["--isolate-steps"] if mode == "on_isolated" else [])],
                stdin=subprocess.PIPE, text=True, env={**os.environ, "CRYPTOFLOW_HOME": str(home)},
                cwd=Path(__file__).resolve().parent.parent)
        reader = lake.connect(settings)
        started = time.monotonic()
        try:
            samples.append(sample(con, reader, settings, 0, day))
            for i in range(min(commits, stop_after or commits)):
                t0 = time.perf_counter()
                paths = day.land(batcher, i)
                landing_s += time.perf_counter() - t0
                files = [landing_files.parse(p, settings.landing_dir) for p in paths]
                clock_ref[0] = ChunkClock()
                t0, cpu0 = time.perf_counter(), time.process_time()
                result = ingest.ingest_pending(con, settings.landing_dir, "bench-lake-day", files=files)
                t1, cpu1 = time.perf_counter(), time.process_time()
                steps = clock_ref[0].steps(t0, t1)
                steps.update(total=t1 - t0, cpu=cpu1 - cpu0, silver_rows=result.silver_rows, at=time.time())
                per_chunk.append(steps)
                done = i + 1
                if maintainer is not None:
                    if done % maintain_every == 0:
                        maintainer.stdin.write(f"compact {done} {time.time()}\n")
                    if done == catalog_at:
                        maintainer.stdin.write(f"catalog {done} {time.time()}\n")
                    maintainer.stdin.flush()
                if done in sample_at:
                    samples.append(sample(con, reader, settings, done, day))
                if done % 50 == 0:
                    print(f"{mode}: {done}/{commits} commits, {time.monotonic() - started:.0f} s, last chunk "
                          f"{steps['total'] * 1000:.0f} ms, load {os.getloadavg()[0]:.1f}", file=sys.stderr,
                          flush=True)
            fill_s = time.monotonic() - started
            if maintainer is not None:  # the passes asked for go on; the contents are checked once they are done
                maintainer.stdin.close()
                maintainer.wait(timeout=3600)
                maintainer = None
            check = _check(con, day, prefilled)
        finally:
            reader.close()
            if maintainer is not None:
                maintainer.kill()
                maintainer.wait()
    passes = [json.loads(line) for line in passes_file.read_text().splitlines()] if passes_file.exists() else []
    return {"mode": mode, "commits": commits, "trades_per_commit": trades, "maintain_every": maintain_every,
            "catalog_upkeep_at": catalog_at if mode != "off" else None, "fill_s": fill_s, "landing_s": landing_s,
            "per_chunk": per_chunk, "samples": samples, "passes": passes, "check": check}


def maintainer(passes_file: Path, isolate: bool = False) -> int:
    """Lake maintenance for one lake (CRYPTOFLOW_HOME), a pass per line on stdin (``compact|catalog COMMIT TIME``).

    Like the Dagster runs (a run queue limited to one): one pass at a time; requests that arrive while a pass runs
    wait, and several waiting ones of a kind make one pass (``coalesced``). A JSON line per pass goes to
    ``passes_file``."""
    import queue
    import threading
    from dataclasses import asdict

    from cryptoflow_core.settings import load_settings
    from cryptoflow_dagster import lake
    from cryptoflow_dagster.maintenance import lake_upkeep as up

    requests: queue.Queue = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            requests.put(line.split())
        requests.put(None)

    threading.Thread(target=read, daemon=True).start()
    settings = load_settings()
    with lake.session(settings) as con, open(passes_file, "a") as out:
        ended = False
        while not ended:
            batch = [requests.get()]
            while True:
                try:
                    batch.append(requests.get_nowait())
                except queue.Empty:
                    break
            if None in batch:
                ended = True
                batch = [b for b in batch if b is not None]
            for kind in ("catalog", "compact"):
                wanted = [b for b in batch if b[0] == kind]
                if not wanted:
                    continue
                started = time.time()
                report, failed = up.UpkeepReport(), None
                # the pass's steps in order, as run_steps runs them, so that a failure names its step: a failed step
                # ends the pass (the Dagster run fails; the next pass starts from the first step again), unless
                # isolate: then the next step runs all the same
                for step in up.CATALOG_STEPS if kind == "catalog" else up.COMPACT_STEPS:
                    try:
                        report.add(up.run_steps(con, settings, [step]))
                    except Exception as exc:  # noqa: BLE001 (recorded, and the pass or the step ends as a run would)
                        failed = failed or []
                        failed.append({"step": step, "error": " ".join(str(exc).split())[:400]})
                        if not isolate:
                            break
                out.write(json.dumps({
                    "kind": kind, "commit": int(wanted[-1][1]), "requested_at": float(wanted[0][2]),
                    "started_at": started, "ended_at": time.time(), "coalesced": len(wanted), "failed": failed,
                    **{k: v for k, v in asdict(report).items() if v}}) + "\n")
                out.flush()
    return 0

def _check(con, day: Day, prefilled: int) -> dict[str, Any]:
    silver, keys = con.execute(
        f"SELECT count(*), count(DISTINCT (exchange, market, trade_id)) FROM silver.trades WHERE day = DATE '{DAY}'"
    ).fetchone()
    per_market = dict(((m, (lo, hi)) for m, lo, hi in con.execute(
        f"SELECT market, min(trade_id), max(trade_id) FROM silver.trades WHERE day = DATE '{DAY}' GROUP BY ALL"
    ).fetchall()))
    expected = {m: (1, n - 1) for m, n in day.next_id.items()}
    return {
        "trades_written": day.distinct(), "silver_rows": silver, "silver_distinct": keys,
        "lost": day.distinct() - keys, "doubled": silver - keys, "id_ranges_equal": per_market == expected,
        "bronze_rows": con.execute("SELECT count(*) FROM bronze.trades_raw").fetchone()[0],
        "bronze_expected": day.landed_readable,
        "dead_letters": con.execute("SELECT count(*) FROM bronze.dead_letters").fetchone()[0],
        "dead_letters_expected": day.dead,
        "ledger_files": con.execute("SELECT count(*) FROM ops.ingested_files").fetchone()[0],
        "stats_rows": con.execute("SELECT count(*) FROM gold.market_stats_24h").fetchone()[0],
        "bars": con.execute("SELECT count(*) FROM gold.ohlcv_1m_from_trades").fetchone()[0],
        "silver_in_other_days": con.execute(
            f"SELECT count(*) FROM silver.trades WHERE day <> DATE '{DAY}'").fetchone()[0],
        "silver_previous_day_prefilled": prefilled,
    }


# --- summaries ------------------------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def window(per_chunk: list[dict[str, float]], first: bool, share: float = 0.05) -> dict[str, Any]:
    n = max(1, round(len(per_chunk) * share))
    rows = per_chunk[:n] if first else per_chunk[-n:]
    totals = [r["total"] * 1000 for r in rows]
    return {"chunks": n, "median_ms": statistics.median(totals), "p95_ms": _pct(totals, 0.95),
            "p99_ms": _pct(totals, 0.99), "max_ms": max(totals),
            "cpu_median_ms": statistics.median(r["cpu"] * 1000 for r in rows),
            "steps_median_ms": {s: statistics.median(r[s] for r in rows) * 1000 for s in STEPS}}


def settings_bound(sample_: dict[str, Any], table: str, maintain_every: int, target_bytes: int) -> int:
    """The live files the settings allow a table at a sample: the files of the commits since the last pass (at most
    two passes' worth: one may be running), plus merged files of at least half the target size, plus one per tier
    left part-full. Each commit adds at most one file per table."""
    merged = -(-sample_["live_bytes_per_table"].get(table, 0) // (target_bytes // 2))
    return 2 * maintain_every + merged + 2


def summarize_mode(data: dict[str, Any]) -> dict[str, Any]:
    from cryptoflow_core.settings import load_settings
    from cryptoflow_dagster.maintenance import lake_upkeep as up

    start, end = window(data["per_chunk"], True), window(data["per_chunk"], False)
    first, last = data["samples"][1], data["samples"][-1]  # after the first commit; at the day's end
    passes = [p for p in data["passes"] if p["kind"] == "compact"]
    target = up.parse_size(load_settings().lake_target_file_size)
    over = sorted({(s["commit"], t, n, settings_bound(s, t, data["maintain_every"], target))
                   for s in data["samples"] for t, n in s["live_files_per_table"].items()
                   if n > settings_bound(s, t, data["maintain_every"], target)})
    return {
        "start": start, "end": end, "ratio_end_start": end["median_ms"] / start["median_ms"],
        "ratio_p95": end["p95_ms"] / start["p95_ms"], "ratio_p99": end["p99_ms"] / start["p99_ms"],
        "ratio_cpu": end["cpu_median_ms"] / start["cpu_median_ms"],
        "step_growth_ms": {s: end["steps_median_ms"][s] - start["steps_median_ms"][s] for s in STEPS},
        "end_state": {k: last[k] for k in ("live_files", "delete_files", "inlined_rows", "snapshots", "catalog_bytes",
                                            "disk_bytes", "files_awaiting_deletion", "live_files_per_table",
                                            "delete_files_per_table", "inlined_rows_per_table",
                                            "live_bytes_per_table")},
        "max_live_files": max(s["live_files"] for s in data["samples"]),
        "max_live_files_per_table": max(max(s["live_files_per_table"].values(), default=0) for s in data["samples"]),
        "samples_over_settings_bound": [list(o) for o in over],
        "read_silver_day_ms": {"start": first["read_silver_day_ms"], "end": last["read_silver_day_ms"],
                               "max": max(s["read_silver_day_ms"] for s in data["samples"][1:])},
        "read_stats_24h_ms": {"start": first["read_stats_24h_ms"], "end": last["read_stats_24h_ms"],
                              "max": max(s["read_stats_24h_ms"] for s in data["samples"][1:])},
        "load_avg_samples": [s["load_avg"] for s in data["samples"]],
        "maintenance": {
            "passes": len(passes), "requests": sum(p["coalesced"] for p in passes),
            "failed": sum(1 for p in passes if p["failed"]),
            "failed_steps": sorted({f["step"] for p in passes for f in p["failed"] or []}),
            "first_error": next((f["error"] for p in passes for f in p["failed"] or []), None),
            "seconds_total": sum(p["ended_at"] - p["started_at"] for p in passes),
            "seconds_median": statistics.median([p["ended_at"] - p["started_at"] for p in passes]) if passes else None,
            "seconds_max": max((p["ended_at"] - p["started_at"] for p in passes), default=None),
            "longest_turn_s": max((p.get("longest_turn_s", 0) for p in passes), default=None),
            "start_lag_s_max": max((p["started_at"] - p["requested_at"] for p in passes), default=None),
            "files_merged": sum(p.get("files_merged", 0) for p in passes),
            "files_rewritten": sum(p.get("files_rewritten", 0) for p in passes),
            "rows_flushed": sum(p.get("rows_flushed", 0) for p in passes),
            "snapshots_expired": sum(p.get("snapshots_expired", 0) for p in passes),
            "files_deleted": sum(p.get("files_deleted", 0) for p in passes),
            "turns": sum(p.get("turns", 0) for p in passes),
            "catalog_passes": [p for p in data["passes"] if p["kind"] == "catalog"],
        },
        "fill_s": data["fill_s"], "check": data["check"],
    }


# --- the picture ----------------------------------------------------------------------------------------------------


def plot(modes: dict[str, dict[str, Any]], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"off": "tab:red", "on": "tab:blue", "on_isolated": "tab:green"}
    fig, axes = plt.subplots(3, 2, figsize=(13, 12), constrained_layout=True)
    fig.suptitle(title, fontsize=11)
    ax_chunk, ax_steps, ax_files, ax_deletes, ax_snap, ax_read = axes.flat
    ax_snap2 = ax_snap.twinx()
    for mode, data in modes.items():
        c = colors[mode]
        pc = data["per_chunk"]
        n = len(pc)
        w = max(1, n // 50)  # windows of 2 % of the day
        xs, med, p95 = [], [], []
        for lo in range(0, n - w + 1, w):
            vals = [r["total"] * 1000 for r in pc[lo:lo + w]]
            xs.append((lo + w / 2) / n * 24)
            med.append(statistics.median(vals))
            p95.append(_pct(vals, 0.95))
        ax_chunk.plot(xs, med, color=c, label=f"maintenance {mode}: median per 2 % of the day")
        ax_chunk.plot(xs, p95, color=c, linestyle=":", label=f"maintenance {mode}: p95")
        cpu = [statistics.median(r["cpu"] * 1000 for r in pc[lo:lo + w]) for lo in range(0, n - w + 1, w)]
        ax_chunk.plot(xs, cpu, color=c, linestyle="--", label=f"maintenance {mode}: CPU ms (this process), median")
        for step, style in (("gold", "-"), ("silver", "--"), ("commit", ":"), ("pending_check", "-."),
                            ("turn_begin", (0, (1, 3)))):
            ys = [statistics.median(r[step] * 1000 for r in pc[lo:lo + w]) for lo in range(0, n - w + 1, w)]
            ax_steps.plot(xs, ys, color=c, linestyle=style, label=f"{mode}: {step}")
        s = data["samples"]
        hours = [x["day_fraction"] * 24 for x in s]
        ax_files.plot(hours, [x["live_files"] for x in s], color=c, marker="o", ms=3, label=f"{mode}: all tables")
        for table, style in (("silver.trades", "--"), ("bronze.trades_raw", ":")):
            ax_files.plot(hours, [x["live_files_per_table"].get(table, 0) for x in s], color=c, linestyle=style,
                          label=f"{mode}: {table}")
        ax_deletes.plot(hours, [x["delete_files"] for x in s], color=c, marker="o", ms=3, label=f"{mode}: delete files")
        ax_deletes.plot(hours, [x["inlined_rows"] / 100 for x in s], color=c, linestyle="--",
                        label=f"{mode}: inlined rows / 100")
        ax_snap.plot(hours, [x["snapshots"] for x in s], color=c, marker="o", ms=3, label=f"{mode}: snapshots")
        ax_snap2.plot(hours, [x["catalog_bytes"] / 1e6 for x in s], color=c, linestyle="--",
                      label=f"{mode}: catalog MB")
        ax_read.plot(hours[1:], [x["read_silver_day_ms"] for x in s[1:]], color=c, marker="o", ms=3,
                     label=f"{mode}: day of silver.trades")
        ax_read.plot(hours[1:], [x["read_stats_24h_ms"] for x in s[1:]], color=c, linestyle="--", marker="x", ms=3,
                     label=f"{mode}: gold.market_stats_24h")
    ax_chunk.set(title="per-chunk ingest time", ylabel="ms", xlabel="hour of the (compressed) day")
    ax_steps.set(title="per-chunk time by step (median per 2 % of the day)", ylabel="ms",
                 xlabel="hour of the (compressed) day")
    ax_files.set(title="live data files", xlabel="hour of the day", ylabel="files")
    ax_deletes.set(title="delete files and inlined rows (catalog)", xlabel="hour of the day")
    ax_snap.set(title="snapshots (solid) and catalog size (dashed, right axis)", xlabel="hour of the day",
                ylabel="snapshots")
    ax_snap2.set_ylabel("catalog MB")
    ax_read.set(title="read latency, median of 3", xlabel="hour of the day", ylabel="ms")
    for ax in (ax_chunk, ax_files, ax_deletes, ax_snap, ax_read):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    ax_steps.legend(fontsize=6, ncol=2)
    ax_steps.grid(alpha=0.3)
    lines, labels = ax_snap2.get_legend_handles_labels()
    ax_snap2.legend(lines, labels, fontsize=7, loc="center right")
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


# --- the framework's entry ------------------------------------------------------------------------------------------


def run(quick: bool, runs: int) -> Result:
    """Both modes once, side by side (a day is one repetition; ``runs`` is not used).

    The two fills run at the same time, each in a process of its own (the ``on`` one with its maintenance process):
    on the shared 2-core machine both see the same load, and the pair takes the time of one."""
    size = QUICK if quick else FULL
    commits, trades = size["commits"], size["trades"]
    every = maintenance_every(commits)
    compression = DEMO_COMMITS / commits
    result = Result(
        "lake_day",
        f"{'quick' if quick else 'full'}: one UTC day in {commits:,} commits x {trades:,} trades "
        f"({commits * trades:,} trades; the demo's day is {DEMO_COMMITS:,} commits x {DEMO_TRADES_PER_COMMIT}: "
        f"{compression:.0f}x fewer commits, {trades / DEMO_TRADES_PER_COMMIT:.0f}x the trades per commit), "
        f"maintenance every {every} commits ({every * 86_400 / commits / 60:.0f} min of the day), off and on side by "
        f"side; single figures (one day per mode), per-chunk windows of {max(1, round(commits * 0.05))} chunks",
    )
    work = Path(tempfile.mkdtemp(prefix="lake-day-"))
    modes: dict[str, dict[str, Any]] = {}
    load = [round(x, 2) for x in os.getloadavg()]
    t0 = time.monotonic()
    try:
        procs = {mode: subprocess.Popen(
            [sys.executable, "-m", "benchmarks.lake_day", str(work), "--mode", mode, "--commits", str(commits),
             "--trades", str(trades), "--maintain-every", str(every)],
            cwd=Path(__file__).resolve().parent.parent) for mode in RUN_MODES}
        for mode, proc in procs.items():
            if proc.wait(timeout=4 * 3600) != 0:
                raise RuntimeError(f"lake_day --mode {mode} exited {proc.returncode}")
            modes[mode] = json.loads((work / f"{mode}.json").read_text())
            modes[mode]["wall_s"] = time.monotonic() - t0
            modes[mode]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        loads = [x for m in modes.values() for x in summarize_load(m)]
        title = (f"lake_day: one day in {commits:,} commits x {trades:,} trades, maintenance every {every} commits; "
                 f"off and on side by side, load average (1 min) {min(loads):.1f}-{max(loads):.1f} on 2 cores")
        png = plot(modes, RESULTS / "lake_day.png", title)
    finally:
        for proc in locals().get("procs", {}).values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    for mode in RUN_MODES:
        s, d = summarize_mode(modes[mode]), modes[mode]
        tag = f"maintenance {mode}"
        on = mode != "off"
        result.add(f"{tag}: per-chunk ms, first 5 % of the day, median", "ms", [s["start"]["median_ms"]])
        result.add(f"{tag}: per-chunk ms, first 5 %, p95", "ms", [s["start"]["p95_ms"]])
        result.add(f"{tag}: per-chunk ms, first 5 %, p99", "ms", [s["start"]["p99_ms"]])
        result.add(f"{tag}: per-chunk ms, last 5 % of the day, median", "ms", [s["end"]["median_ms"]])
        result.add(f"{tag}: per-chunk ms, last 5 %, p95", "ms", [s["end"]["p95_ms"]])
        result.add(f"{tag}: per-chunk ms, last 5 %, p99", "ms", [s["end"]["p99_ms"]])
        result.add(f"{tag}: per-chunk end / start (medians)", "x", [s["ratio_end_start"]],
                   target=("<=", 1.2) if on else None, baseline="maintenance off" if on else None)
        result.add(f"{tag}: per-chunk CPU end / start (medians)", "x", [s["ratio_cpu"]])
        result.add(f"{tag}: live data files, day's end", "files", [s["end_state"]["live_files"]])
        result.add(f"{tag}: most live files of one table, any sample", "files", [s["max_live_files_per_table"]])
        result.add(f"{tag}: samples over the settings' file bound", "table-samples",
                   [len(s["samples_over_settings_bound"])], target=("<=", 0) if on else None)
        result.add(f"{tag}: delete files, day's end", "files", [s["end_state"]["delete_files"]])
        result.add(f"{tag}: snapshots, day's end", "snapshots", [s["end_state"]["snapshots"]])
        result.add(f"{tag}: catalog, day's end", "MB", [s["end_state"]["catalog_bytes"] / 1e6])
        result.add(f"{tag}: data on disk, day's end", "MB", [s["end_state"]["disk_bytes"] / 1e6])
        result.add(f"{tag}: read a day of silver.trades, start", "ms", [s["read_silver_day_ms"]["start"]])
        result.add(f"{tag}: read a day of silver.trades, end", "ms", [s["read_silver_day_ms"]["end"]])
        result.add(f"{tag}: read gold.market_stats_24h, start", "ms", [s["read_stats_24h_ms"]["start"]])
        result.add(f"{tag}: read gold.market_stats_24h, end", "ms", [s["read_stats_24h_ms"]["end"]])
        result.add(f"{tag}: trades lost + doubled in silver", "trades",
                   [s["check"]["lost"] + s["check"]["doubled"]], target=("<=", 0))
        if on:
            m = s["maintenance"]
            result.add(f"{tag}: maintenance passes failed / run", "passes", [m["failed"]],
                       note=f"of {m['passes']}; failed steps: {', '.join(m['failed_steps']) or 'none'}")
        result.details[mode] = {**s, "load_avg_at_end": d["load_avg_at_end"], "wall_s": d["wall_s"],
                                "landing_s": d["landing_s"], "passes": d["passes"], "samples": d["samples"]}
    result.details["load_avg_at_start"] = load
    result.details["size"] = {"commits": commits, "trades_per_commit": trades, "trades": commits * trades,
                              "maintain_every": every, "demo_commits": DEMO_COMMITS,
                              "demo_trades_per_commit": DEMO_TRADES_PER_COMMIT, "commit_compression": compression,
                              "duplicate_every": DUPLICATE_EVERY, "dead_letter_every": DEAD_LETTER_EVERY}
    result.details["png"] = str(png.relative_to(RESULTS.parent.parent))
    return result


def summarize_load(data: dict[str, Any]) -> list[float]:
    return [s["load_avg"] for s in data["samples"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lake_day", description=__doc__.split("\n\n")[0])
    parser.add_argument("work", nargs="?", type=Path)
    parser.add_argument("--mode", choices=MODES)
    parser.add_argument("--commits", type=int, default=FULL["commits"])
    parser.add_argument("--trades", type=int, default=FULL["trades"])
    parser.add_argument("--maintain-every", type=int)
    parser.add_argument("--stop-after", type=int, help="stop after this many commits (a probe of a size's cost)")
    parser.add_argument("--maintainer", type=Path, metavar="PASSES_JSONL", help="(internal) the maintenance process")
    parser.add_argument("--isolate-steps", action="store_true", help="(internal) a failed step does not end the pass")
    parser.add_argument("--plot", nargs=3, metavar=("OFF_JSON", "ON_JSON", "OUT_PNG"), type=Path)
    args = parser.parse_args(argv)
    if args.maintainer:
        return maintainer(args.maintainer, args.isolate_steps)
    if args.plot:
        off, on, out = args.plot
        plot({"off": json.loads(off.read_text()), "on": json.loads(on.read_text())}, out, "lake_day")
        return 0
    every = args.maintain_every or maintenance_every(args.commits)
    data = fill_day(args.work.resolve(), args.mode, args.commits, args.trades, every, args.stop_after)
    (args.work / f"{args.mode}.json").write_text(json.dumps(data, default=str))
    s = summarize_mode(data)
    print(json.dumps({"mode": args.mode, "start_ms": s["start"]["median_ms"], "end_ms": s["end"]["median_ms"],
                      "ratio": s["ratio_end_start"], "live_files": s["end_state"]["live_files"],
                      "snapshots": s["end_state"]["snapshots"], "check": s["check"], "fill_s": data["fill_s"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
