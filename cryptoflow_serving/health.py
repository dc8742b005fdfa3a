"""``GET /v1/health``: what the lake itself says about freshness, read at one snapshot.

The API does not talk to Dagster, so it shows what the lake records: each table's freshest time and its lag, each
market's last trade and last bar, the ingest log (``ops.ingested_files``), dead letters, open gaps (``ops.gaps``) and
the alert outbox. What lives only in the Dagster instance is listed under ``cannot_show``.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

import duckdb

# (table, its freshness column): the tables a reader of this API relies on.
TABLES = (
    ("silver.trades", "ts"),
    ("gold.ohlcv_1m_from_trades", "ts"),
    ("gold.market_stats_24h", "as_of"),
    ("gold.kimchi_premium_1m", "ts"),
    ("silver.candles_1m", "ts"),
    ("silver.candles_1d", "day"),
    ("gold.indicators_daily", "day"),
    ("gold.volatility_daily", "day"),
    ("gold.volatility_rolling", "day"),
    ("gold.sentiment_daily", "day"),
    ("gold.volatility_forecast", "day"),
    ("gold.alerts", "triggered_at"),
    ("ops.ingested_files", "ingested_at"),
)
CANNOT_SHOW = [
    "Dagster asset check results, run status, sensor and schedule state: they live in the Dagster instance "
    "(the UI at CRYPTOFLOW_UI_URL shows them)",
    "whether the sidecar is connected right now: its heartbeat file is in the landing folder, not the lake "
    "(`cryptoflow doctor`)",
    "trades the exchanges sent that have not been committed to the lake yet",
]
# Bounded: each table's freshness is read from the rows of the last few days only (a table is not scanned whole).
RECENT_DAYS = 3


def read(con: duckdb.DuckDBPyConnection, snapshot: int, prices: dict) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    tables = [_table(con, table, column, now) for table, column in TABLES]
    bars = dict(((r[0], r[1]), r[2]) for r in _all(con, """
        SELECT exchange, market, max(ts) FROM gold.ohlcv_1m_from_trades WHERE ts >= ? GROUP BY ALL""",
        [now - timedelta(days=RECENT_DAYS)]))
    markets = []
    for (exchange, market), p in sorted(prices.items()):
        markets.append({"exchange": exchange, "market": market, "last_trade_ts": p["last_trade_ts"],
                        "lag_s": _lag(now, p["last_trade_ts"]), "last_bar_ts": bars.get((exchange, market))})
    day_ago = now - timedelta(days=1)
    ingest = _one(con, """SELECT max(ingested_at), count(*) FILTER (WHERE ingested_at >= ?) FROM ops.ingested_files
                          WHERE ingested_at >= ?""", [now - timedelta(hours=1), day_ago])
    dead = _one(con, "SELECT count(*) FROM bronze.dead_letters WHERE received_at >= ?", [day_ago])
    gaps_open = _all(con, """SELECT exchange, market, gap_start, gap_end, detected_at FROM ops.gaps
                             WHERE repaired_at IS NULL ORDER BY detected_at DESC LIMIT 20""", [])
    repaired = _one(con, "SELECT count(*) FROM ops.gaps WHERE repaired_at >= ?", [day_ago])
    open_count = _one(con, "SELECT count(*) FROM ops.gaps WHERE repaired_at IS NULL", [])
    outbox = dict(_all(con, "SELECT status, count(*) FROM gold.alerts WHERE status <> 'sent' GROUP BY status", []))
    return {
        "snapshot": snapshot,
        "now": now,
        "tables": tables,
        "markets": markets,
        "ingest": {"last_file_ingested_at": ingest[0] if ingest else None,
                   "files_last_hour": ingest[1] if ingest else None,
                   "dead_letters_last_24h": dead[0] if dead else None},
        "gaps": {"open": open_count[0] if open_count else None,
                 "open_list": [dict(zip(("exchange", "market", "gap_start", "gap_end", "detected_at"), g))
                               for g in gaps_open],
                 "repaired_last_24h": repaired[0] if repaired else None},
        "alerts": {"pending": outbox.get("pending", 0), "failed": outbox.get("failed", 0)},
        "cannot_show": CANNOT_SHOW,
    }


def _table(con: duckdb.DuckDBPyConnection, table: str, column: str, now: datetime) -> dict[str, Any]:
    # table and column come from TABLES above, never from a request
    recent: Any = now - timedelta(days=RECENT_DAYS)
    if column == "day":
        recent = recent.date()
    row = _one(con, f"SELECT max({column}) FROM {table} WHERE {column} >= ?", [recent])
    if row is None:
        return {"table": table, "exists": False, "latest": None, "lag_s": None}
    latest = row[0]
    if latest is None:  # nothing recent: the slower look over the whole table says how stale it is
        latest = _one(con, f"SELECT max({column}) FROM {table}", [])[0]
    return {"table": table, "exists": True, "latest": latest, "lag_s": _lag(now, latest)}


def _lag(now: datetime, latest: Any) -> float | None:
    if isinstance(latest, datetime):
        return round((now - latest).total_seconds(), 3)
    if isinstance(latest, date):
        return round((now - datetime.combine(latest, datetime.min.time(), tzinfo=timezone.utc)).total_seconds(), 3)
    return None


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> tuple | None:
    rows = _all(con, sql, params, missing=None)
    return rows[0] if rows else None


def _all(con: duckdb.DuckDBPyConnection, sql: str, params: list, missing: Any = ()) -> list[tuple]:
    try:
        return con.execute(sql, params).fetchall()
    except duckdb.CatalogException:  # the table is not there yet: health says so, it does not fail
        return [] if missing == () else missing
