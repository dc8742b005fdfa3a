"""The lake's tables that Python writes (the data contract in docs/architecture.md): their DDL, created idempotently by
:func:`ensure_schema`, and the data file options the lake writes every table's Parquet with.

Gold tables built by dbt are created by dbt. Contract columns come first and keep their names; the extra columns after
them are ours to add to.
"""

from __future__ import annotations

import duckdb

from cryptoflow_dagster.lake.sql import CATALOG
from cryptoflow_dagster.lake.transactions import write

SCHEMAS = ("bronze", "silver", "gold", "ops")

TABLES: dict[str, str] = {
    "bronze.trades_raw": """
        exchange VARCHAR NOT NULL, market VARCHAR NOT NULL, trade_id BIGINT NOT NULL, event_time TIMESTAMPTZ,
        raw_json VARCHAR NOT NULL, unique_key VARCHAR NOT NULL, ingest_time TIMESTAMPTZ NOT NULL,
        ingest_run_id VARCHAR, source VARCHAR NOT NULL, batch_file VARCHAR,
        receive_time TIMESTAMPTZ, session_id VARCHAR, day DATE
    """,
    "bronze.candles_raw": """
        exchange VARCHAR NOT NULL, market VARCHAR NOT NULL, interval VARCHAR NOT NULL, candle_start TIMESTAMPTZ NOT NULL,
        raw_json VARCHAR NOT NULL, unique_key VARCHAR NOT NULL, ingest_time TIMESTAMPTZ NOT NULL,
        ingest_run_id VARCHAR, api_params_json VARCHAR, day DATE
    """,
    # Upbit's ticker stream (the exchange's own 24h figures), kept verbatim from the sidecar's landing files.
    "bronze.tickers_raw": """
        exchange VARCHAR NOT NULL, market VARCHAR NOT NULL, event_time TIMESTAMPTZ, raw_json VARCHAR NOT NULL,
        ingest_time TIMESTAMPTZ NOT NULL, ingest_run_id VARCHAR, batch_file VARCHAR, receive_time TIMESTAMPTZ,
        session_id VARCHAR, day DATE
    """,
    "bronze.fear_greed_raw": """
        day DATE NOT NULL, raw_json VARCHAR NOT NULL, ingest_time TIMESTAMPTZ NOT NULL, ingest_run_id VARCHAR
    """,
    # raw is BLOB so that bytes that are not even UTF-8 are kept exactly: nothing is lost.
    "bronze.dead_letters": """
        received_at TIMESTAMPTZ NOT NULL, source VARCHAR NOT NULL, batch_file VARCHAR, raw BLOB, error VARCHAR NOT NULL,
        exchange VARCHAR, market VARCHAR, ingest_run_id VARCHAR,
        day DATE  -- the partition a batch load rejected the row in, so a rebuild replaces its own dead letters
    """,
    "silver.trades": """
        exchange VARCHAR NOT NULL, market VARCHAR NOT NULL, trade_id BIGINT NOT NULL, ts TIMESTAMPTZ NOT NULL,
        price DOUBLE NOT NULL, volume DOUBLE NOT NULL, quote_volume DOUBLE NOT NULL, side VARCHAR NOT NULL,
        ingest_time TIMESTAMPTZ NOT NULL, receive_time TIMESTAMPTZ, source VARCHAR, day DATE
    """,
    "silver.candles_1m": """
        exchange VARCHAR NOT NULL, market VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL,
        open DOUBLE NOT NULL, high DOUBLE NOT NULL, low DOUBLE NOT NULL, close DOUBLE NOT NULL,
        volume DOUBLE NOT NULL, quote_volume DOUBLE NOT NULL, ingest_time TIMESTAMPTZ, day DATE
    """,
    "silver.candles_1d": """
        exchange VARCHAR NOT NULL, market VARCHAR NOT NULL, day DATE NOT NULL,
        open DOUBLE NOT NULL, high DOUBLE NOT NULL, low DOUBLE NOT NULL, close DOUBLE NOT NULL,
        volume DOUBLE NOT NULL, quote_volume DOUBLE NOT NULL, ingest_time TIMESTAMPTZ
    """,
    "silver.fear_greed": """
        day DATE NOT NULL, value INTEGER NOT NULL, classification VARCHAR NOT NULL, ingest_time TIMESTAMPTZ
    """,
    # The alert outbox: a row is written (pending) before delivery and updated to sent|failed after.
    "gold.alerts": """
        alert_id VARCHAR NOT NULL, rule VARCHAR NOT NULL, exchange VARCHAR, market VARCHAR, event_time TIMESTAMPTZ,
        triggered_at TIMESTAMPTZ NOT NULL, value DOUBLE, threshold DOUBLE, message VARCHAR, dedupe_key VARCHAR NOT NULL,
        status VARCHAR NOT NULL, attempts INTEGER NOT NULL, delivered_at TIMESTAMPTZ, last_error VARCHAR,
        next_attempt_at TIMESTAMPTZ, details_json VARCHAR
    """,
    # Intraday gold from the trade stream (streaming job, SQL through the lake module: see docs/decisions/0004).
    "gold.ohlcv_1m_from_trades": """
        exchange VARCHAR NOT NULL, market VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL,
        open DOUBLE NOT NULL, high DOUBLE NOT NULL, low DOUBLE NOT NULL, close DOUBLE NOT NULL,
        volume DOUBLE NOT NULL, quote_volume DOUBLE NOT NULL, trade_count BIGINT NOT NULL, vwap DOUBLE NOT NULL,
        updated_at TIMESTAMPTZ, day DATE
    """,
    "gold.market_stats_24h": """
        exchange VARCHAR NOT NULL, market VARCHAR NOT NULL, as_of TIMESTAMPTZ NOT NULL,
        open_24h DOUBLE, high_24h DOUBLE, low_24h DOUBLE, last_price DOUBLE, change_pct DOUBLE,
        volume_24h DOUBLE, quote_volume_24h DOUBLE, vwap_24h DOUBLE, trade_count_24h BIGINT, updated_at TIMESTAMPTZ
    """,
    "gold.kimchi_premium_1m": """
        ts TIMESTAMPTZ NOT NULL, asset VARCHAR NOT NULL, upbit_krw DOUBLE NOT NULL, binance_usdt DOUBLE NOT NULL,
        usdt_krw DOUBLE NOT NULL, premium_pct DOUBLE NOT NULL, updated_at TIMESTAMPTZ, day DATE
    """,
    # Volatility forecasts (HAR-RV, GARCH(1,1), naive) and their out-of-sample evaluation: docs/decisions/0022.
    # `day` is the first day a forecast is for; forecast_vol is a daily sigma like gold.volatility_daily's.
    "gold.volatility_forecast": """
        exchange VARCHAR NOT NULL, market VARCHAR NOT NULL, day DATE NOT NULL, model VARCHAR NOT NULL,
        horizon_days INTEGER NOT NULL, forecast_vol DOUBLE NOT NULL, forecast_variance DOUBLE NOT NULL,
        train_start DATE, train_end DATE, made_at TIMESTAMPTZ NOT NULL, params_json VARCHAR
    """,
    "gold.volatility_forecast_eval": """
        exchange VARCHAR NOT NULL, market VARCHAR NOT NULL, as_of DATE NOT NULL, model VARCHAR NOT NULL,
        horizon_days INTEGER NOT NULL, n BIGINT NOT NULL, qlike DOUBLE, mse DOUBLE, qlike_ratio DOUBLE, mse_ratio DOUBLE,
        dm_stat DOUBLE, dm_pvalue DOUBLE,  -- Diebold-Mariano on QLIKE differences; the MSE one beside it
        dm_stat_mse DOUBLE, dm_pvalue_mse DOUBLE
    """,
    "ops.ingested_files": """
        file VARCHAR NOT NULL, rows BIGINT NOT NULL, ingested_at TIMESTAMPTZ NOT NULL, run_id VARCHAR,
        dead_letters BIGINT
    """,
    "ops.gaps": """
        exchange VARCHAR NOT NULL, market VARCHAR NOT NULL, gap_start TIMESTAMPTZ NOT NULL, gap_end TIMESTAMPTZ NOT NULL,
        detected_at TIMESTAMPTZ NOT NULL, repaired_at TIMESTAMPTZ, repaired_rows BIGINT,
        gap_id VARCHAR, kind VARCHAR, first_missing_id BIGINT, last_missing_id BIGINT
    """,
    # When the lake commits that inserted into ops.ingested_files became visible: recorded by lake maintenance from
    # DuckLake's snapshots in the transaction that expires them, so `cryptoflow slo` still has them (ADR 0017).
    "ops.ingest_commits": """
        snapshot_id BIGINT NOT NULL, committed_at TIMESTAMPTZ NOT NULL, recorded_at TIMESTAMPTZ NOT NULL
    """,
}


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the contract's schemas and Python-written tables if they do not exist, and set the lake's data file
    options (idempotent, safe to race)."""

    def create(c: duckdb.DuckDBPyConnection) -> None:
        for schema in SCHEMAS:
            c.execute(f"CREATE SCHEMA IF NOT EXISTS {CATALOG}.{schema}")
        for table, columns in TABLES.items():
            c.execute(f"CREATE TABLE IF NOT EXISTS {CATALOG}.{table} ({columns})")

    existing = {
        f"{s}.{t}"
        for s, t in con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ?", [CATALOG]
        ).fetchall()
    }
    if set(TABLES) - existing:
        write(con, create)
    _ensure_data_file_options(con)


# How the lake writes its Parquet files, for every table (dbt's included), set once in the catalog. Parquet format v2
# (DELTA encodings, v2 data pages): the batch rebuild's inserts took ~20 % less time (10 M silver rows: 2.3 s against
# 2.9 s) and scans ~30 % less, on DuckDB 1.5.5; Spark >= 3.3, pyarrow and Polars read it (ADR 0013). Files written
# before the option was set stay as they are: both versions read alike.
# option: (the value set_option takes, the value ducklake_options shows)
DATA_FILE_OPTIONS = {"parquet_version": ("2", "V2")}


def _ensure_data_file_options(con: duckdb.DuckDBPyConnection) -> None:
    current = dict(con.execute(
        "SELECT option_name, value FROM ducklake_options(?) WHERE scope = 'GLOBAL'", [CATALOG]
    ).fetchall())
    missing = {k: value for k, (value, shown) in DATA_FILE_OPTIONS.items() if current.get(k) != shown}
    if missing:
        write(con, lambda c: [c.execute(f"CALL {CATALOG}.set_option(?, ?)", [k, v]) for k, v in missing.items()])
