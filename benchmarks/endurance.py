"""Endurance (issue 17's proof): the whole platform at every market for an hour, sampled every 5 minutes.

``python -m benchmarks.endurance [--minutes 60] [--sample-minutes 5] [--rate 1000] ...`` (``make endurance
ENDURANCE_ARGS="..."``; docs/endurance.md) starts ``cryptoflow demo`` as a person does (simulator, sidecar, Dagster code
server + daemon + webserver, market-data API), with every market (``CRYPTOFLOW_UPBIT_MARKETS=ALL``,
``CRYPTOFLOW_BINANCE_SYMBOLS=TOP50``, resolved by the sidecar from the simulator's REST), the simulator's total trade
rate set (``CRYPTOFLOW_SIM_TOTAL_TRADE_RATE``) and lake maintenance on a short cron. After a warm-up it measures:

- **every sample window** (``--sample-minutes``): per-chunk ingest time (see :data:`CHUNK_TIMES`), silver freshness
  p50/p95/p99/max over every trade ingested in the window (``cryptoflow_dagster.slo.report``, as the freshness
  benchmark reports it), alert latency, live and delete files per table, snapshots, catalog size
  (``lake_upkeep.lake_health``), bytes on disk under the data directory, RSS and CPU of each process group of the
  demo (simulator, sidecar, code server, daemon, webserver, api, the demo itself) and of the Dagster run workers;
- **price shocks** every ``--shock-every`` seconds through the simulator's ``POST /_sim/shock``, on markets out of their
  alert cooldown, each matched to the Slack message it caused at the simulator's sink: latency from the shock request to
  the message (p50/p95/max), recall, and price-move messages no shock explains (false positives);
- **at the end**: silver against the simulator's ground truth over the measured window, every market (lost, extra,
  duplicated, altered: all 0), and an orderly stop (exit 0, no run failed or left in flight, nothing killed, no
  process left).

Freshness, chunk times and alert latency are computed after the stop, once every writer has ended (the SQLite
catalog is not opened read-only beside a committing writer for long queries, and every commit is then visible);
the lake's state is read live, with retries, at each sample.

Writes benchmarks/results/endurance.json (every sample) and endurance.png (the curves).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from benchmarks.common import CLK_TCK, REPO, RESULTS, Result, disk_bytes, write_result
from cryptoflow_dagster.cli.children import group_alive
from cryptoflow_dagster.cli.demo_process import DemoProcess

READY_LINE = "cryptoflow demo is ready"  # cryptoflow_dagster.cli.demo.READY_LINE (not imported: keeps this light)

# Issue 17's targets.
GROWTH_MAX = 1.2  # last sample / first sample: per-chunk time, silver p95, RSS
SILVER_P99_MAX_S = 8.0  # over the whole window
SILVER_P95_MAX_S = 5.0  # at ~250 markets
SHOCK_P95_MAX_S = 5.0

# A chunk is one lake transaction of the streaming run (ingest._ingest_chunk): its files share one ``ingested_at``,
# stamped before the landing files are read, and its commit is the first ingest snapshot at or after that stamp
# (cryptoflow_dagster.slo, which also reads the commits lake maintenance recorded before expiring their snapshots).
# So commit - ingested_at is the chunk's wall time: read, stage, wait for the writers' turn, write, commit. Nothing
# else records it (the run's logs and materializations carry counts, not times).
CHUNK_TIMES = """
    WITH snaps AS (
        SELECT snapshot_time FROM ({ingest_snapshots})
        UNION ALL SELECT committed_at FROM ops.ingest_commits WHERE committed_at >= $since - INTERVAL 1 DAY
    ), chunks AS (
        SELECT ingested_at, count(*) AS files, sum(rows) AS rows FROM ops.ingested_files
        WHERE ingested_at >= $since AND ingested_at < $until GROUP BY ingested_at
    )
    SELECT epoch_ms(ingested_at) / 1000.0 AS at_s, files, rows,
        epoch_ms((SELECT min(s.snapshot_time) FROM snaps s WHERE s.snapshot_time >= c.ingested_at)) / 1000.0
            - epoch_ms(ingested_at) / 1000.0 AS seconds
    FROM chunks c ORDER BY ingested_at
"""

PRICE_MOVE_TITLE = re.compile(r"^price move: (upbit|binance) (\S+):")
# the demo's progress line once every history day is in silver (cli/demo_history.py HistoryReporter)
HISTORY_IN_SILVER = re.compile(r"history: (\d+)/\1 days in silver")


# ---- pure parts (tests/test_benchmarks_endurance.py) ----------------------------------------------------------------
def window_stats(values: list[float]) -> dict[str, Any]:
    """count, p50, p95, p99, max of a whole window, percentiles by linear interpolation (DuckDB's quantile_cont,
    numpy's default), so they compare with ``cryptoflow slo``."""
    xs = sorted(float(v) for v in values if v is not None)
    if not xs:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}

    def q(p: float) -> float:
        pos = p * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    return {"count": len(xs), "p50": q(0.5), "p95": q(0.95), "p99": q(0.99), "max": xs[-1]}


@dataclass(frozen=True)
class Shock:
    exchange: str
    market: str
    pct: float
    at_s: float  # wall time the request was sent (epoch s)
    sim_at_ms: int | None = None  # when the simulator applied it


@dataclass(frozen=True)
class PriceMoveMessage:
    exchange: str
    market: str
    ts: float  # the sink's receive time (epoch s)
    alert_id: str | None = None


def price_move_messages(messages: list[dict]) -> list[PriceMoveMessage]:
    """The price-move alerts among the Slack sink's messages (rule from the message metadata, market from its title:
    alerting/market.py ``_alert`` and messages.py ``alert_message``)."""
    out = []
    for m in messages:
        payload = (m.get("metadata") or {}).get("event_payload") or {}
        match = PRICE_MOVE_TITLE.match(m.get("text") or "")
        if payload.get("rule") == "price_move" and match:
            out.append(PriceMoveMessage(match.group(1), match.group(2), float(m["ts"]), payload.get("alert_id")))
    return out


@dataclass
class ShockMatch:
    matched: list[tuple[Shock, PriceMoveMessage]]
    missed: list[Shock]
    unexplained: list[PriceMoveMessage]  # price-move alerts no shock caused

    @property
    def latencies_s(self) -> list[float]:
        return [m.ts - s.at_s for s, m in self.matched]

    @property
    def recall(self) -> float | None:
        n = len(self.matched) + len(self.missed)
        return len(self.matched) / n if n else None

    def summary(self) -> dict[str, Any]:
        return {"shocks": len(self.matched) + len(self.missed), "matched": len(self.matched),
                "recall": self.recall, "false_positives": len(self.unexplained),
                "latency_s": window_stats(self.latencies_s),
                "missed": [asdict(s) for s in self.missed],
                "unexplained": [asdict(m) for m in self.unexplained]}


def match_shocks(shocks: list[Shock], messages: list[PriceMoveMessage], since_s: float,
                 max_wait_s: float) -> ShockMatch:
    """Each shock to the first price-move message of its market within ``max_wait_s`` after the shock request, each
    message used once. Messages received since ``since_s`` that no shock explains are false positives."""
    pool = sorted((m for m in messages if m.ts >= since_s), key=lambda m: m.ts)
    used: set[int] = set()
    matched, missed = [], []
    for shock in sorted(shocks, key=lambda s: s.at_s):
        for i, m in enumerate(pool):
            if i in used or (m.exchange, m.market) != (shock.exchange, shock.market):
                continue
            if shock.at_s <= m.ts <= shock.at_s + max_wait_s:
                used.add(i)
                matched.append((shock, m))
                break
        else:
            missed.append(shock)
    return ShockMatch(matched, missed, [m for i, m in enumerate(pool) if i not in used])


def alert_stages(matched: list[tuple[Shock, PriceMoveMessage]],
                 alerts: dict[str, tuple[float, float, float | None]]) -> dict[str, dict[str, Any]]:
    """Where a shock's latency goes, from its gold.alerts row (alert_id -> event, triggered, delivered; epoch s):
    shock request -> the first trade past the threshold (the market's next trade after the shock: the simulator's
    pace, not the platform), that trade -> alert recorded (landing, ingest, commit, rule evaluation), recorded -> the
    message at the sink (the delivery sensor), and that trade -> the message (the platform's whole part)."""
    stages: dict[str, list[float]] = {"shock_to_event": [], "event_to_triggered": [], "triggered_to_slack": [],
                                      "event_to_slack": []}
    for shock, message in matched:
        row = alerts.get(message.alert_id or "")
        if row is None:
            continue
        event, triggered, _delivered = row
        stages["shock_to_event"].append(event - shock.at_s)
        stages["event_to_triggered"].append(triggered - event)
        stages["triggered_to_slack"].append(message.ts - triggered)
        stages["event_to_slack"].append(message.ts - event)
    return {name: window_stats(values) for name, values in stages.items()}


def growth(first: float | None, last: float | None) -> float | None:
    """last / first (the issue's "no drift" test); None when either is missing or the first is 0."""
    if first is None or last is None or first <= 0:
        return None
    return last / first


def summarize_samples(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """First window, last window and last/first of the figures that must not drift: per-chunk time (median), silver
    p95, and the RSS at the window's end of the long-lived processes (every group but the run workers: a leak
    accumulates there, while a run worker is a new process per run) and of everything, run workers included."""
    paths = {"chunk_median_s": ("chunks", "seconds", "p50"), "silver_p95_s": ("freshness", "silver", "p95"),
             "rss_long_lived_mib": ("processes", "long_lived", "rss_mib"),
             "rss_total_mib": ("processes", "total", "rss_mib")}
    out = {}
    for name, path in paths.items():
        def get(sample: dict[str, Any]) -> float | None:
            value: Any = sample
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            return value

        values = [get(s) for s in samples]
        present = [v for v in values if v is not None]
        first, last = (present[0], present[-1]) if present else (None, None)
        out[name] = {"first": first, "last": last, "last_over_first": growth(first, last),
                     "max": max(present) if present else None}
    return out


def compare_window(silver, truth) -> dict[str, dict[str, int]]:
    """silver.trades rows against the simulator's trades of one window, per market, in one pass (polars frames, both
    with exchange, market, trade_id, ts (ms), price, volume, side; truth holds exactly the window's trades, silver its
    rows in the same window). Counts per "exchange:market": truth, silver, lost, extra, duplicated, mismatched (time or
    side differ, or price / volume beyond 1e-12 relative: chaos/checks.py ``_same_trade``)."""
    import polars as pl

    key = ["exchange", "market", "trade_id"]
    dup = silver.group_by(key).len().filter(pl.col("len") > 1).group_by("exchange", "market").agg(
        (pl.col("len") - 1).sum().alias("duplicated"))
    once = silver.unique(subset=key, keep="first")
    joined = truth.join(once, on=key, how="full", suffix="_silver", coalesce=True)

    def rel(a: str, b: str) -> pl.Expr:
        return (pl.col(a) - pl.col(b)).abs() > 1e-12 * pl.max_horizontal(pl.col(a).abs(), pl.col(b).abs())

    both = pl.col("ts").is_not_null() & pl.col("ts_silver").is_not_null()
    per = joined.group_by("exchange", "market").agg(
        pl.col("ts").is_not_null().sum().alias("truth"),
        (pl.col("ts").is_not_null() & pl.col("ts_silver").is_null()).sum().alias("lost"),
        (pl.col("ts").is_null() & pl.col("ts_silver").is_not_null()).sum().alias("extra"),
        (both & ((pl.col("ts") != pl.col("ts_silver")) | (pl.col("side") != pl.col("side_silver"))
                 | rel("price", "price_silver") | rel("volume", "volume_silver"))).sum().alias("mismatched"),
    )
    rows = silver.group_by("exchange", "market").len().rename({"len": "silver"})
    per = per.join(rows, on=["exchange", "market"], how="full", coalesce=True).join(
        dup, on=["exchange", "market"], how="left").fill_null(0)
    return {f"{r['exchange']}:{r['market']}": {k: int(r[k]) for k in
                                               ("truth", "silver", "lost", "extra", "duplicated", "mismatched")}
            for r in per.sort("exchange", "market").iter_rows(named=True)}


# ---- the demo as a subprocess ------------------------------------------------------------------------------------
class Demo(DemoProcess):
    """The demo as the endurance run starts it: one history day, its output copied to ``endurance-demo.log``."""

    @classmethod
    def start_for(cls, home: Path, env: dict[str, str], history_start: date) -> Demo:
        return cls.start(home, "--history-start", history_start.isoformat(), "--ready-timeout", "600", env=env,
                         log=home / "endurance-demo.log")

    def wait_for_history(self, timeout_s: float) -> float | None:
        """Seconds waited until the demo reported every history day in silver (None: not within ``timeout_s``)."""
        started = time.monotonic()
        self.drain()
        # a later start of the same home launches none ("built on an earlier start"), nor one the webserver refused
        settled = ("history ready", "built on an earlier start", "not launched")
        while not any(HISTORY_IN_SILVER.search(ln) or any(s in ln for s in settled) for ln in self.seen):
            if time.monotonic() - started > timeout_s or self.process.poll() is not None:
                return None
            time.sleep(2)
            self.drain()
        return round(time.monotonic() - started, 1)

    def stop(self, timeout_s: float = 600) -> dict[str, Any]:
        """SIGINT, as Ctrl-C: the demo's own orderly stop. Returns how it went (see :func:`orderly_stop`)."""
        children = self.children()
        started = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - started
        time.sleep(1)
        self.drain()
        left = {name: pgid for name, pgid in children.items() if group_alive(pgid)}
        if code is None:  # not in order: end it, and everything it started, so nothing outlives the benchmark
            self.process.kill()
            self.process.wait()
        for pgid in left.values():
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        forced = [ln for ln in self.seen if "did not stop within" in ln or "did not end within" in ln
                  or "were marked canceled" in ln]
        return {"exit_code": code, "stop_s": round(took, 1), "forced": forced, "processes_left": left,
                "stopped_line": any("demo stopped" in ln for ln in self.seen)}


# ---- process figures, from /proc ---------------------------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, int, float, float, str]]:
    """pid -> (parent, process group, CPU seconds, RSS MiB, command line) of every live process."""
    page_mib = os.sysconf("SC_PAGE_SIZE") / 2**20
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        out[int(entry)] = (int(fields[1]), int(fields[2]), (int(fields[11]) + int(fields[12])) / CLK_TCK,
                           int(fields[21]) * page_mib, cmd)
    return out


class ProcessSampler:
    """Every ``every_s``: the RSS of each of the demo's process groups, and the CPU they used since the last look
    (per pid, so run workers that come and go are counted; a process that ends loses at most its last ``every_s``).
    Dagster run workers (``execute_run`` / ``execute_step``, in the code server's or daemon's group) are their own
    category; the demo process itself is "demo"."""

    def __init__(self, groups: dict[int, str], every_s: float = 5.0) -> None:
        self.groups, self.every_s = groups, every_s
        self.cpu_seen: dict[int, float] = {}
        self.ticks: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    RUN_WORKER = ("execute_run", "execute_step", "multiprocessing")

    @classmethod
    def category(cls, cmds: list[str], group: str) -> str:
        """``cmds``: the process's command line, then its parent's, and so on: a run worker's step processes
        (multiprocessing) are run workers too."""
        return "run_workers" if any(w in c for c in cmds for w in cls.RUN_WORKER) else group

    def look(self) -> dict[str, Any]:
        table = _proc_table()
        rss: dict[str, float] = {}
        cpu: dict[str, float] = {}
        count: dict[str, int] = {}
        seen = {}
        for pid, (_ppid, pgid, cpu_s, rss_mib, _cmd) in table.items():
            group = self.groups.get(pgid)
            if group is None:
                continue
            lineage, p = [], pid
            while p in table and table[p][1] == pgid and len(lineage) < 20:
                lineage.append(table[p][4])
                p = table[p][0]
            name = self.category(lineage, group)
            rss[name] = rss.get(name, 0.0) + rss_mib
            count[name] = count.get(name, 0) + 1
            cpu[name] = cpu.get(name, 0.0) + cpu_s - self.cpu_seen.get(pid, 0.0 if self.ticks else cpu_s)
            seen[pid] = cpu_s
        self.cpu_seen = seen
        tick = {"t": time.time(), "rss_mib": rss, "cpu_s": cpu, "processes": count}
        self.ticks.append(tick)
        return tick

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.look()

    def start(self) -> ProcessSampler:
        self.look()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def window(self, since: float, until: float) -> dict[str, Any]:
        """Per category: RSS at the window's last look and its max, CPU % of one core averaged over the window."""
        ticks = [t for t in self.ticks if since < t["t"] <= until]
        if not ticks:
            return {}
        names = sorted({n for t in ticks for n in t["rss_mib"]} | {n for t in ticks for n in t["cpu_s"]})
        span = max(1e-9, ticks[-1]["t"] - max(since, self.ticks[0]["t"]))
        out = {n: {"rss_mib": round(ticks[-1]["rss_mib"].get(n, 0.0), 1),
                   "rss_max_mib": round(max(t["rss_mib"].get(n, 0.0) for t in ticks), 1),
                   "cpu_pct": round(100 * sum(t["cpu_s"].get(n, 0.0) for t in ticks) / span, 1),
                   "processes": ticks[-1]["processes"].get(n, 0)} for n in names}
        lasting = [n for n in names if n != "run_workers"]
        out["long_lived"] = {"rss_mib": round(sum(ticks[-1]["rss_mib"].get(n, 0.0) for n in lasting), 1),
                             "rss_max_mib": round(max(sum(t["rss_mib"].get(n, 0.0) for n in lasting)
                                                      for t in ticks), 1),
                             "cpu_pct": round(100 * sum(t["cpu_s"].get(n, 0.0) for t in ticks for n in lasting)
                                              / span, 1)}
        out["total"] = {"rss_mib": round(sum(ticks[-1]["rss_mib"].values()), 1),
                        "rss_max_mib": round(max(sum(t["rss_mib"].values()) for t in ticks), 1),
                        "cpu_pct": round(100 * sum(sum(t["cpu_s"].values()) for t in ticks) / span, 1)}
        return out


# ---- the lake ----------------------------------------------------------------------------------------------------
def _retrying(settings, work, attempts: int = 40):
    """``work(con)`` on a read-only session; attaching the SQLite catalog fails while a writer commits, so retry."""
    import duckdb

    from cryptoflow_dagster import lake

    for attempt in range(1, attempts + 1):
        try:
            with lake.session(settings, read_only=True) as con:
                return work(con)
        except duckdb.Error as exc:
            if attempt == attempts or not lake.is_retryable(exc):
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")


def lake_state(con) -> dict[str, Any]:
    """lake_health (totals, live files per table) plus delete files per table."""
    from cryptoflow_dagster.maintenance import lake_upkeep as up

    health = up.lake_health(con)
    deletes = dict(con.execute(
        f"""SELECT s.schema_name || '.' || t.table_name, count(*) FROM {up.METADATA}.ducklake_delete_file d
            JOIN {up.METADATA}.ducklake_table t ON t.table_id = d.table_id AND t.end_snapshot IS NULL
            JOIN {up.METADATA}.ducklake_schema s USING (schema_id)
            WHERE d.end_snapshot IS NULL GROUP BY ALL"""
    ).fetchall())
    totals = {k: v for k, v in health.items() if not k.startswith("live_files.")}
    return {**totals,
            "live_files_per_table": {k[len("live_files."):]: v for k, v in health.items()
                                     if k.startswith("live_files.") and v},
            "delete_files_per_table": deletes}


def chunk_times(con, since: datetime, until: datetime) -> list[tuple[float, int, int, float | None]]:
    """(ingested at, files, rows, seconds to commit) of each streaming chunk ingested in [since, until)."""
    from cryptoflow_dagster import lake
    from cryptoflow_dagster.slo import INGEST_SNAPSHOTS

    files_table = con.execute(
        f"SELECT CAST(table_id AS VARCHAR) FROM ducklake_table_info('{lake.CATALOG}') "
        "WHERE table_name = 'ingested_files'").fetchone()[0]
    sql = CHUNK_TIMES.format(ingest_snapshots=INGEST_SNAPSHOTS.format(catalog=lake.CATALOG))
    return con.execute(sql, {"since": since, "until": until, "files_table": files_table}).fetchall()


def window_figures(con, since: datetime, until: datetime) -> dict[str, Any]:
    """Freshness (cryptoflow slo's report) and per-chunk ingest time of the trades and chunks ingested in the window."""
    from cryptoflow_dagster.slo import report

    chunks = chunk_times(con, since, until)
    span_min = max(1e-9, (until - since).total_seconds() / 60)
    return {"freshness": report(con, since, until),
            "chunks": {"count": len(chunks), "per_minute": round(len(chunks) / span_min, 1),
                       "files": window_stats([c[1] for c in chunks]), "rows": window_stats([c[2] for c in chunks]),
                       "seconds": window_stats([c[3] for c in chunks if c[3] is not None]),
                       "uncommitted": sum(1 for c in chunks if c[3] is None)}}


# ---- ground truth ------------------------------------------------------------------------------------------------
def fetch_truth(sim_url: str, markets: list[tuple[str, str]], start_ms: int, end_ms: int):
    """Every trade the simulator made in (start_ms, end_ms], every market, as one polars frame (ndjson per market)."""
    import httpx
    import polars as pl

    frames = []
    with httpx.Client(timeout=300) as client:
        for exchange, market in markets:
            r = client.get(f"{sim_url}/_sim/trades", params={"market": market, "exchange": exchange, "format": "ndjson",
                                                              "start": str(start_ms + 1), "end": str(end_ms + 1)})
            r.raise_for_status()
            if not r.content.strip():
                continue
            f = pl.read_ndjson(r.content)
            idcol = "sequential_id" if exchange == "upbit" else "trade_id"
            frames.append(f.select(pl.lit(exchange).alias("exchange"), pl.lit(market).alias("market"),
                                   pl.col(idcol).cast(pl.Int64).alias("trade_id"), pl.col("ts").cast(pl.Int64),
                                   pl.col("price").cast(pl.Float64), pl.col("volume").cast(pl.Float64),
                                   pl.col("side").cast(pl.Utf8)))
    schema = {"exchange": pl.Utf8, "market": pl.Utf8, "trade_id": pl.Int64, "ts": pl.Int64, "price": pl.Float64,
              "volume": pl.Float64, "side": pl.Utf8}
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)


def silver_window(con, start_ms: int, end_ms: int):
    import polars as pl

    return pl.from_arrow(con.execute(
        "SELECT exchange, market, trade_id, epoch_ms(ts) AS ts, price, volume, side FROM silver.trades "
        "WHERE ts > make_timestamptz($lo * 1000) AND ts <= make_timestamptz($hi * 1000) "
        "AND day BETWEEN CAST(make_timestamptz($lo * 1000) AS DATE) AND CAST(make_timestamptz($hi * 1000) AS DATE)",
        {"lo": start_ms, "hi": end_ms}).to_arrow_table())


# ---- the rate, beside the one real rate the simulator's recorded data holds ----------------------------------------
def recorded_real_rate() -> dict[str, Any] | None:
    """Trades/s of the one real trade stream recorded with the simulator (Binance TRXUSDT, 2025-03-04, PROVENANCE.md):
    no recorded per-market volumes exist for the other markets (exchange_sim/universe.py)."""
    path = REPO / "exchange_sim" / "recorded" / "binance" / "ws_trades_TRXUSDT_spot_2025-03-04.csv"
    if not path.exists():
        return None
    with open(path) as fh:
        next(fh)
        times = [int(line.split(",", 4)[3]) for line in fh if line.strip()]
    span_s = (max(times) - min(times)) / 1e6
    return {"market": "binance:TRXUSDT", "recorded": "2025-03-04", "trades": len(times), "span_s": round(span_s, 1),
            "trades_per_s": round(len(times) / span_s, 2)}


# ---- the run -----------------------------------------------------------------------------------------------------
@dataclass
class Options:
    minutes: float = 60.0
    sample_minutes: float = 5.0
    rate: float = 1000.0
    upbit: str = "ALL"
    binance: str = "TOP50"
    maintenance_cron: str = "*/2 * * * *"
    shock_every_s: float = 60.0
    shock_pct: float = 8.0
    shock_markets: str = ""  # comma-separated exchange:market; empty: every market, busiest first
    alert_wait_s: float = 120.0
    warmup_s: float = 90.0
    history_wait_s: float = 900.0
    settle_s: float = 600.0  # at most this long after the window for the platform to ingest it and send its alerts
    proc_every_s: float = 5.0
    home: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)


def _env(opts: Options, home: Path) -> dict[str, str]:
    upbit = opts.upbit
    if upbit.upper().startswith("TOP"):
        upbit = ",".join(upbit_top(int(upbit[3:])))
    env = {**os.environ, "CRYPTOFLOW_HOME": str(home), "CRYPTOFLOW_UPBIT_MARKETS": upbit,
           "CRYPTOFLOW_BINANCE_SYMBOLS": opts.binance,
           "CRYPTOFLOW_SIM_TOTAL_TRADE_RATE": str(opts.rate), "CRYPTOFLOW_LAKE_MAINTENANCE_CRON": opts.maintenance_cron,
           **opts.extra_env}
    env.pop("DAGSTER_HOME", None)
    return env


def upbit_top(n: int) -> list[str]:
    """The platform takes ALL or codes for Upbit, so ``TOP<n>`` is given by name: the simulator's first n listed KRW
    markets, and past its listing (105 markets, recorded in 2021) synthetic ``KRW-W000``... markets, which the simulator
    serves when asked for by name (as benchmarks/width.py does), to reach the ~200 Upbit lists today."""
    from exchange_sim import universe

    listed = list(universe.resolve("upbit", ("ALL",)))[:n]
    return listed + [f"KRW-W{i:03d}" for i in range(n - len(listed))]


class ShockPlan:
    """Which market to shock next: in the given order (default: busiest first, so the alert's first shocked trade
    comes soon), skipping a market whose price-move alert could still be in cooldown or whose move window still holds
    its last shock (the platform would rightly stay silent: that is not a miss to measure)."""

    def __init__(self, markets: list[tuple[str, str]], rules, pct: float) -> None:
        self.markets, self.pct = markets, pct
        self.rules = {m: rules.for_market(*m) for m in markets}
        self.last: dict[tuple[str, str], float] = {}
        self.sign = 1
        self.next_i = 0

    def quiet_s(self, market: tuple[str, str]) -> float:
        r = self.rules[market]
        move = r.get("price_move") or {}
        return r.cooldown_s + float(move.get("window_s", 300)) + 30

    def pick(self, now: float) -> tuple[str, str, float] | None:
        for k in range(len(self.markets)):
            m = self.markets[(self.next_i + k) % len(self.markets)]
            move = self.rules[m].get("price_move")
            if move is None or now - self.last.get(m, -1e12) < self.quiet_s(m):
                continue
            self.next_i = (self.next_i + k + 1) % len(self.markets)
            self.last[m] = now
            self.sign = -self.sign
            return m[0], m[1], self.sign * max(self.pct, 2 * move["pct"])
        return None


def drive(opts: Options) -> dict[str, Any]:
    """Run the platform, sample it, shock it, stop it; return everything measured (see the module docstring). The
    home is ``opts.home`` (kept) or a temporary directory (removed)."""
    if opts.home is not None:
        opts.home.mkdir(parents=True, exist_ok=True)
        return _drive(opts, opts.home)
    with tempfile.TemporaryDirectory(prefix="bench-endurance-") as tmp:
        return _drive(opts, Path(tmp))


def _drive(opts: Options, home: Path) -> dict[str, Any]:
    from cryptoflow_core import market_list
    from cryptoflow_core.settings import load_settings
    from cryptoflow_dagster.alerting.hooks import rules_for
    from exchange_sim.testing import SimHandle

    env = _env(opts, home)
    settings = load_settings(env)
    history_start = datetime.now(timezone.utc).date() - timedelta(days=1)
    details: dict[str, Any] = {"options": {**asdict(opts), "home": str(home)}, "history_start": str(history_start),
                               "started_epoch": time.time()}
    t_launch = time.monotonic()
    demo = Demo.start_for(home, env, history_start)
    sampler = None
    try:
        demo.wait_for(READY_LINE, timeout_s=900)
        demo.wait_for("Press Ctrl-C", timeout_s=60)
        details["ready_s"] = round(time.monotonic() - t_launch, 1)
        print(f"   demo ready after {details['ready_s']:.0f} s; warm-up {opts.warmup_s:.0f} s", flush=True)
        sim = SimHandle("127.0.0.1", demo.sim_port, demo.process)
        status = sim.status()
        # the markets the platform follows, as the sidecar resolved them from the simulator's REST (market_list)
        markets = market_list.all_configured(load_settings({**env, **sim.env()}))
        rates = status["live_rates"]
        details["markets"] = {"upbit": sum(1 for e, _ in markets if e == "upbit"),
                              "binance": sum(1 for e, _ in markets if e == "binance"), "total": len(markets),
                              "listed_by_simulator": len(rates)}
        streamed = sum(rates.get(f"{e}:{m}", 0.0) for e, m in markets)
        details["rate"] = {"set_total_per_s": opts.rate, "sim_live_rates_sum_per_s": round(sum(rates.values()), 2),
                           "streamed_markets_rate_per_s": round(streamed, 2),
                           "busiest": sorted(rates.items(), key=lambda kv: -kv[1])[:5],
                           "thinnest": sorted(rates.items(), key=lambda kv: kv[1])[:3],
                           "real_reference": recorded_real_rate(),
                           "sim_rate_of_reference": rates.get("binance:TRXUSDT")}
        groups = {pgid: name for name, pgid in demo.children().items()}
        groups[demo.process.pid] = "demo"
        sampler = ProcessSampler(groups, opts.proc_every_s).start()
        if opts.shock_markets:
            shock_markets = [tuple(m.split(":", 1)) for m in opts.shock_markets.split(",") if m.strip()]
        else:
            shock_markets = sorted(markets, key=lambda m: -rates.get(f"{m[0]}:{m[1]}", 0.0))
        plan = ShockPlan(shock_markets, rules_for(settings), opts.shock_pct)
        time.sleep(opts.warmup_s)
        # The first-start history backfill competes with the stream while it runs: the first window is the baseline
        # of the drift figures, so measuring starts once its days are in silver (gold follows in the background).
        details["history_wait_s"] = demo.wait_for_history(opts.history_wait_s)

        since = datetime.now(timezone.utc)
        t0 = time.time()
        end = t0 + opts.minutes * 60
        step = opts.sample_minutes * 60
        boundaries = [t0 + step * (i + 1) for i in range(int(round(opts.minutes / opts.sample_minutes)))]
        boundaries[-1] = end
        shocks: list[Shock] = []
        live: list[dict[str, Any]] = []
        next_shock = t0 + min(opts.shock_every_s, 30.0)
        beat0 = _messages(settings)
        for i, boundary in enumerate(boundaries):
            while (now := time.time()) < boundary:
                if now >= next_shock and now < end - opts.alert_wait_s:
                    pick = plan.pick(now)
                    if pick:
                        at = time.time()
                        sim_at = sim.shock(pick[1], pick[2], exchange=pick[0])
                        shocks.append(Shock(pick[0], pick[1], pick[2], at, sim_at))
                    next_shock += opts.shock_every_s
                time.sleep(max(0.0, min(1.0, boundary - time.time())))
            live.append(_live_sample(settings, home, boundary, demo, sampler, step))
            _print_live(i, live[-1], shocks)
        until = datetime.now(timezone.utc)
        beat1 = _messages(settings)
        details["sidecar_messages_per_s"] = round((beat1 - beat0) / (time.time() - t0), 1) if beat0 is not None \
            and beat1 is not None else None
        # The window's last files get ingested and its shocks' alerts delivered (or their wait runs out) before the
        # ground truth is taken, while the simulator still runs (its shocks live in its memory) and before the stop:
        # a file the stop leaves in landing is not lost (the next start ingests it) but would count as lost here.
        details["catch_up"] = wait_ingested(settings, since, until, opts.settle_s)
        details["catch_up"]["alerts_waited_s"] = wait_alerts(sim, shocks, t0, opts.alert_wait_s)
        messages = sim.slack_messages()
        start_ms, end_ms = int(since.timestamp() * 1000), int(until.timestamp() * 1000) - 2_000
        truth = fetch_truth(demo.sim, markets, start_ms, end_ms)
        details["history"] = [ln for ln in demo.seen if "history" in ln.lower()][-10:]
    finally:
        if sampler is not None:
            sampler.stop()
        stop = demo.stop()
    details["stop"] = stop
    details["history_backfill"] = _history_outcome(home)

    # Read once every writer is stopped.
    def final(con) -> dict[str, Any]:
        windows = []
        for i, boundary in enumerate(boundaries):
            lo = since if i == 0 else datetime.fromtimestamp(boundaries[i - 1], timezone.utc)
            windows.append(window_figures(con, lo, datetime.fromtimestamp(boundary, timezone.utc)))
        whole = window_figures(con, since, until)
        alerts = {r[0]: r[1:] for r in con.execute(
            "SELECT alert_id, epoch_ms(event_time) / 1000.0, epoch_ms(triggered_at) / 1000.0, "
            "epoch_ms(delivered_at) / 1000.0 FROM gold.alerts WHERE rule = 'price_move'").fetchall()}
        return {"windows": windows, "whole": whole, "silver": silver_window(con, start_ms, end_ms),
                "alerts": alerts}

    got = _retrying(load_settings(env), final)
    samples = []
    for i, (w, lv) in enumerate(zip(got["windows"], live)):
        samples.append({"window": i, "minutes": round((boundaries[i] - t0) / 60, 2), **w, **lv})
    match = match_shocks(shocks, price_move_messages(messages), t0, opts.alert_wait_s)
    compared = compare_window(got["silver"], truth)
    totals = {k: sum(v[k] for v in compared.values()) for k in ("truth", "silver", "lost", "extra", "duplicated",
                                                                "mismatched")}
    details.update({
        "since": since.isoformat(), "until": until.isoformat(), "samples": samples, "whole_window": got["whole"],
        "summary": summarize_samples(samples),
        "shocks": {**match.summary(), "stages_s": alert_stages(match.matched, got["alerts"]),
                   "list": [asdict(s) for s in shocks]},
        "ground_truth": {"window_ms": [start_ms, end_ms], "totals": totals,
                         "markets_differing": {k: v for k, v in compared.items()
                                               if v["lost"] or v["extra"] or v["duplicated"] or v["mismatched"]},
                         "markets_compared": len(compared)},
    })
    return details


def wait_ingested(settings, since: datetime, until: datetime, timeout_s: float) -> dict[str, Any]:
    """Wait until every trade landing file the sidecar wrote up to the window's end (and its last flush after it) is
    in ops.ingested_files (the platform's own ``not_ingested``); returns how long it took and what was left."""
    from cryptoflow_core import landing_files
    from cryptoflow_dagster.streaming.ingest import not_ingested

    started = time.monotonic()
    last_flush = until + timedelta(seconds=5)  # the sidecar flushes every second: its files cover the window's end
    while True:
        time.sleep(max(0.0, (last_flush - datetime.now(timezone.utc)).total_seconds()) + 2)
        files = [f for f in landing_files.list_files(settings.landing_dir, channels=("trade",))
                 if since - timedelta(minutes=1) <= f.written_at <= last_flush]
        pending = _retrying(settings, lambda con: len(not_ingested(con, files, since - timedelta(minutes=2))))
        waited = time.monotonic() - started
        if pending == 0 or waited > timeout_s:
            return {"files": len(files), "pending": pending, "waited_s": round(waited, 1)}


def wait_alerts(sim, shocks: list[Shock], since_s: float, max_wait_s: float) -> float:
    """Wait until every shock has its Slack message, or its ``max_wait_s`` has passed; returns the seconds waited."""
    started = time.monotonic()
    deadline = max((s.at_s for s in shocks), default=0.0) + max_wait_s
    while time.time() < deadline:
        if not match_shocks(shocks, price_move_messages(sim.slack_messages()), since_s, max_wait_s).missed:
            break
        time.sleep(2)
    return round(time.monotonic() - started, 1)


def _messages(settings) -> int | None:
    try:
        beat = json.loads(settings.heartbeat_path.read_text())
        return int(beat["counters"]["messages"])
    except (OSError, ValueError, KeyError):
        return None


def _live_sample(settings, home: Path, boundary: float, demo: Demo, sampler: ProcessSampler, step: float) -> dict:
    t = time.perf_counter()
    try:
        state = _retrying(settings, lake_state)
    except Exception as exc:  # noqa: BLE001 - a sample that could not read the lake is recorded, not fatal
        state = {"error": str(exc)[:300]}
    demo.drain()
    restarted = [ln for ln in demo.seen if "restarted " in ln]
    return {"at": datetime.fromtimestamp(boundary, timezone.utc).isoformat(timespec="seconds"),
            "lake": state, "disk_bytes": disk_bytes(home), "processes": sampler.window(boundary - step, boundary + 1),
            "restarts_so_far": len(restarted), "load_avg": os.getloadavg()[0],
            "sample_s": round(time.perf_counter() - t, 2)}


def _print_live(i: int, s: dict[str, Any], shocks: list[Shock]) -> None:
    lake = s["lake"]
    total = s["processes"].get("total", {})
    print(f"   sample {i + 1} at {s['at']}: live files {lake.get('live_files')}, delete files "
          f"{lake.get('delete_files')}, snapshots {lake.get('snapshots')}, catalog "
          f"{(lake.get('catalog_bytes') or 0) / 1e6:.1f} MB, disk {s['disk_bytes'] / 1e6:.0f} MB, RSS "
          f"{total.get('rss_mib')} MiB, CPU {total.get('cpu_pct')} %, shocks {len(shocks)}, load {s['load_avg']:.1f}",
          flush=True)


def _history_outcome(home: Path) -> dict[str, Any]:
    """The first-start history backfill the demo launched: its id, status and runs (from the Dagster instance)."""
    import dagster as dg

    state_file = home / "demo-history.json"
    out: dict[str, Any] = {"state": json.loads(state_file.read_text()) if state_file.exists() else None}
    backfill_id = (out["state"] or {}).get("backfill_id")
    try:
        with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
            records = instance.get_run_records()
            by_status: dict[str, int] = {}
            for r in records:
                key = f"{r.dagster_run.job_name}:{r.dagster_run.status.value}"
                by_status[key] = by_status.get(key, 0) + 1
            out["runs_by_job_and_status"] = by_status
            bad = [r for r in records if r.dagster_run.status in (dg.DagsterRunStatus.FAILURE,
                                                                  dg.DagsterRunStatus.STARTED,
                                                                  dg.DagsterRunStatus.STARTING,
                                                                  dg.DagsterRunStatus.CANCELING)]
            out["runs_not_in_order"] = [f"{r.dagster_run.job_name} {r.dagster_run.run_id} {r.dagster_run.status.value}"
                                        for r in bad]
            if backfill_id:
                backfill = instance.get_backfill(backfill_id)
                out["backfill_status"] = backfill.status.value if backfill else None
                runs = [r for r in records if r.dagster_run.tags.get("dagster/backfill") == backfill_id]
                out["backfill_runs"] = {s: sum(1 for r in runs if r.dagster_run.status.value == s)
                                        for s in {r.dagster_run.status.value for r in runs}}
                spans = [(r.start_time, r.end_time) for r in runs if r.start_time and r.end_time]
                out["backfill_run_seconds"] = round(sum(e - s for s, e in spans), 1)
    except Exception as exc:  # noqa: BLE001 - a report, never a reason to lose the run's figures
        out["error"] = str(exc)[:300]
    return out


# ---- figures, JSON, plot -----------------------------------------------------------------------------------------
def to_result(details: dict[str, Any], size: str) -> Result:
    result = Result("endurance", size, started=details.get("started_epoch", time.time()))
    s, whole, shocks = details["summary"], details["whole_window"], details["shocks"]
    n = details["markets"]["total"]
    first_last = "first window is the baseline"
    for key, label, target in (
            ("chunk_median_s", "per-chunk ingest time (median)", ("<=", GROWTH_MAX)),
            ("silver_p95_s", "silver freshness p95", ("<=", GROWTH_MAX)),
            ("rss_long_lived_mib", "RSS of the long-lived processes", ("<=", GROWTH_MAX)),
            ("rss_total_mib", "RSS with the run workers in flight", None)):
        fig = s[key]
        result.add(f"{label}: last window / first", "x", [fig["last_over_first"]] if fig["last_over_first"] else [],
                   target, first_last, f"first {_fmt(fig['first'])}, last {_fmt(fig['last'])}")
    silver = whole["freshness"]["silver"]
    result.add("silver freshness p99 (whole window)", "s", [silver["p99"]] if silver["p99"] is not None else [],
               ("<=", SILVER_P99_MAX_S), None, f"{silver['count']} trades, max {_fmt(silver['max'])} s")
    result.add(f"silver freshness p95 (whole window, {n} markets)", "s",
               [silver["p95"]] if silver["p95"] is not None else [], ("<=", SILVER_P95_MAX_S), None,
               f"p50 {_fmt(silver['p50'])} s")
    lat = shocks["latency_s"]
    result.add("price shock -> Slack p95", "s", [lat["p95"]] if lat["p95"] is not None else [],
               ("<=", SHOCK_P95_MAX_S), None,
               f"{shocks['matched']} of {shocks['shocks']} shocks; p50 {_fmt(lat['p50'])}, max {_fmt(lat['max'])}; "
               f"first shocked trade -> Slack p95 {_fmt(shocks['stages_s']['event_to_slack']['p95'])}")
    result.add("shock recall", "share", [shocks["recall"]] if shocks["recall"] is not None else [], (">=", 1.0))
    result.add("price-move alerts without a shock", "alerts", [shocks["false_positives"]], ("<=", 0))
    gt = details["ground_truth"]["totals"]
    result.add("trades lost (silver vs simulator, whole window)", "trades", [gt["lost"]], ("<=", 0), None,
               f"{gt['truth']} trades over {details['ground_truth']['markets_compared']} markets")
    result.add("trades duplicated, extra or altered", "trades", [gt["duplicated"] + gt["extra"] + gt["mismatched"]],
               ("<=", 0))
    stop = details["stop"]
    orderly = (stop["exit_code"] == 0 and not stop["forced"] and not stop["processes_left"]
               and not details["history_backfill"].get("runs_not_in_order"))
    result.add("orderly stop (1 = exit 0, nothing forced, failed or left)", "bool", [1.0 if orderly else 0.0],
               (">=", 1.0), None, f"stop took {stop['stop_s']} s")
    result.add("simulator live rate (sum over markets)", "trades/s", [details["rate"]["sim_live_rates_sum_per_s"]],
               None, None, f"set {details['rate']['set_total_per_s']:g}/s + the per-market floor")
    result.details = details
    return result


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def plot(details: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = details["samples"]
    x = [s["minutes"] for s in samples]
    fig, axes = plt.subplots(3, 2, figsize=(13, 12), constrained_layout=True)
    fig.suptitle(f"endurance: {details['markets']['total']} markets, {details['rate']['sim_live_rates_sum_per_s']:g} "
                 f"trades/s, maintenance {details['options']['maintenance_cron']}", fontsize=11)
    ax_chunk, ax_fresh, ax_files, ax_snap, ax_rss, ax_cpu = axes.flat
    for q, style in (("p50", "-"), ("p95", "--"), ("max", ":")):
        ax_chunk.plot(x, [s["chunks"]["seconds"][q] for s in samples], linestyle=style, marker="o", ms=3,
                      label=f"per-chunk time {q}")
    for q, style in (("p50", "-"), ("p95", "--"), ("p99", "-."), ("max", ":")):
        ax_fresh.plot(x, [s["freshness"]["silver"][q] for s in samples], linestyle=style, marker="o", ms=3,
                      label=f"silver {q}")
    ax_fresh.plot(x, [s["freshness"]["price_shock_delivered"]["p95"] for s in samples], color="tab:red", marker="x",
                  label="price-move alert delivered p95 (from event)")
    ax_files.plot(x, [s["lake"].get("live_files") for s in samples], marker="o", ms=3, label="live files, all tables")
    for table in ("silver.trades", "bronze.trades_raw"):
        ax_files.plot(x, [s["lake"].get("live_files_per_table", {}).get(table, 0) for s in samples], linestyle="--",
                      label=table)
    ax_files.plot(x, [s["lake"].get("delete_files") for s in samples], linestyle=":", label="delete files")
    ax_snap.plot(x, [s["lake"].get("snapshots") for s in samples], marker="o", ms=3, label="snapshots")
    ax_snap2 = ax_snap.twinx()
    ax_snap2.plot(x, [(s["lake"].get("catalog_bytes") or 0) / 1e6 for s in samples], color="tab:orange",
                  linestyle="--", label="catalog MB")
    ax_snap2.plot(x, [s["disk_bytes"] / 1e8 for s in samples], color="tab:green", linestyle=":",
                  label="data dir, 100 MB")
    names = sorted({n for s in samples for n in s["processes"]} - {"total"})
    for n in names + ["total"]:
        ax_rss.plot(x, [s["processes"].get(n, {}).get("rss_mib") for s in samples], marker="o", ms=2, label=n)
        ax_cpu.plot(x, [s["processes"].get(n, {}).get("cpu_pct") for s in samples], marker="o", ms=2, label=n)
    ax_chunk.set(title="per-chunk ingest time (s)", xlabel="minutes")
    ax_fresh.set(title="silver freshness per window (s after event time)", xlabel="minutes")
    ax_files.set(title="lake files", xlabel="minutes")
    ax_snap.set(title="snapshots; catalog MB and data directory (right)", xlabel="minutes")
    ax_rss.set(title="RSS per process group (MiB)", xlabel="minutes")
    ax_cpu.set(title="CPU per process group (% of one core)", xlabel="minutes")
    for ax in axes.flat:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    lines, labels = ax_snap2.get_legend_handles_labels()
    ax_snap2.legend(lines, labels, fontsize=7, loc="lower right")
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def run(quick: bool, runs: int) -> Result:
    """``python -m benchmarks.run --only endurance``: the hour (``--quick``: 10 minutes sampled every 2)."""
    opts = Options(minutes=10.0, sample_minutes=2.0) if quick else Options()
    details = drive(opts)
    plot(details, RESULTS / "endurance.png")
    return to_result(details, _size(opts, details))


def _size(opts: Options, details: dict[str, Any]) -> str:
    return (f"{opts.minutes:g} min at {details['markets']['total']} markets ({opts.upbit} Upbit, {opts.binance} "
            f"Binance), {opts.rate:g} trades/s total, sampled every {opts.sample_minutes:g} min, maintenance "
            f"'{opts.maintenance_cron}', a shock every {opts.shock_every_s:g} s; `cryptoflow demo` (simulator, "
            f"sidecar, Dagster code server + daemon + webserver, API)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.endurance", description=__doc__.split("\n\n")[0])
    d = Options()
    p.add_argument("--minutes", type=float, default=d.minutes, help="measured time (default 60)")
    p.add_argument("--sample-minutes", type=float, default=d.sample_minutes, help="sample window (default 5)")
    p.add_argument("--rate", type=float, default=d.rate, help="simulator's total live trades/s (default 1000)")
    p.add_argument("--upbit", default=d.upbit,
                   help="CRYPTOFLOW_UPBIT_MARKETS (default ALL: the simulator's 105; TOP<n>: its first n by name, "
                        "synthetic KRW-W### markets past 105, e.g. TOP200 with --binance TOP50 for 250 markets)")
    p.add_argument("--binance", default=d.binance, help="CRYPTOFLOW_BINANCE_SYMBOLS (default TOP50)")
    p.add_argument("--maintenance-cron", default=d.maintenance_cron, help="CRYPTOFLOW_LAKE_MAINTENANCE_CRON")
    p.add_argument("--shock-every", type=float, default=d.shock_every_s, help="seconds between shocks (default 60)")
    p.add_argument("--shock-pct", type=float, default=d.shock_pct,
                   help="shock size in %% (at least twice the market's price-move threshold; default 8)")
    p.add_argument("--shock-markets", default=d.shock_markets,
                   help="exchange:market,... to shock in turn (default: every market, busiest first)")
    p.add_argument("--alert-wait", type=float, default=d.alert_wait_s,
                   help="seconds a shock's Slack message may take to count as its (default 120)")
    p.add_argument("--warmup", type=float, default=d.warmup_s, help="seconds after ready before measuring")
    p.add_argument("--history-wait", type=float, default=d.history_wait_s,
                   help="at most this many seconds more for the demo's history backfill to reach silver (default 900)")
    p.add_argument("--home", type=Path, help="CRYPTOFLOW_HOME to use (kept); default a temporary one (removed)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="another setting (repeatable)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    a = p.parse_args(argv)
    extra = {}
    for item in a.env:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--env wants KEY=VALUE, got {item!r}")
        extra[key] = value
    opts = Options(minutes=a.minutes, sample_minutes=a.sample_minutes, rate=a.rate, upbit=a.upbit, binance=a.binance,
                   maintenance_cron=a.maintenance_cron, shock_every_s=a.shock_every, shock_pct=a.shock_pct,
                   shock_markets=a.shock_markets, alert_wait_s=a.alert_wait, warmup_s=a.warmup,
                   history_wait_s=a.history_wait, home=a.home,
                   extra_env=extra)
    details = drive(opts)
    a.out.mkdir(parents=True, exist_ok=True)
    png = plot(details, a.out / "endurance.png")
    result = to_result(details, _size(opts, details))
    path = write_result(result, a.out)
    for fig in result.as_json()["figures"]:
        print(f"   {fig['name']}: {fig['median']!s:.10} {fig['unit']} target {fig['target']} -> {fig['verdict']}"
              f"{'  (' + fig['note'] + ')' if fig['note'] else ''}")
    print(f"   wrote {path} and {png}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
