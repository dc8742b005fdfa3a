"""A day of silver trades and intraday gold rebuilt from bronze (the `silver/trades` and intraday gold day assets run it).

The streaming job writes the same tables incrementally; a day rebuild is how a day is made whole again after a fix
(a parser change, a repaired gap, a bad run): delete the day, recompute it, in one transaction each, idempotently.
"""


from datetime import date, datetime, time, timedelta, timezone

import duckdb

from cryptoflow_dagster import lake
from cryptoflow_dagster.streaming import intraday_gold
from cryptoflow_dagster import silver_trades
from cryptoflow_dagster.silver_trades import READABLE, with_trade_fields

# Bronze's day, one row per (exchange, market, trade_id): the earliest ingested copy (then the earliest received)
# among those silver can read. silver_trades.insert_new does the dedupe (only keys bronze holds more than once go
# through its window; ADR 0013); the day was deleted just before, so silver is not looked in.
_PREFER = "ingest_time, receive_time"


def _bronze(bronze: str) -> str:
    return ("SELECT exchange, market, trade_id, event_time, ingest_time, receive_time, source, day, raw_json "
            f"FROM {bronze}")


def _typed(rows: str) -> str:
    """Bronze ``rows`` with their trade fields and whether silver can read them."""
    return f"SELECT *, COALESCE(event_time IS NOT NULL AND {READABLE}, false) AS readable FROM ({with_trade_fields(rows)})"


def silver_trades_sql(bronze: str) -> str:
    """silver.trades' rows, in its column order, from ``bronze`` (a relation with bronze.trades_raw's columns, read
    three times); ``$now`` is their ingest_time. The benchmarks' bare-DuckDB engine runs this same SQL on Parquet."""
    return silver_trades.new_trades_sql(_bronze(bronze), prefer=_PREFER, typed=_typed, look_in_silver=False)


def rebuild_silver_day(con: duckdb.DuckDBPyConnection, day: date, now: datetime) -> int:
    """Replace silver.trades for ``day`` with bronze's trades of that day, one row per (exchange, market, trade_id):
    the earliest ingested copy (then the earliest received) among those silver can read."""

    def work(c: duckdb.DuckDBPyConnection) -> int:
        c.execute("DELETE FROM silver.trades WHERE day = ?", [day])
        return silver_trades.insert_new(
            c, _bronze("(SELECT * FROM bronze.trades_raw WHERE day = $day)"), params={"day": day}, now=now,
            prefer=_PREFER, typed=_typed, look_in_silver=False)

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
