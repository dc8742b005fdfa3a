"""Ticker landing files -> ``bronze.tickers_raw`` (and dead letters), exactly once per file.

Upbit's ticker stream carries the exchange's own 24-hour figures. Bronze keeps every frame verbatim so they can be
compared with ``gold.market_stats_24h`` or replayed later; nothing downstream depends on them yet. As for trades, the
rows and the ``ops.ingested_files`` entries of a chunk commit in one transaction, so a killed run neither loses nor
doubles a ticker, and the landing retention can delete a ticker file once it is in the ledger.
"""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import duckdb

from cryptoflow_dagster import dead_letters, lake
from cryptoflow_dagster.defs.lake_tables import spec_metadata
from cryptoflow_dagster.streaming.ingest import CHUNK_FILES, not_ingested, read_landing
from cryptoflow_core import landing_files

BRONZE_TICKERS = dg.AssetKey(["bronze", "tickers_raw"])
# Written by the streaming run, not materialized here: declared so the asset graph shows it.
bronze_tickers = dg.AssetSpec(
    BRONZE_TICKERS,
    group_name="raw",
    kinds={"ducklake"},
    metadata=spec_metadata(BRONZE_TICKERS),
    description="Every Upbit ticker message as received by the sidecar (the exchange's own 24h figures), append-only.",
)

_STAGED = """
    SELECT exchange, market, batch_file, raw, session_id,
        CASE WHEN event_time_ms BETWEEN 0 AND 4102444800000 THEN make_timestamp(event_time_ms * 1000)::TIMESTAMPTZ END
            AS event_time,
        make_timestamp(receive_time_us)::TIMESTAMPTZ AS receive_time,
        CASE WHEN error IS NOT NULL THEN error
             WHEN market IS NULL OR event_time_ms IS NULL THEN 'missing market or time' END AS problem
    FROM _landing
"""


# Another run may have taken some of these files since we looked: the ledger, read inside the transaction, decides.
# (The ledger rows are inserted last, so all three statements see the same answer.)
_MINE = "batch_file NOT IN (SELECT i.file FROM ops.ingested_files i SEMI JOIN _staged s ON s.batch_file = i.file)"


def ingest_tickers(con: duckdb.DuckDBPyConnection, files: list[landing_files.LandingFile], run_id: str | None,
                   now: datetime | None = None) -> tuple[int, int]:
    """Ingest the ticker ``files`` not in the ledger yet. Returns (bronze rows, dead letters)."""
    files = not_ingested(con, [f for f in files if f.channel == "ticker"])
    rows = dead = 0
    for start in range(0, len(files), CHUNK_FILES):
        r, d = _ingest_chunk(con, files[start : start + CHUNK_FILES], run_id, now or datetime.now(timezone.utc))
        rows, dead = rows + r, dead + d
    return rows, dead


def _ingest_chunk(con, chunk: list[landing_files.LandingFile], run_id: str | None, now: datetime) -> tuple[int, int]:
    con.register("_landing", read_landing(chunk))
    con.register("_staged", con.execute(_STAGED).to_arrow_table())

    def work(c: duckdb.DuckDBPyConnection) -> tuple[int, int]:
        rows = c.execute(
            f"""INSERT INTO bronze.tickers_raw (exchange, market, event_time, raw_json, ingest_time, ingest_run_id,
                   batch_file, receive_time, session_id, day)
               SELECT exchange, market, event_time, decode(raw), $now, $run, batch_file, receive_time, session_id,
                   CAST(event_time AS DATE)
               FROM _staged WHERE problem IS NULL AND {_MINE}""",
            {"now": now, "run": run_id}).fetchone()[0]
        dead = dead_letters.insert(c, dead_letters.of_landing_rows("_staged", _MINE), source="ws", run_id=run_id)
        c.execute(
            f"""INSERT INTO ops.ingested_files (file, rows, ingested_at, run_id, dead_letters)
               SELECT batch_file, count(*), $now, $run, count(problem) FROM _staged
               WHERE {_MINE} GROUP BY batch_file""",
            {"now": now, "run": run_id})
        return rows, dead

    try:
        return lake.write(con, work)
    finally:
        con.unregister("_landing")
        con.unregister("_staged")
