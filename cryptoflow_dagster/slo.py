"""``cryptoflow slo``: latency of the near-real-time path, per stage and end to end, from what the lake itself recorded.

For every trade ingested in the window (bronze.trades_raw, joined to its landing file in ops.ingested_files):
- received:  ``receive_time - event_time`` (the sidecar stamped the frame);
- landed:    the landing file's write time (in its name, see cryptoflow_core/landing_files.py) ``- event_time``;
- silver:    the commit of the lake transaction that ingested the file ``- event_time``: the first DuckLake snapshot at
             or after the run's ingest time that inserted into ops.ingested_files (the file's row is written in that
             same transaction, so the snapshot time is when readers could first see the trade). Lake maintenance
             expires old snapshots; the transaction that expires them records these commits' times in
             ops.ingest_commits first, and both are read here (docs/decisions/0017);
- gold 24h stats: the streaming job refreshes gold.market_stats_24h in that same transaction, so its visibility is the
             same commit; reported as its own objective all the same;
- alert delivered: ``delivered_at - event_time`` of every alert sent in the window (gold.alerts outbox), all rules;
- price shock delivered: the same for price-move alerts only. Their ``event_time`` is the trade that crossed the
             threshold, so this is "price shock at the exchange -> Slack message". The other rules stamp the start of
             the bucket or minute that fired (volume spike, volatility, Korean premium: one alert per bucket is their
             dedupe key), so their figure includes up to a bucket of waiting for the bucket to fill, and carries no
             objective.
Objectives (issues 5 and 6): silver p95 <= 10 s, gold 24h stats p95 <= 15 s, price shock delivered p95 <= 8 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import duckdb

from cryptoflow_dagster import lake
from cryptoflow_core.settings import load_settings

OBJECTIVES_P95_S = {"silver": 10.0, "gold_stats_24h": 15.0, "price_shock_delivered": 8.0}

# The snapshots that inserted into ops.ingested_files (its table id is $files_table): small inserts are inlined into the
# catalog (DuckLake data inlining), so either key marks the commit. Lake maintenance records the same snapshots in
# ops.ingest_commits before it expires them (cryptoflow_dagster/maintenance/lake_upkeep.py).
INGESTED = ("list_contains(coalesce(changes['tables_inserted_into'], []) || coalesce(changes['inlined_insert'], []), "
            "$files_table)")
INGEST_SNAPSHOTS = "SELECT snapshot_id, snapshot_time FROM ducklake_snapshots('{catalog}') WHERE " + INGESTED
_RECORDED_COMMITS = ("UNION ALL SELECT committed_at FROM ops.ingest_commits "
                     "WHERE committed_at >= $since - INTERVAL 1 DAY")

_TRADES = """
    WITH snaps AS (
        SELECT snapshot_time FROM ({ingest_snapshots}) {recorded}
    ), files AS (
        SELECT f.file, (SELECT min(s.snapshot_time) FROM snaps s WHERE s.snapshot_time >= f.ingested_at) AS committed
        FROM ops.ingested_files f WHERE f.ingested_at >= $since AND f.ingested_at < $until
    ), trades AS (
        SELECT epoch_ms(b.event_time) / 1000.0 AS event_s, epoch_ms(b.receive_time) / 1000.0 AS received_s,
            epoch_ms(strptime(regexp_extract(b.batch_file, '(\\d{{8}}T\\d{{12}})Z-', 1), '%Y%m%dT%H%M%S%f')) / 1000.0
                AS landed_s,
            epoch_ms(f.committed) / 1000.0 AS committed_s
        FROM bronze.trades_raw b JOIN files f ON b.batch_file = f.file
        WHERE b.source = 'ws' AND b.day >= CAST($since AS DATE) - 1
    )
    SELECT received_s - event_s AS received, landed_s - event_s AS landed, committed_s - event_s AS silver
    FROM trades WHERE committed_s IS NOT NULL
"""

_ALERTS = """
    SELECT rule, epoch_ms(triggered_at) / 1000.0 - epoch_ms(event_time) / 1000.0 AS triggered,
        epoch_ms(delivered_at) / 1000.0 - epoch_ms(event_time) / 1000.0 AS alert_delivered
    FROM gold.alerts
    WHERE status = 'sent' AND delivered_at IS NOT NULL AND event_time IS NOT NULL
      AND triggered_at >= $since AND triggered_at < $until
"""


def _percentiles(con: duckdb.DuckDBPyConnection, relation: str, column: str) -> dict[str, Any]:
    row = con.execute(
        f"SELECT count({column}), quantile_cont({column}, 0.5), quantile_cont({column}, 0.95), "
        f"quantile_cont({column}, 0.99), max({column}) FROM {relation}"
    ).fetchone()
    return dict(zip(("count", "p50", "p95", "p99", "max"), row))


def report(
    con: duckdb.DuckDBPyConnection, since: datetime, until: datetime | None = None, catalog: str = lake.CATALOG
) -> dict[str, dict[str, Any]]:
    """Per-stage latency percentiles (seconds after the trade's event time) of trades ingested in [since, until)."""
    window = {"since": since, "until": until or datetime.now(timezone.utc) + timedelta(days=1)}
    files_table = con.execute(
        f"SELECT CAST(table_id AS VARCHAR) FROM ducklake_table_info('{catalog}') WHERE table_name = 'ingested_files'"
    ).fetchone()
    if files_table is None:
        raise RuntimeError("the lake has no ops.ingested_files table: run `cryptoflow doctor` (schema not created?)")
    # A lake from before ops.ingest_commits existed, opened read-only (nothing creates the table), has only snapshots.
    recorded = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'ops' "
        "AND table_name = 'ingest_commits'", [catalog]
    ).fetchone()[0]
    sql = _TRADES.format(ingest_snapshots=INGEST_SNAPSHOTS.format(catalog=catalog),
                         recorded=_RECORDED_COMMITS if recorded else "")
    trades = con.execute(sql, {**window, "files_table": files_table[0]}).to_arrow_table()
    alerts = con.execute(_ALERTS, window).to_arrow_table()
    con.register("_slo_trades", trades)
    con.register("_slo_alerts", alerts)
    try:
        stages = {name: _percentiles(con, "_slo_trades", name) for name in ("received", "landed", "silver")}
        stages["gold_stats_24h"] = dict(stages["silver"])  # same transaction as silver (see the module docstring)
        stages["alert_triggered"] = _percentiles(con, "_slo_alerts", "triggered")
        stages["alert_delivered"] = _percentiles(con, "_slo_alerts", "alert_delivered")
        stages["price_shock_delivered"] = _percentiles(
            con, "(SELECT * FROM _slo_alerts WHERE rule = 'price_move')", "alert_delivered")
    finally:
        con.unregister("_slo_trades")
        con.unregister("_slo_alerts")
    for name, stats in stages.items():
        objective = OBJECTIVES_P95_S.get(name)
        stats["objective_p95_s"] = objective
        stats["met"] = None if objective is None or stats["p95"] is None else stats["p95"] <= objective
    return stages


def _report_retrying(since: datetime, attempts: int = 20) -> dict[str, dict[str, Any]]:
    """The report while the platform runs: attaching the SQLite catalog fails with "database is locked" when a
    streaming run commits at that moment, so the attach is retried (a run's commit holds the lock well under a second)."""
    for attempt in range(1, attempts + 1):
        try:
            with lake.session(load_settings(), read_only=True) as con:
                return report(con, since)
        except duckdb.Error as exc:
            if attempt == attempts or not lake.is_retryable(exc):
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cryptoflow slo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="trades ingested in the last N minutes (default 15)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    since = datetime.now(timezone.utc) - timedelta(minutes=args.minutes)
    stages = _report_retrying(since)
    if args.json:
        print(json.dumps({"since": since.isoformat(), "stages": stages}, default=str))
    else:
        print(f"latency after event time, trades ingested since {since:%Y-%m-%d %H:%M:%S} UTC (seconds)")
        print(f"{'stage':<22}{'count':>9}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  objective")
        for name, s in stages.items():
            verdict = "" if s["met"] is None else ("OK" if s["met"] else "MISSED")
            goal = f"p95 <= {s['objective_p95_s']:g} s {verdict}" if s["objective_p95_s"] else ""
            print(f"{name:<22}{s['count']:>9}" + "".join(f"{_cell(s[k]):>9}" for k in ("p50", "p95", "p99", "max"))
                  + f"  {goal}")
    missed = [n for n, s in stages.items() if s["met"] is False]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
