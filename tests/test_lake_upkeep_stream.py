"""Lake maintenance while the real stream writes: simulator -> sidecar process -> landing files -> the streaming ingest
(bronze, silver, intraday gold, ledger in one transaction a chunk), with maintenance passes running back to back in
another process at a 1-second snapshot retention and no cleanup delay. At the end silver equals the simulator's ground
truth (nothing lost, doubled, invented or altered), the bars add up to silver, and maintenance did each of its jobs
on the stream's own tables (docs/decisions/0017)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from cryptoflow_dagster import lake
from cryptoflow_dagster.streaming import ingest
from tests.test_stream_e2e import MARKETS, assert_matches_ground_truth, sidecar, stream_env, stream_until  # noqa: F401

# Maintenance passes back to back until the stop file appears; each pass's report, one JSON line each. The cutoffs are
# a day ahead, so the SQLite catalog's by-day comparison of older_than (ADR 0017) lets expiry and cleanup act now.
_MAINTAINER = r"""
import json, sys, time
from dataclasses import asdict, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from cryptoflow_core.settings import load_settings
from cryptoflow_dagster import lake
from cryptoflow_dagster.maintenance import lake_upkeep as up

stop, out = Path(sys.argv[1]), open(sys.argv[2], "w")
settings = replace(load_settings(), lake_snapshot_retention=timedelta(seconds=1), lake_file_cleanup_delay=timedelta(0))
with lake.session(settings) as con:
    while True:
        last = stop.exists()
        report = up.run_steps(con, settings, up.COMPACT_STEPS, now=datetime.now(timezone.utc) + timedelta(days=1))
        out.write(json.dumps(asdict(report)) + "\n")
        out.flush()
        if last:
            break
        time.sleep(0.5)
out.close()
"""


def _passes(passes_file) -> int:
    return len(passes_file.read_text().splitlines()) if passes_file.exists() else 0


def test_maintenance_while_the_stream_writes_equals_the_ground_truth(stream_env, settings, tmp_path):
    sim = stream_env()
    with lake.session(settings) as con:
        lake.ensure_schema(con)
    stop, passes_file = tmp_path / "stop", tmp_path / "passes.jsonl"
    maintainer = subprocess.Popen([sys.executable, "-c", _MAINTAINER, str(stop), str(passes_file)],
                                  env=os.environ.copy(), stderr=subprocess.PIPE, text=True)
    proc = sidecar()
    chunks: list[float] = []
    try:
        with lake.session(settings) as con:
            # the streaming job's loop, without its run around it, for at least 15 s and until 10 chunks and 3
            # maintenance passes are done (counted, not timed: a loaded machine does both more slowly)
            begun = time.monotonic()
            while time.monotonic() - begun < 15 or len(chunks) < 10 or _passes(passes_file) < 3:
                assert time.monotonic() - begun < 300, f"{len(chunks)} chunks, {_passes(passes_file)} passes in 300 s"
                assert maintainer.poll() is None, maintainer.stderr.read()
                started = time.monotonic()
                if ingest.ingest_pending(con, settings.landing_dir, "test-upkeep-stream").files:
                    chunks.append(time.monotonic() - started)
                time.sleep(0.3)
            stream_until(proc, settings, 100, traded=(sim, MARKETS))
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
            ingest.ingest_pending(con, settings.landing_dir, "test-upkeep-stream")
        stop.touch()  # one more pass after the stream's last commit, then the maintainer exits
        _, err = maintainer.communicate(timeout=120)
        assert maintainer.returncode == 0, err
    finally:
        for p in (proc, maintainer):
            if p.poll() is None:
                p.kill()
                p.communicate()

    passes = [json.loads(line) for line in passes_file.read_text().splitlines()]
    total = {k: sum(p[k] for p in passes) for k in passes[0] if k != "longest_turn_s"}
    print(f"{len(chunks)} stream chunks, {len(passes)} maintenance passes: {total}, "
          f"longest turn {max(p['longest_turn_s'] for p in passes):.2f} s")
    # the stream's own tables were maintained while it wrote: files merged and rewritten, inlined rows flushed,
    # snapshots expired and files deleted, with no rewrite refused for inlined rows
    assert len(chunks) >= 10 and len(passes) >= 3
    assert total["files_merged"] > 0 and total["files_rewritten"] > 0 and total["rows_flushed"] > 0
    assert total["snapshots_expired"] > 0 and total["files_deleted"] > 0 and total["rewrites_skipped"] == 0
    # a bound only a stall would break (a turn is ~0.3 s on a quiet machine, 2.3 s at most in benchmarks/lake_day
    # at load 5-18), not a benchmark
    assert max(p["longest_turn_s"] for p in passes) < 5

    counted = assert_matches_ground_truth(sim, settings, MARKETS)
    assert sum(counted.values()) >= 30
    with lake.session(settings, read_only=True) as con:
        assert con.execute(
            "SELECT (SELECT sum(trade_count) FROM gold.ohlcv_1m_from_trades) = (SELECT count(*) FROM silver.trades)"
        ).fetchone() == (True,)
        assert con.execute("SELECT count(*) FROM silver.trades").fetchone()[0] == con.execute(
            "SELECT count(DISTINCT (exchange, market, trade_id)) FROM bronze.trades_raw").fetchone()[0]
        # after the last pass, the stream's tables are a few files each, not one per chunk
        for schema, table in (("silver", "trades"), ("gold", "ohlcv_1m_from_trades"), ("gold", "market_stats_24h")):
            files = con.execute("SELECT count(*) FROM ducklake_list_files('lake', ?, schema => ?)",
                                [table, schema]).fetchone()[0]
            assert files <= 3, f"{schema}.{table}: {files} live files after maintenance ({len(chunks)} chunks)"
