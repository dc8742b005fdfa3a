"""Lake maintenance on real DuckLake lakes (SQLite catalog; the Postgres catalog with S3 data in the last test): files
merged, snapshots expired, old and orphaned files deleted, the catalog vacuumed, and never a row lost, doubled or
changed, time travel included, also while another process commits (docs/decisions/0017)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from cryptoflow_dagster import lake, slo
from cryptoflow_dagster.instance import LAKE_MAINTENANCE_TAG, instance_config
from cryptoflow_dagster.maintenance import lake_upkeep as up
from cryptoflow_dagster.resources import build_resources

TABLES = ("silver.trades", "gold.market_stats_24h", "ops.ingested_files")


def trades(i: int, n: int = 20):
    """A commit of ``n`` trades (more than DuckLake inlines: a Parquet file)."""
    return lambda c: c.execute(
        "INSERT INTO silver.trades SELECT 'upbit', 'KRW-BTC', $i * 1000 + range, TIMESTAMPTZ '2026-07-30 07:00:00+00' "
        "+ to_seconds($i * 1000 + range), 100 + range, 0.5, 50 + range, 'buy', now(), now(), 'ws', DATE '2026-07-30' "
        "FROM range($n)", {"i": i, "n": n})


def stats(i: int):
    """Replace 8 of the 12 markets' 24-hour stats and add 12 rows (a file): 8 of each earlier file's rows deleted."""
    def work(c):
        c.execute("DELETE FROM gold.market_stats_24h WHERE market < 'M8'")
        c.execute("INSERT INTO gold.market_stats_24h SELECT 'upbit', 'M' || range::VARCHAR, now(), 1, 2, 0.5, $i, 1, "
                  "10, 100, 1.2, 40, now() FROM range(12)", {"i": i})
    return work


def ledger(i: int):
    """Three ledger rows: few enough to be inlined into the catalog."""
    return lambda c: c.execute("INSERT INTO ops.ingested_files SELECT 'f' || $i::VARCHAR || '-' || range::VARCHAR, "
                               "1, now(), 'run', 0 FROM range(3)", {"i": i})


def rows(con, table: str, version: int | None = None) -> list[tuple]:
    at = f" AT (VERSION => {int(version)})" if version is not None else ""
    return con.execute(f"SELECT * FROM {table}{at} ORDER BY ALL").fetchall()


def everything(con, version: int | None = None) -> dict[str, list[tuple]]:
    return {t: rows(con, t, version) for t in TABLES}


def live_files(con, table: str) -> list[str]:
    schema, name = table.split(".")
    return [r[0] for r in con.execute("SELECT data_file FROM ducklake_list_files('lake', ?, schema => ?)",
                                      [name, schema]).fetchall()]


def current_snapshot(con) -> tuple[int, datetime]:
    return con.execute("SELECT snapshot_id, snapshot_time FROM ducklake_snapshots('lake') "
                       "ORDER BY snapshot_id DESC LIMIT 1").fetchone()


def fill(con, rounds: int) -> list[tuple[int, datetime]]:
    """``rounds`` rounds of commits; returns the snapshot after each round."""
    after = []
    for i in range(rounds):
        lake.write(con, trades(i))
        if i % 3 == 0:
            lake.write(con, ledger(i))
        if i % 4 == 0:
            lake.write(con, stats(i))
        after.append(current_snapshot(con))
    return after


def test_maintenance_merges_expires_and_cleans_up_without_changing_a_row(settings):
    target = up.parse_size(settings.lake_target_file_size)
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        snaps = fill(con, 24)
        early, middle = snaps[3][0], snaps[12][0]
        now_rows, early_rows, middle_rows = everything(con), everything(con, early), everything(con, middle)
        assert len(live_files(con, "silver.trades")) == 24
        assert up.lake_health(con)["inlined_rows"] == 24  # 8 ledger commits of 3 rows

        flushed = up.flush_inlined(con)
        rewritten = up.rewrite_deletes(con, settings.lake_rewrite_delete_threshold, target)
        merged = up.merge_small_files(con, target)
        assert flushed.rows_flushed == 24 and flushed.turns == 1  # one table had inlined rows: one turn
        assert rewritten.files_rewritten >= 1  # stats files with 8 of 12 rows deleted
        assert merged.files_merged >= 24 and len(live_files(con, "silver.trades")) == 1
        health = up.lake_health(con)
        assert health["live_files.silver.trades"] == 1 and health["inlined_rows"] == 0
        # every row as it was, now and at the earlier snapshots (merged files keep each row's snapshot)
        assert everything(con) == now_rows
        assert everything(con, early) == early_rows and everything(con, middle) == middle_rows

        # snapshots older than the middle round's expire; its commit and every later one are still there
        expired = up.expire_snapshots(con, snaps[12][1])
        assert expired.snapshots_expired >= 12 + 1  # the 13 rounds before the middle, and the schema's snapshots
        with pytest.raises(duckdb.Error, match="No snapshot found"):
            rows(con, "silver.trades", early)
        with pytest.raises(duckdb.Error, match="No snapshot found at timestamp"):
            con.execute("SELECT count(*) FROM silver.trades AT (TIMESTAMP => ?)", [snaps[3][1]]).fetchall()
        assert con.execute("SELECT count(*) FROM silver.trades AT (TIMESTAMP => ?)",
                           [snaps[12][1]]).fetchone()[0] == len(middle_rows["silver.trades"])
        assert everything(con, middle) == middle_rows and everything(con) == now_rows

        # A SQLite catalog compares older_than by day: a bound of "now" moves back to the end of yesterday (UTC).
        today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        assert up.cleanup_bound("sqlite", datetime.now(timezone.utc)) < today
        assert up.cleanup_bound("postgres", today + timedelta(hours=5)) == today + timedelta(hours=5)
        scheduled = [r[0] for r in con.execute(
            "SELECT path FROM ducklake_cleanup_old_files('lake', dry_run => true, cleanup_all => true)").fetchall()]
        assert scheduled and all(Path(p).exists() for p in scheduled)
        cleaned = up.delete_old_files(con, datetime.now(timezone.utc) + timedelta(days=1))  # the delay passed
        assert cleaned.files_deleted == len(scheduled) and cleaned.bytes_freed > 0
        assert not any(Path(p).exists() for p in scheduled)
        for table in TABLES:
            assert all(Path(p).exists() for p in live_files(con, table)), table
        assert everything(con, middle) == middle_rows and everything(con) == now_rows

        # orphans: a file the catalog never knew, old enough, goes; a fresh one (a writer's uncommitted file) stays
        folder = Path(live_files(con, "silver.trades")[0]).parent
        old, fresh = folder / "ducklake-0000-old-orphan.parquet", folder / "ducklake-0000-new-orphan.parquet"
        for path in (old, fresh):
            con.execute(f"COPY (SELECT 1 AS a) TO '{path}' (FORMAT parquet)")
        two_hours_ago = time.time() - 7200
        os.utime(old, (two_hours_ago, two_hours_ago))
        orphans = up.delete_orphaned_files(con, datetime.now(timezone.utc) - timedelta(hours=1))
        assert orphans.orphans_deleted == 1 and not old.exists() and fresh.exists()

        # the catalog: switched to incremental vacuuming by one VACUUM (it is small), then analyzed; the next
        # upkeep gives free pages back a bounded batch per turn
        before = up.catalog_bytes(con)
        upkeep = up.catalog_upkeep(con, settings)
        assert upkeep.turns == 2 and 0 < up.catalog_bytes(con) <= before
        assert up._sqlite_pragma(con, "auto_vacuum") == 2
        up.expire_snapshots(con, datetime.now(timezone.utc))  # frees catalog pages, if any
        assert up.catalog_upkeep(con, settings).turns >= 1 and up._sqlite_pragma(con, "freelist_count") == 0
        assert everything(con) == now_rows


def test_sqlite_catalog_compares_older_than_by_day(settings):
    """Why snapshots expire by id and cleanup bounds move to the previous day: DuckLake 1.5.5 on a SQLite catalog
    treats a time earlier today as later than every snapshot and scheduled file of today. When this fails, DuckLake
    compares exactly: cleanup_bound and expire_snapshots may then use older_than directly (ADR 0017)."""
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        for i in range(3):
            lake.write(con, trades(i))
        lake.write(con, lambda c: c.execute("CALL ducklake_merge_adjacent_files('lake')"))
        start_of_today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        files = con.execute("SELECT count(*) FROM ducklake_cleanup_old_files('lake', dry_run => true, "
                            "older_than => ?)", [start_of_today]).fetchone()[0]
        snapshots = con.execute("SELECT count(*) FROM ducklake_expire_snapshots('lake', dry_run => true, "
                                "older_than => ?)", [start_of_today]).fetchone()[0]
        created_today = con.execute("SELECT count(*) FROM ducklake_snapshots('lake') WHERE snapshot_time >= ?",
                                    [start_of_today]).fetchone()[0]
    assert files == 3
    assert snapshots == created_today - 1  # all but the latest, though every one is younger than the bound


def test_slo_reads_commit_times_after_their_snapshots_expire(settings):
    landed = datetime.now(timezone.utc) - timedelta(seconds=5)
    since = landed - timedelta(minutes=1)

    def ingest(i: int):
        batch = f"binance/trade/date={landed:%Y-%m-%d}/{landed:%Y%m%dT%H%M%S%f}Z-s1-{i:08d}.parquet"

        def work(c):
            c.execute("""INSERT INTO bronze.trades_raw SELECT 'binance', 'BTCUSDT', $i * 100 + range, $event, '{}',
                             'k' || ($i * 100 + range)::VARCHAR, now(), 'run', 'ws', $batch, $event, 's1', current_date
                         FROM range(4)""", {"i": i, "event": landed - timedelta(seconds=1), "batch": batch})
            c.execute("INSERT INTO ops.ingested_files VALUES ($batch, 4, now(), 'run', 0)", {"batch": batch})
        return work

    with lake.session(settings) as con:
        lake.ensure_schema(con)
        for i in range(3):
            lake.write(con, ingest(i))
            time.sleep(0.05)
        before = slo.report(con, since)["silver"]
        assert before["count"] == 12
        expired = up.expire_snapshots(con, datetime.now(timezone.utc) + timedelta(seconds=1))
        assert expired.commits_recorded == 2  # the third commit is the latest snapshot: never expired
        # left: the latest ingest commit and the expiring transaction's own (it wrote ops.ingest_commits)
        assert con.execute("SELECT count(*) FROM ducklake_snapshots('lake')").fetchone()[0] == 2
        assert slo.report(con, since)["silver"] == before
        # the third commit is no longer the latest: the next expiry records it; one more records nothing again
        assert up.expire_snapshots(con, datetime.now(timezone.utc) + timedelta(seconds=1)).commits_recorded == 1
        assert up.expire_snapshots(con, datetime.now(timezone.utc) + timedelta(seconds=1)).commits_recorded == 0
        assert con.execute("SELECT count(*), count(DISTINCT snapshot_id) FROM ops.ingest_commits").fetchone() == (3, 3)
        assert slo.report(con, since)["silver"] == before


def test_thinning_keeps_the_last_snapshot_of_each_bucket_and_time_travel_lands_on_it(settings):
    """Snapshots older than the thin-after setting keep the last of each bucket (a minute in the settings; 0.5 s here,
    so that a test of seconds spans several): the lake's contents are unchanged, time travel to a thinned snapshot's
    time gives the lake as at the last kept snapshot before it, and newer snapshots are all kept."""
    bucket = timedelta(milliseconds=500)
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        schema = con.execute("SELECT max(snapshot_id) FROM ducklake_snapshots('lake')").fetchone()[0]
        for i in range(30):
            lake.write(con, trades(i, 3))  # inlined: a commit as small as the stream's ledger rows
            time.sleep(0.06)
        snaps = con.execute("SELECT snapshot_id, snapshot_time FROM ducklake_snapshots('lake') ORDER BY 1").fetchall()
        counts = {sid: con.execute(f"SELECT count(*) FROM silver.trades AT (VERSION => {sid})").fetchone()[0]
                  for sid, _ in snaps if sid >= schema}
        before = everything(con)
        cut = snaps[-6][1]  # the last five are newer than the thinning's bound: all kept

        def bucket_of(t: datetime) -> int:
            return int(t.timestamp() * 1e6) // int(bucket.total_seconds() * 1e6)

        last_of_bucket = {}
        for sid, t in snaps:
            last_of_bucket[bucket_of(t)] = sid
        expected = {sid for sid, t in snaps if t >= cut or last_of_bucket[bucket_of(t)] == sid}

        report = up.expire_snapshots(con, None, thin_before=cut, thin_to=bucket)
        kept = {sid for (sid,) in con.execute("SELECT snapshot_id FROM ducklake_snapshots('lake')").fetchall()}
        assert kept - {max(kept)} == expected - {max(kept)} and report.snapshots_expired == len(snaps) - len(expected)
        assert 3 <= len(expected) < len(snaps) - 10  # several buckets, most snapshots gone
        assert everything(con) == before
        thinned = [(sid, t) for sid, t in snaps if sid not in kept and any(schema <= k < sid for k in kept)]
        assert thinned
        for sid, t in thinned[:5]:
            landed_on = max(k for k in kept if k < sid)
            assert con.execute("SELECT count(*) FROM silver.trades AT (TIMESTAMP => $t)", {"t": t}).fetchone()[0] == (
                counts[landed_on])
        # a second pass thins nothing more
        assert up.expire_snapshots(con, None, thin_before=cut, thin_to=bucket).snapshots_expired == 0


_WRITER = r"""
import json, sys, time
from cryptoflow_dagster import lake
from cryptoflow_core.settings import load_settings

seconds, out = float(sys.argv[1]), sys.argv[2]
waits, i = [], 0
with lake.session(load_settings()) as con:
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        def work(c, i=i):
            c.execute("INSERT INTO silver.trades SELECT 'upbit', 'KRW-ETH', $i * 100 + range, now(), 1, 1, 1, 'buy', "
                      "now(), now(), 'ws', current_date FROM range(15)", {"i": i})
            c.execute("DELETE FROM gold.market_stats_24h")
            c.execute("INSERT INTO gold.market_stats_24h SELECT 'upbit', 'M' || range::VARCHAR, now(), 1, 2, 0.5, $i, "
                      "1, 10, 100, 1.2, 40, now() FROM range(12)", {"i": i})
            c.execute("INSERT INTO ops.ingested_files VALUES ('w' || $i::VARCHAR, 15, now(), 'w', 0)", {"i": i})
        started = time.monotonic()
        lake.write(con, work)
        waits.append(time.monotonic() - started)
        i += 1
        time.sleep(0.05)
json.dump({"commits": i, "waits": waits}, open(out, "w"))
"""


def bars(first_minute: int, n: int):
    """``n`` 1-minute bars from ``first_minute``, replacing the bar of that minute first: how the stream's intraday gold
    refresh rewrites the last, partial minute on every commit (n > 10: a file; n <= 10: inlined)."""
    def work(c):
        c.execute("DELETE FROM gold.ohlcv_1m_from_trades WHERE ts = TIMESTAMPTZ '2026-07-30 00:00:00+00' "
                  "+ to_minutes($m)", {"m": first_minute})
        c.execute("INSERT INTO gold.ohlcv_1m_from_trades SELECT 'upbit', 'KRW-BTC', TIMESTAMPTZ '2026-07-30 00:00:00+00'"
                  " + to_minutes($m + range), 1, 2, 0.5, 1.5, 1, 1, 1, 1, now(), DATE '2026-07-30' FROM range($n)",
                  {"m": first_minute, "n": n})
    return work


def test_a_gold_table_the_stream_rewrites_is_flushed_rewritten_and_merged_to_one_file(settings):
    """Each commit replaces the bar of its first minute, so every file but the last has a deleted row, and the table
    holds inlined rows when the pass starts. DuckLake never merges a file with deletes and refuses a rewrite while the
    table holds inlined rows: without the flush-then-rewrite in one turn and the rewrite of small files with any
    delete, the table keeps a file per commit for ever."""
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        for i in range(6):
            lake.write(con, bars(i * 30, 31))  # files of 31 bars; the next commit replaces the last one
        lake.write(con, bars(180, 3))  # inlined rows and an inlined delete
        before = rows(con, "gold.ohlcv_1m_from_trades")
        assert len(live_files(con, "gold.ohlcv_1m_from_trades")) == 6 and up.inlined_rows(con)
        report = up.run_steps(con, settings, ["rewrite", "merge"])
        assert report.rewrites_skipped == 0 and report.files_rewritten >= 5
        assert len(live_files(con, "gold.ohlcv_1m_from_trades")) == 1
        assert con.execute("SELECT count(*) FROM ducklake_list_files('lake', 'ohlcv_1m_from_trades', schema => 'gold') "
                           "WHERE delete_file IS NOT NULL").fetchone()[0] == 0
        assert rows(con, "gold.ohlcv_1m_from_trades") == before
        assert len(before) == 183


def test_maintenance_while_another_process_commits_loses_and_doubles_nothing(settings, tmp_path):
    """A writer process commits every ~0.1 s (trades, replaced stats, a ledger row) while maintenance passes run with
    a 1-second retention and files deleted as soon as scheduled: the end state is exactly what the writer committed,
    and no commit of the writer waited for the lake longer than a bound that only a stall would break."""
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        for i in range(30):  # a backlog of small files for the first pass to merge
            lake.write(con, trades(1000 + i))
    out = tmp_path / "writer.json"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, "6", str(out)], env=os.environ.copy(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    quick = replace(settings, lake_snapshot_retention=timedelta(seconds=1))
    passes = []
    try:
        with lake.session(settings) as con:
            while writer.poll() is None:
                passes.append(up.run_steps(con, quick, up.COMPACT_STEPS,
                                           now=datetime.now(timezone.utc) + timedelta(days=1)))
                time.sleep(0.3)
    finally:
        stdout, stderr = writer.communicate(timeout=120)
    assert writer.returncode == 0, stderr
    result = json.loads(out.read_text())
    n = result["commits"]
    with lake.session(settings) as con:
        up.run_steps(con, quick, up.COMPACT_STEPS, now=datetime.now(timezone.utc) + timedelta(days=1))
        eth = con.execute("SELECT count(*), count(DISTINCT trade_id), min(trade_id), max(trade_id) FROM silver.trades "
                          "WHERE market = 'KRW-ETH'").fetchone()
        assert eth == (15 * n, 15 * n, 0, (n - 1) * 100 + 14)
        assert con.execute("SELECT count(*) FROM silver.trades WHERE market = 'KRW-BTC'").fetchone()[0] == 30 * 20
        assert con.execute("SELECT count(*), min(last_price), max(last_price) FROM gold.market_stats_24h"
                           ).fetchone() == (12, n - 1, n - 1)
        assert con.execute("SELECT count(*), count(DISTINCT file) FROM ops.ingested_files").fetchone() == (n, n)
        assert len(live_files(con, "silver.trades")) <= 2
        assert len(live_files(con, "gold.market_stats_24h")) <= 2  # replaced every commit: rewritten, not piled up
    assert sum(p.rewrites_skipped for p in passes) == 0  # flushed and rewritten in one turn: nothing inlined between
    merged = sum(p.files_merged for p in passes)
    longest_turn = max(p.longest_turn_s for p in passes)
    waits = sorted(result["waits"])
    print(f"writer: {n} commits, wait p50 {waits[len(waits) // 2]:.2f} s, longest {waits[-1]:.2f} s; "
          f"maintenance: {len(passes)} passes, "
          f"{merged} files merged, {sum(p.snapshots_expired for p in passes)} snapshots expired, "
          f"{sum(p.files_deleted for p in passes)} files deleted, longest turn {longest_turn:.2f} s")
    assert n >= 10 and merged >= 30 and sum(p.snapshots_expired for p in passes) > 0
    # bounds a stall would break, not benchmarks: a turn of maintenance is well under a second on a quiet machine
    assert longest_turn < 1.5
    assert max(result["waits"]) < 2.5


def test_maintenance_job_records_figures_on_ops_lake_health(settings):
    from cryptoflow_dagster.defs.maintenance.lake import (
        INGEST_COMMITS,
        lake_catalog_upkeep_job,
        lake_health,
        lake_maintenance_job,
        schedules,
    )

    with lake.session(settings) as con:
        lake.ensure_schema(con)
        fill(con, 6)
    defs = dg.Definitions(assets=[INGEST_COMMITS, lake_health], jobs=[lake_maintenance_job, lake_catalog_upkeep_job],
                          resources=build_resources())
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("lake_maintenance").execute_in_process(instance=instance)
        assert result.success
        [mat] = result.asset_materializations_for_node("ops__lake_health")
        figures = {k: v.value for k, v in mat.metadata.items() if isinstance(v, dg.FloatMetadataValue)}
        assert figures["files_merged"] >= 6 and figures["live_files.silver.trades"] == 1
        assert figures["catalog_bytes"] > 0 and figures["snapshots"] > 0
        for key in ("snapshots_expired", "bytes_freed", "files_deleted", "longest_turn_s", "rows_flushed"):
            assert key in figures
        assert mat.metadata["steps"].value == ",".join(up.COMPACT_STEPS)
        upkeep = defs.resolve_job_def("lake_catalog_upkeep").execute_in_process(instance=instance)
        assert upkeep.success
    assert defs.resolve_job_def("lake_maintenance").tags[LAKE_MAINTENANCE_TAG] == "true"
    assert {"key": LAKE_MAINTENANCE_TAG, "limit": 1} in instance_config(settings)["concurrency"]["runs"][
        "tag_concurrency_limits"]
    by_name = {s.name: s for s in schedules(settings)}
    assert by_name["lake_maintenance_schedule"].cron_schedule == "*/10 * * * *"
    assert by_name["lake_catalog_upkeep_schedule"].cron_schedule == settings.lake_catalog_upkeep_cron
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in by_name.values())


def test_maintenance_on_postgres_catalog_and_s3_data(request):
    """The same steps on the scale-out engines: DuckLake catalog on PostgreSQL, Parquet on S3 (moto)."""
    scaled = request.getfixturevalue("scaled")
    s3 = request.getfixturevalue("s3")
    from test_scaleout_lake import s3_keys

    settings, prefix = scaled
    target = up.parse_size(settings.lake_target_file_size)
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        snaps = fill(con, 8)
        now_rows, middle_rows = everything(con), everything(con, snaps[4][0])
        up.flush_inlined(con)
        up.rewrite_deletes(con, settings.lake_rewrite_delete_threshold, target)
        assert up.merge_small_files(con, target).files_merged >= 8
        assert up.expire_snapshots(con, snaps[4][1]).snapshots_expired >= 4
        assert up.cleanup_bound(up.catalog_type(con), snaps[4][1]) == snaps[4][1]  # Postgres compares exactly
        scheduled = len(s3_keys(s3, prefix))
        cleaned = up.delete_old_files(con, datetime.now(timezone.utc))
        assert cleaned.files_deleted > 0 and cleaned.bytes_freed > 0
        assert len(s3_keys(s3, prefix)) == scheduled - cleaned.files_deleted
        assert everything(con) == now_rows and everything(con, snaps[4][0]) == middle_rows
        assert up.catalog_bytes(con) > 0
        up.catalog_upkeep(con, settings)  # VACUUM ANALYZE on its own connection
        assert everything(con) == now_rows


