"""``bronze.dead_letters``: the one function that writes rows silver could not take, with the reason, kept verbatim.

The streaming job (trade and ticker landing rows) and gap repair (REST trades) write them here, inside their own
transaction; the batch loads (Polars candles and Fear & Greed) build frames of the same columns (batch/silver.py) and
replace a partition's together with its silver rows.
"""

from __future__ import annotations

from typing import Any

import duckdb

COLUMNS = "received_at, source, batch_file, raw, error, exchange, market, ingest_run_id, day"

# Landing rows (the landing-file columns, typed: receive_time as TIMESTAMPTZ) with a ``problem``: the sidecar's reason
# or one the ingest found. Their day is the day they were received.
_LANDING = """
    SELECT receive_time AS received_at, batch_file, raw, problem AS error, exchange, market,
        CAST(receive_time AS DATE) AS day
    FROM {staged} WHERE problem IS NOT NULL AND {where}
"""


def of_landing_rows(staged: str, where: str = "TRUE") -> str:
    """The dead letters among the landing rows of relation ``staged`` that ``where`` selects, as :func:`insert` takes
    them (``staged`` and ``where`` are the caller's constant SQL)."""
    return _LANDING.format(staged=staged, where=where)


def insert(
    con: duckdb.DuckDBPyConnection,
    rows: str,
    *,
    source: str,
    run_id: str | None,
    params: dict[str, Any] | None = None,
    once_per_batch: bool = False,
) -> int:
    """Write the dead letters ``rows`` selects (``received_at, batch_file, raw, error, exchange, market, day``; its
    ``$`` parameters in ``params``) as ``source``'s, from run ``run_id``, inside the caller's transaction; return how
    many. ``once_per_batch``: a row whose (source, batch_file, raw) is already a dead letter is not written again (a
    repeated gap repair adds none)."""
    params = {**(params or {}), "dl_source": source, "dl_run": run_id}
    known = (
        """WHERE NOT EXISTS (SELECT 1 FROM bronze.dead_letters d
                            WHERE d.source = $dl_source AND d.batch_file = r.batch_file AND d.raw = r.raw)"""
        if once_per_batch else ""
    )
    return con.execute(
        f"""INSERT INTO bronze.dead_letters ({COLUMNS})
            SELECT {"DISTINCT " if once_per_batch else ""}received_at, $dl_source, batch_file, raw, error, exchange,
                market, $dl_run, day
            FROM ({rows}) r
            {known}""",
        params,
    ).fetchone()[0]
