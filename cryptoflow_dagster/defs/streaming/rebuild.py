"""A day of silver trades and intraday gold rebuilt from bronze (the `silver/trades` and intraday gold day assets run it).

The streaming job writes the same tables incrementally; a day rebuild is how a day is made whole again after a fix
(a parser change, a repaired gap, a bad run): delete the day, recompute it, in one transaction each, idempotently.
"""


from datetime import date, datetime, time, timedelta, timezone

import duckdb

from cryptoflow_dagster import lake
from cryptoflow_dagster.defs.streaming import intraday_gold
from cryptoflow_dagster.defs.streaming.trade_sql import READABLE, with_trade_fields

# Bronze's day with its trade fields, one row per (exchange, market, trade_id): the earliest ingested copy (then the
# earliest received) among those silver can read.
#
# Only keys bronze holds more than once go through the dedupe window: the window sorts every row it sees with all its
# columns, and most keys arrive once. The keys seen more than once are found by a 64-bit hash of the key (one integer
# to group on instead of three columns); a hash collision only sends a trade seen once through the window as well.
# Measured on one day of 5 M trades: 1.15 CPU-s for the hash groups against 2.8 for the window over every row
# (ADR 0013).
#
# Readability is ordered on inside the window and filtered on after it. DuckDB pushes a filter below the projections
# it reads through, substituting their expressions: a filter on price/side would cast every price and volume a second
# time (and, below with_trade_fields' projection, parse every message twice). ``random() < 2`` is always true and
# volatile, which DuckDB never pushes down: the filter on ``readable`` stays where the column is already computed
# (~1 s less per 10 M trades than the filter pushed down; ADR 0013).
_KEY_HASH = "hash(exchange, market, trade_id)"
_KEEP_FILTER_ABOVE = "random() < 2"


def _typed(bronze: str, keys: str) -> str:
    """``bronze``'s rows whose key ``keys`` selects (a condition on _KEY_HASH), with trade fields and readability."""
    return f"""
        SELECT *, COALESCE(event_time IS NOT NULL AND {READABLE}, false) AS readable
        FROM ({with_trade_fields(
            "SELECT exchange, market, trade_id, event_time, ingest_time, receive_time, source, day, raw_json "
            f"FROM {bronze} WHERE {_KEY_HASH} {keys}")})
    """


def silver_trades_sql(bronze: str) -> str:
    """silver.trades' rows, in its column order, from ``bronze`` (a relation with bronze.trades_raw's columns, read
    three times); ``$now`` is their ingest_time. The benchmarks' bare-DuckDB engine runs this same SQL on Parquet."""
    return f"""
        WITH repeated AS MATERIALIZED (SELECT {_KEY_HASH} AS h FROM {bronze} GROUP BY h HAVING count(*) > 1)
        SELECT exchange, market, trade_id, event_time AS ts, price, volume, price * volume AS quote_volume, side,
            $now AS ingest_time, receive_time, source, day
        FROM (
            SELECT * REPLACE (readable AND {_KEEP_FILTER_ABOVE} AS readable)
            FROM ({_typed(bronze, "NOT IN (SELECT h FROM repeated)")})
            UNION ALL
            ({_typed(bronze, "IN (SELECT h FROM repeated)")}
             QUALIFY row_number() OVER (PARTITION BY exchange, market, trade_id
                                        ORDER BY readable DESC, ingest_time, receive_time) = 1)
        )
        WHERE readable
    """


_SILVER_DAY = f"""
    INSERT INTO silver.trades (exchange, market, trade_id, ts, price, volume, quote_volume, side, ingest_time,
        receive_time, source, day)
    {silver_trades_sql("(SELECT * FROM bronze.trades_raw WHERE day = $day)")}
"""


def rebuild_silver_day(con: duckdb.DuckDBPyConnection, day: date, now: datetime) -> int:
    """Replace silver.trades for ``day`` with bronze's trades of that day, one row per (exchange, market, trade_id):
    the earliest ingested copy (then the earliest received) among those silver can read."""

    def work(c: duckdb.DuckDBPyConnection) -> int:
        c.execute("DELETE FROM silver.trades WHERE day = ?", [day])
        return c.execute(_SILVER_DAY, {"day": day, "now": now}).fetchone()[0]

    return lake.write(con, work)


def rebuild_gold_day(con: duckdb.DuckDBPyConnection, day: date, now: datetime) -> dict[str, int]:
    lo = datetime.combine(day, time(0), tzinfo=timezone.utc)
    hi = lo + timedelta(days=1) - timedelta(minutes=1)
    ranges = con.execute(
        "SELECT DISTINCT exchange, market, $lo::TIMESTAMPTZ AS lo, $hi::TIMESTAMPTZ AS hi FROM silver.trades WHERE day = $day",
        {"lo": lo, "hi": hi, "day": day},
    ).to_arrow_table()
    con.register(intraday_gold.RANGES, ranges)
    try:
        return lake.write(con, lambda c: intraday_gold.refresh(c, now))
    finally:
        con.unregister(intraday_gold.RANGES)
