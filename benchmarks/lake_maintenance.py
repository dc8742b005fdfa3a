"""Lake maintenance on a lake the stream made: how long each step takes and the longest writers' turn (ADR 0017).

``python -m benchmarks.lake_maintenance WORK [COMMITS]`` builds WORK/home (once; a later run reuses a copy of it) with
COMMITS (default 1,000) commits shaped like a streaming chunk's: 40 trades into bronze.trades_raw and silver.trades
(a small Parquet file each) and, inlined into the catalog, the minute's 1-minute bars and 24-hour
stats replaced, the kimchi premium's minute, two ledger rows and five tickers. Then it runs the maintenance steps one
by one (flush, rewrite, merge, expire the snapshots older than the build's middle, cleanup with the delay passed,
orphans, catalog upkeep, expire the rest, catalog upkeep again, a pass with nothing left to do) and prints a JSON
line: seconds per step, turns and the longest turn, what each step did, and the lake's health before and after.
Every table's contents (an order-free digest of all rows) must be equal before and after, and at the middle snapshot
before and after the cleanup. Files are ~3.7 KB here (the demo's 7.6 KB are wider raw frames).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

MARKETS = [f"KRW-C{i}" for i in range(5)] + [f"C{i}USDT" for i in range(4)]


def chunk(i: int):
    """One commit shaped like a streaming chunk (i: its number)."""
    def work(c) -> None:
        c.execute(
            """INSERT INTO lake.bronze.trades_raw SELECT 'upbit', $m, $i * 100 + range, now(),
                   '{"type":"trade","code":"' || $m || '","trade_price":' || (100 + random())::VARCHAR
                   || ',"trade_volume":0.5,"ask_bid":"BID","sequential_id":' || ($i * 100 + range)::VARCHAR || '}',
                   'upbit:' || $m || ':' || ($i * 100 + range)::VARCHAR, now(), 'bench', 'ws',
                   'trade/' || $i::VARCHAR || '.parquet', now(), 's1', current_date FROM range(40)""",
            {"m": MARKETS[i % len(MARKETS)], "i": i})
        c.execute(
            """INSERT INTO lake.silver.trades SELECT 'upbit', $m, $i * 100 + range, now(), 100 + random(), random(),
                   random() * 100, 'buy', now(), now(), 'ws', current_date FROM range(40)""",
            {"m": MARKETS[i % len(MARKETS)], "i": i})
        c.execute("DELETE FROM lake.gold.ohlcv_1m_from_trades WHERE ts = date_trunc('minute', now())")
        c.execute("""INSERT INTO lake.gold.ohlcv_1m_from_trades SELECT 'upbit', m, date_trunc('minute', now()),
                         1, 2, 0.5, 1.5, 10, 100, 40, 1.2, now(), current_date FROM unnest($ms) t(m)""",
                  {"ms": MARKETS})
        c.execute("DELETE FROM lake.gold.market_stats_24h")
        c.execute("""INSERT INTO lake.gold.market_stats_24h SELECT 'upbit', m, now(), 1, 2, 0.5, 1.5, 1.0, 10, 100,
                         1.2, 40, now() FROM unnest($ms) t(m)""", {"ms": MARKETS})
        c.execute("DELETE FROM lake.gold.kimchi_premium_1m WHERE ts = date_trunc('minute', now())")
        c.execute("""INSERT INTO lake.gold.kimchi_premium_1m SELECT date_trunc('minute', now()), a, 1, 2, 3, 1.5,
                         now(), current_date FROM unnest(['BTC', 'ETH', 'XRP', 'SOL']) t(a)""")
        c.execute("INSERT INTO lake.ops.ingested_files SELECT 'trade/' || $i::VARCHAR || '-' || range::VARCHAR, "
                  "40, now(), 'bench', 0 FROM range(2)", {"i": i})
        c.execute("""INSERT INTO lake.bronze.tickers_raw SELECT 'upbit', m, now(), '{}', now(), 'bench', 'x', now(),
                         's1', current_date FROM unnest($ms[1:5]) t(m)""", {"ms": MARKETS})
    return work


TABLES_COMPARED = ("bronze.trades_raw", "silver.trades", "gold.ohlcv_1m_from_trades", "gold.market_stats_24h",
                   "gold.kimchi_premium_1m", "ops.ingested_files", "bronze.tickers_raw")


def contents(con, at=None) -> dict[str, str]:
    """A digest of every compared table's full contents (an order-free sum of row hashes), now or at a time."""
    out = {}
    when = "" if at is None else f" AT (TIMESTAMP => '{at.isoformat()}'::TIMESTAMPTZ)"
    for table in TABLES_COMPARED:
        out[table] = con.execute(
            f"SELECT count(*)::VARCHAR || ':' || coalesce(sum(hash(t)), 0)::VARCHAR "
            f"FROM (SELECT * FROM lake.{table}{when}) t"
        ).fetchone()[0]
    return out


def main(argv: list[str]) -> int:
    work = Path(argv[0]).resolve()
    commits = int(argv[1]) if len(argv) > 1 else 1000
    home, built = work / "home", work / f"built-{commits}"
    os.environ["CRYPTOFLOW_HOME"] = str(home)
    from cryptoflow_core.settings import load_settings
    from cryptoflow_dagster import lake
    from cryptoflow_dagster.maintenance import lake_upkeep as up

    build_s = None
    if not built.exists():
        shutil.rmtree(home, ignore_errors=True)
        settings = load_settings()
        with lake.session(settings) as con:
            lake.ensure_schema(con)
            started = time.monotonic()
            for i in range(commits):
                lake.write(con, chunk(i))
            build_s = time.monotonic() - started
        shutil.copytree(home, built)
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(built, home)
    settings = load_settings()
    result: dict = {"commits": commits, "build_s": build_s}
    with lake.session(settings) as con:
        result["health_before"] = up.lake_health(con)
        before = contents(con)
        middle = con.execute("SELECT snapshot_time FROM ducklake_snapshots('lake') ORDER BY snapshot_id "
                             "LIMIT 1 OFFSET ?", [commits // 2]).fetchone()[0]
        target = up.parse_size(settings.lake_target_file_size)
        tomorrow = datetime.now(timezone.utc) + timedelta(days=1)  # the cleanup delay passed (and the UTC day)
        steps = [
            ("flush", lambda: up.flush_inlined(con)),
            ("rewrite", lambda: up.rewrite_deletes(con, settings.lake_rewrite_delete_threshold, target)),
            ("merge", lambda: up.merge_small_files(con, target)),
            ("expire_half", lambda: up.expire_snapshots(con, middle)),
            ("cleanup", lambda: up.delete_old_files(con, tomorrow)),
            ("orphans", lambda: up.delete_orphaned_files(con, tomorrow)),
            ("catalog", lambda: up.catalog_upkeep(con, settings)),  # the first: VACUUM to incremental vacuuming
            ("expire_rest", lambda: up.expire_snapshots(con, tomorrow)),
            ("catalog_again", lambda: up.catalog_upkeep(con, settings)),  # incremental_vacuum, ANALYZE
            ("noop_pass", lambda: up.run_steps(con, replace(settings, lake_snapshot_retention=timedelta(days=7)),
                                               up.COMPACT_STEPS)),
        ]
        at_middle = contents(con, middle)
        result["steps"] = {}
        for name, step in steps:
            started = time.monotonic()
            report = step()
            report.seconds = time.monotonic() - started
            result["steps"][name] = {k: v for k, v in asdict(report).items() if v}
            if name == "orphans":  # before the rest expires: the middle snapshot reads as it did
                result["time_travel_middle_equal"] = contents(con, middle) == at_middle
        after = contents(con)
        result["health_after"] = up.lake_health(con)
        result["contents_equal"] = before == after
    print(json.dumps(result, default=str))
    return 0 if result["contents_equal"] and result["time_travel_middle_equal"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
