"""Landing files -> bronze.trades_raw, bronze.dead_letters, silver.trades, intraday gold: exactly once per file.

One lake transaction per chunk of files writes the bronze rows, the dead letters, the new silver rows, the gold refresh
and the ``ops.ingested_files`` rows together. A run killed half-way commits nothing of the chunk, and a retry skips any
file already in ``ops.ingested_files`` (checked inside the same transaction), so rows are neither lost nor doubled.
silver.trades gets a row only for an (exchange, market, trade_id) it does not hold yet: duplicates and replays end as one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from cryptoflow_dagster import dead_letters, lake, silver_trades
from cryptoflow_dagster.streaming import intraday_gold
from cryptoflow_dagster.silver_trades import READABLE, with_trade_fields
from cryptoflow_core import landing_files

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

CHUNK_FILES = 500  # bounds one transaction's size when a backlog built up (e.g. after Dagster was down)


@dataclass
class IngestResult:
    files: int = 0
    bronze_rows: int = 0
    silver_rows: int = 0
    dead_letters: int = 0
    skipped_files: int = 0
    ticker_rows: int = 0
    gold: dict[str, int] = field(default_factory=dict)
    days: set = field(default_factory=set)
    max_event_lag_s: float | None = None


def pending_files(con: duckdb.DuckDBPyConnection, root: Path) -> list[landing_files.LandingFile]:
    """Trade landing files not yet in ``ops.ingested_files``, oldest first."""
    return not_ingested(con, landing_files.list_files(root, channels=("trade",)))


def not_ingested(
    con: duckdb.DuckDBPyConnection, files: list[landing_files.LandingFile], since: datetime | None = None
) -> list[landing_files.LandingFile]:
    """The ``files`` not in ``ops.ingested_files``. ``since``: none of them can have been ingested before this time
    (they were written after it), which lets the catalog skip older data files of the ever-growing table."""
    if not files:
        return []
    done = _already_ingested(con, [f.relative for f in files], since)
    return [f for f in files if f.relative not in done]


def _already_ingested(con: duckdb.DuckDBPyConnection, names: list[str], since: datetime | None = None) -> set[str]:
    import pyarrow as pa  # on first use, not at import: loading the code location does not need it

    con.register("_names", pa.table({"file": names}))
    try:
        return {r[0] for r in con.execute(
            "SELECT i.file FROM ops.ingested_files i JOIN _names n USING (file) WHERE $since IS NULL OR i.ingested_at >= $since",
            {"since": since}).fetchall()}
    finally:
        con.unregister("_names")


def read_landing(files: list[landing_files.LandingFile]) -> pa.Table:
    import pyarrow as pa  # on first use, not at import: loading the code location does not need it
    import pyarrow.parquet as pq


    tables = []
    for f in files:
        t = pq.read_table(f.path)
        tables.append(t.append_column("batch_file", pa.array([f.relative] * t.num_rows, pa.string())))
    if not tables:  # typed and empty, not column-less: SQL over no files selects nothing instead of failing
        return landing_files.schema().empty_table().append_column("batch_file", pa.array([], pa.string()))
    return pa.concat_tables(tables)


# Landing rows, typed; `problem` is why a row is a dead letter (the sidecar's reason, or a field silver cannot read).
_STAGED = with_trade_fields(
    """
    SELECT exchange, market, trade_id,
        -- an impossible time (the year 2100 or later) would overflow the conversion and fail every retry of the run
        CASE WHEN event_time_ms BETWEEN 0 AND 4102444800000 THEN make_timestamp(event_time_ms * 1000)::TIMESTAMPTZ END
            AS event_time,
        make_timestamp(receive_time_us)::TIMESTAMPTZ AS receive_time, session_id, batch_file, raw, error,
        CASE WHEN error IS NULL THEN decode(raw) END AS raw_json
    FROM _landing
    """
)
_STAGED = f"""
    SELECT *, CASE
        WHEN error IS NOT NULL THEN error
        WHEN trade_id IS NULL OR event_time IS NULL OR market IS NULL THEN 'missing trade id, time or market'
        WHEN NOT COALESCE({READABLE}, false) THEN 'unreadable price, volume or side'
        END AS problem
    FROM ({_STAGED})
"""


# The rows of the files this run ingests (another run may have taken some: see _ingest_chunk).
_MINE = "batch_file IN (SELECT file FROM _files)"

# The chunk's trades silver can read, as silver_trades.insert_new takes them.
_NEW_TRADES = f"""
    SELECT exchange, market, trade_id, event_time, price, volume, side, receive_time, 'ws' AS source,
        CAST(event_time AS DATE) AS day, true AS readable
    FROM _staged WHERE problem IS NULL AND {_MINE}
"""


def staged_trades(con: duckdb.DuckDBPyConnection, files: list[landing_files.LandingFile]) -> pa.Table:
    """The readable trades of landing ``files`` (exchange, market, trade_id, ts, price, volume), typed as silver types them.

    For readers that need a batch before it reaches silver (market alerts); rows silver would dead-letter are left out.
    """
    con.register("_landing", read_landing(files))
    try:
        return con.execute(
            f"SELECT exchange, market, trade_id, event_time AS ts, price, volume FROM ({_STAGED}) WHERE problem IS NULL"
        ).to_arrow_table()
    finally:
        con.unregister("_landing")


def ingest_pending(
    con: duckdb.DuckDBPyConnection,
    root: Path,
    run_id: str | None,
    now: datetime | None = None,
    files: list[landing_files.LandingFile] | None = None,
) -> IngestResult:
    """Ingest every pending trade landing file under ``root`` (or those of ``files`` not ingested yet). Safe to repeat."""
    result = IngestResult()
    files = pending_files(con, root) if files is None else not_ingested(con, files)
    for start in range(0, len(files), CHUNK_FILES):
        chunk = files[start : start + CHUNK_FILES]
        _ingest_chunk(con, chunk, run_id, now or datetime.now(timezone.utc), result)
    return result


def _ingest_chunk(con, chunk: list[landing_files.LandingFile], run_id: str | None, now: datetime, result: IngestResult) -> None:
    import pyarrow as pa  # on first use, not at import: loading the code location does not need it
    import pyarrow.compute as pc

    landing = read_landing(chunk)
    con.register("_landing", landing)
    staged = con.execute(_STAGED).to_arrow_table()
    con.register("_staged", staged)
    ranges = con.execute(
        """SELECT exchange, market, min(date_trunc('minute', event_time)) AS lo, max(date_trunc('minute', event_time)) AS hi
           FROM _staged WHERE problem IS NULL GROUP BY ALL"""
    ).to_arrow_table()
    con.register(intraday_gold.RANGES, ranges)
    per_file = con.execute(
        "SELECT batch_file AS file, count(*) AS rows, count(problem) AS dead_letters FROM _staged GROUP BY ALL"
    ).to_arrow_table()
    con.register("_files", per_file)

    def work(c: duckdb.DuckDBPyConnection) -> tuple[int, int, int, int, dict]:
        done = {r[0] for r in c.execute("SELECT i.file FROM ops.ingested_files i JOIN _files f USING (file)").fetchall()}
        if done:  # another run got there first: take only what is still ours
            keep = [r for r in per_file.column("file").to_pylist() if r not in done]
            c.register("_files", per_file.filter(pc.is_in(per_file["file"], pa.array(keep, pa.string()))))
        bronze = c.execute(
            f"""INSERT INTO bronze.trades_raw (exchange, market, trade_id, event_time, raw_json, unique_key, ingest_time,
                    ingest_run_id, source, batch_file, receive_time, session_id, day)
                SELECT exchange, market, trade_id, event_time, raw_json, exchange || ':' || market || ':' || trade_id,
                    $now, $run, 'ws', batch_file, receive_time, session_id, CAST(event_time AS DATE)
                FROM _staged WHERE problem IS NULL AND {_MINE}""",
            {"now": now, "run": run_id},
        ).fetchone()[0]
        dead = dead_letters.insert(c, dead_letters.of_landing_rows("_staged", _MINE), source="ws", run_id=run_id)
        # one row per trade, the first received
        silver = silver_trades.insert_new(c, _NEW_TRADES, now=now, prefer="receive_time", look_in_silver=True)
        gold = intraday_gold.refresh(c, now)
        c.execute(
            "INSERT INTO ops.ingested_files (file, rows, ingested_at, run_id, dead_letters) "
            "SELECT file, rows, $now, $run, dead_letters FROM _files",
            {"now": now, "run": run_id},
        )
        return bronze, dead, silver, len(done), gold

    try:
        bronze, dead, silver, skipped, gold = lake.write(con, work)
    finally:
        for name in ("_landing", "_staged", "_files", intraday_gold.RANGES):
            con.unregister(name)
    result.files += len(chunk) - skipped
    result.skipped_files += skipped
    result.bronze_rows += bronze
    result.dead_letters += dead
    result.silver_rows += silver
    for key, value in gold.items():
        result.gold[key] = result.gold.get(key, 0) + value
    days = ranges.column("lo").to_pylist() + ranges.column("hi").to_pylist()
    result.days |= {d.date() for d in days}
