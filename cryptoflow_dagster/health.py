"""Platform health figures read from the lake and the sidecar heartbeat: what an operator wants plotted over time.

Pure (no Dagster): the ``ops/platform_health`` asset records these as numeric metadata so the UI draws them as charts, and
tests call :func:`health_figures` directly on a real lake.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from cryptoflow_core.heartbeat import heartbeat_files, last_beat


def health_figures(con: duckdb.DuckDBPyConnection, now: datetime, landing: Path) -> dict[str, float | int]:
    """Counts and lags as of ``now``; every figure is a number so Dagster can plot it.

    With sharded sidecars the heartbeat age is the oldest shard's: the figure should rise when any collector stops."""
    since = now - timedelta(hours=24)
    lag = con.execute("SELECT epoch(?::TIMESTAMPTZ - max(ts)) FROM silver.trades", [now]).fetchone()[0]
    gaps = con.execute(
        """SELECT count(*), coalesce(sum(epoch(gap_end - gap_start)) / 60, 0) FROM ops.gaps WHERE repaired_at IS NULL"""
    ).fetchone()
    # Delivered and failed alerts are counted for the last day; pending ones whatever their age (they are still owed).
    alerts = dict(
        con.execute(
            """SELECT status, count(*) FROM gold.alerts WHERE triggered_at >= ? OR status = 'pending' GROUP BY status""",
            [since],
        ).fetchall()
    )
    beats = [last_beat(path)[0] for path in heartbeat_files(landing).values()]
    beat = min((b for b in beats if b is not None), default=None)
    return {
        "silver_trades_24h": con.execute("SELECT count(*) FROM silver.trades WHERE ts >= ?", [since]).fetchone()[0],
        "ingest_lag_seconds": float(lag) if lag is not None else -1.0,
        "files_ingested_24h": con.execute(
            "SELECT count(*) FROM ops.ingested_files WHERE ingested_at >= ?", [since]
        ).fetchone()[0],
        "dead_letters_24h": con.execute(
            "SELECT count(*) FROM bronze.dead_letters WHERE received_at >= ?", [since]
        ).fetchone()[0],
        "open_gaps": int(gaps[0]),
        "open_gap_minutes": float(gaps[1]),
        "alerts_sent_24h": int(alerts.get("sent", 0)),
        "alerts_pending": int(alerts.get("pending", 0)),
        "alerts_failed_24h": int(alerts.get("failed", 0)),
        "heartbeat_age_seconds": (now - beat).total_seconds() if beat else -1.0,
        "sidecar_shards": len(beats),
    }
