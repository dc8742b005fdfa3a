"""A chunk reads the silver files of its own trade-time range, never the whole day (DuckLake prunes the rest by their ts
statistics): silver_trades.insert_new looks for earlier copies only within the candidates' range and stays exactly-once
(a trade's time never changes); intraday_gold.refresh reads the trades of the minutes it recomputes (its bounds come
through a join with the ranges, which DuckDB turns into a filter on the scan at run time)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from cryptoflow_dagster import lake, silver_trades
from cryptoflow_dagster.streaming import intraday_gold

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
COMMITS, PER_COMMIT, SPACING = 60, 500, timedelta(minutes=20)


def _fill(con) -> None:
    """A day of silver in COMMITS commits (one data file each), trade ids in time order."""
    for i in range(COMMITS):
        start = T0 + i * SPACING
        con.execute(
            """INSERT INTO silver.trades (exchange, market, trade_id, ts, price, volume, quote_volume, side, ingest_time,
                   receive_time, source, day)
               SELECT 'binance', 'BTCUSDT', $first + r, $start + to_milliseconds(r * 100), 100, 1, 100, 'buy', $start,
                   $start, 'ws', CAST($start AS DATE)
               FROM range($n) t(r)""",
            {"first": i * PER_COMMIT, "start": start, "n": PER_COMMIT},
        )


def _candidates(con, trades: list[tuple[int, datetime]]) -> str:
    con.register("_chunk", pa.table({"trade_id": pa.array([t for t, _ in trades], pa.int64()),
                                     "event_time": pa.array([e for _, e in trades], pa.timestamp("us", tz="UTC"))}))
    return """SELECT 'binance' AS exchange, 'BTCUSDT' AS market, trade_id, event_time, 101.0 AS price, 2.0 AS volume,
                  'sell' AS side, event_time AS receive_time, 'ws' AS source, CAST(event_time AS DATE) AS day,
                  true AS readable
              FROM _chunk"""


@pytest.fixture
def day_of_silver(settings):
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        _fill(con)
        yield con


def _time_of(trade_id: int) -> datetime:
    commit, r = divmod(trade_id, PER_COMMIT)
    return T0 + commit * SPACING + timedelta(milliseconds=r * 100)


def test_a_chunk_at_the_end_of_the_day_reads_only_the_files_of_its_time_range(day_of_silver):
    con = day_of_silver
    last = COMMITS * PER_COMMIT - 1
    # two copies of trades silver holds (the last commit's), and three new ones after them
    trades = [(last - 1, _time_of(last - 1)), (last, _time_of(last))]
    trades += [(last + k, _time_of(last) + timedelta(milliseconds=100 * k)) for k in (1, 2, 3)]
    candidates = _candidates(con, trades)
    lo, hi = trades[0][1], trades[-1][1]
    plan = con.execute(
        "EXPLAIN ANALYZE " + silver_trades.new_trades_sql(candidates, prefer="receive_time"),
        {"now": T0, "silver_from": lo, "silver_to": hi},
    ).fetchall()[0][1]
    files_read = [int(n) for n in re.findall(r"Total Files Read: (\d+)", plan)]
    assert files_read and max(files_read) <= 2, plan  # of the day's 60: the last one (and at most a neighbour)

    inserted = lake.write(con, lambda c: silver_trades.insert_new(c, candidates, now=T0, prefer="receive_time",
                                                                  look_in_silver=True))
    assert inserted == 3
    assert con.execute("SELECT count(*), count(DISTINCT trade_id) FROM silver.trades").fetchone() == (
        COMMITS * PER_COMMIT + 3, COMMITS * PER_COMMIT + 3)


def test_a_late_copy_of_the_first_trade_of_the_day_is_still_recognised(day_of_silver):
    """A chunk whose range spans the day (a repair of an old window beside a new trade) looks across all of it."""
    con = day_of_silver
    last = COMMITS * PER_COMMIT - 1
    trades = [(0, _time_of(0)), (7, _time_of(7)), (last + 1, _time_of(last) + timedelta(seconds=1))]
    candidates = _candidates(con, trades)
    inserted = lake.write(con, lambda c: silver_trades.insert_new(c, candidates, now=T0, prefer="receive_time",
                                                                  look_in_silver=True))
    assert inserted == 1
    # the copies silver had are untouched (price 100, not the candidates' 101)
    assert con.execute("SELECT price FROM silver.trades WHERE trade_id IN (0, 7)").fetchall() == [(100.0,), (100.0,)]


def test_no_candidate_inserts_nothing(day_of_silver):
    con = day_of_silver
    candidates = _candidates(con, [])
    assert lake.write(con, lambda c: silver_trades.insert_new(c, candidates, now=T0, prefer="receive_time",
                                                              look_in_silver=True)) == 0


def test_the_gold_refresh_at_the_end_of_the_day_reads_only_the_trades_of_its_minutes(day_of_silver):
    con = day_of_silver
    last = COMMITS * PER_COMMIT - 1
    minute = _time_of(last).replace(second=0, microsecond=0)
    con.register(intraday_gold.RANGES, pa.table({
        "exchange": ["binance", "upbit"], "market": ["BTCUSDT", "KRW-BTC"],
        "lo": pa.array([minute - timedelta(minutes=1)] * 2, pa.timestamp("us", tz="UTC")),
        "hi": pa.array([minute] * 2, pa.timestamp("us", tz="UTC"))}))
    con.execute("CALL enable_logging('FileSystem')")
    try:
        counts = lake.write(con, lambda c: intraday_gold.refresh(c, T0 + timedelta(days=1)))
        opened = {json.loads(m)["path"] for (m,) in con.execute(
            "SELECT message FROM duckdb_logs WHERE type = 'FileSystem' AND message LIKE '%\"op\":\"OPEN\"%'").fetchall()}
    finally:
        con.execute("CALL disable_logging()")
        con.unregister(intraday_gold.RANGES)
    silver_files = {p for p in opened if "/trades/" in p and "ohlcv" not in p and p.endswith(".parquet")}
    assert 1 <= len(silver_files) <= 2, sorted(opened)  # of the day's 60: the last one (and at most a neighbour)
    # and the bars are those of all the trades in the two minutes, not only of the last file's
    bars = con.execute("""SELECT ts, trade_count FROM gold.ohlcv_1m_from_trades ORDER BY ts""").fetchall()
    expected = con.execute("""SELECT time_bucket(INTERVAL 1 MINUTE, ts) AS m, count(*) FROM silver.trades
                              WHERE ts >= $lo AND ts < $hi GROUP BY m ORDER BY m""",
                           {"lo": minute - timedelta(minutes=1), "hi": minute + timedelta(minutes=1)}).fetchall()
    assert [(b[0], b[1]) for b in bars] == expected and counts["ohlcv_1m"] == len(expected) >= 1
