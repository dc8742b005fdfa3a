"""Freshness across streaming-run hand-overs (issue 17, ADR 0019): the whole platform as ``benchmarks/freshness.py`` runs
it (Dagster daemon + code server + webserver, sidecar, simulator, a paced 1,000 msg/s Binance stream), once per
variant, with short runs (``CRYPTOFLOW_STREAM_RUN_MAX_S``, default 60 s) so that the window holds several hand-overs.

Variants: ``cold`` (``CRYPTOFLOW_STREAM_HANDOVER_S=0``: the next run is requested after the last one ended, the
behaviour before ADR 0019) and ``overlap`` (the next run is requested ``handover_s`` ahead and waits for the lock).
Figures over the WHOLE window (never a median of slices): silver p50/p95/p99/max, the worst 10-second bucket's max,
the streaming runs that ingested in the window, and how many trades waited more than 5 s.

``CRYPTOFLOW_BENCH_HANDOVER_MINUTES`` (default 4), ``CRYPTOFLOW_BENCH_HANDOVER_RUN_MAX_S`` (60),
``CRYPTOFLOW_BENCH_HANDOVER_S`` (20), ``CRYPTOFLOW_BENCH_HANDOVER_VARIANTS`` (``cold,overlap``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from benchmarks.common import Result
from benchmarks.freshness import _drive
from cryptoflow_dagster import lake
from cryptoflow_dagster.slo import report

_SPIKES = """
    SELECT epoch_ms(f.ingested_at) // 10000 AS bucket, max(epoch_ms(f.ingested_at) - epoch_ms(b.event_time)) / 1000.0
    FROM bronze.trades_raw b JOIN ops.ingested_files f ON b.batch_file = f.file
    WHERE b.source = 'ws' AND f.ingested_at >= $since AND f.ingested_at < $until GROUP BY 1 ORDER BY 1
"""


def _variant(name: str, handover_s: float, run_max_s: float, minutes: float, warmup_s: float) -> dict:
    saved = {k: os.environ.get(k) for k in ("CRYPTOFLOW_STREAM_RUN_MAX_S", "CRYPTOFLOW_STREAM_HANDOVER_S")}
    os.environ["CRYPTOFLOW_STREAM_RUN_MAX_S"] = str(run_max_s)
    os.environ["CRYPTOFLOW_STREAM_HANDOVER_S"] = str(handover_s)
    try:
        with tempfile.TemporaryDirectory(prefix=f"bench-handover-{name}-") as tmp:
            since, until, rate, received, settings = _drive(Path(tmp), minutes, warmup_s)
            with lake.session(settings, read_only=True) as con:
                overall = report(con, since, until)
                window = {"since": since, "until": until}
                buckets = con.execute(_SPIKES, window).fetchall()
                runs = con.execute(
                    "SELECT count(DISTINCT ingest_run_id) FROM bronze.trades_raw WHERE source = 'ws' "
                    "AND ingest_time >= $since AND ingest_time < $until", window).fetchone()[0]
                slow = con.execute(
                    "SELECT count(*) FILTER (WHERE epoch_ms(f.ingested_at) - epoch_ms(b.event_time) > 5000), count(*) "
                    "FROM bronze.trades_raw b JOIN ops.ingested_files f ON b.batch_file = f.file "
                    "WHERE b.source = 'ws' AND f.ingested_at >= $since AND f.ingested_at < $until", window).fetchone()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {"silver": overall["silver"], "landed": overall["landed"], "rate": rate, "received": received,
            "runs_in_window": runs, "over_5s": slow[0], "trades": slow[1],
            "bucket_max_s": [round(b[1], 2) for b in buckets]}


def run(quick: bool, runs: int) -> Result:
    minutes = float(os.environ.get("CRYPTOFLOW_BENCH_HANDOVER_MINUTES", 3.0 if quick else 4.0))
    run_max_s = float(os.environ.get("CRYPTOFLOW_BENCH_HANDOVER_RUN_MAX_S", 60))
    handover_s = float(os.environ.get("CRYPTOFLOW_BENCH_HANDOVER_S", 20))
    variants = os.environ.get("CRYPTOFLOW_BENCH_HANDOVER_VARIANTS", "cold,overlap").split(",")
    warmup_s = 45.0
    result = Result("handover", f"1,000 msg/s (4 Binance symbols) for {minutes:g} min after {warmup_s:.0f} s warm-up, "
                                f"streaming runs of {run_max_s:g} s; cold hand-over vs overlap ({handover_s:g} s ahead)")
    details = {}
    for name in variants:
        details[name] = _variant(name, 0.0 if name == "cold" else handover_s, run_max_s, minutes, warmup_s)
        d = details[name]
        base = None if name == "cold" else "cold"
        for stat in ("p50", "p95", "p99", "max"):
            result.add(f"{name}: silver {stat} (whole window)", "s", [d["silver"][stat]], None, base and f"cold: silver {stat} (whole window)")
        result.add(f"{name}: worst 10 s bucket, silver max", "s", [max(d["bucket_max_s"] or [0])])
        result.add(f"{name}: trades over 5 s", "%", [100.0 * d["over_5s"] / max(1, d["trades"])], None, None,
                   f"{d['over_5s']} of {d['trades']}; {d['runs_in_window']} streaming runs ingested in the window")
    result.details = details
    return result


if __name__ == "__main__":  # python -m benchmarks.handover [--quick]: writes benchmarks/results/handover.json
    import sys

    from benchmarks.common import write_result

    print(write_result(run("--quick" in sys.argv, 1)))
