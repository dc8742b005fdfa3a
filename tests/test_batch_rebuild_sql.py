"""The day rebuild's SQL after its speed work reads the same rows it did before: trade fields out of any message shape
(json_transform, against the per-path json_extract_string reading it replaced), the dedupe (earliest ingested readable
copy), and gold bars and 24-hour stats on epoch arithmetic (against date_trunc / interval arithmetic), on a real lake."""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta, timezone

import duckdb
import polars as pl
import pytest

from cryptoflow_dagster import lake
from cryptoflow_dagster.streaming.day_rebuild import rebuild_gold_day, rebuild_silver_day
from cryptoflow_dagster.silver_trades import with_trade_fields

# The reading with_trade_fields gave before json_transform: one 12-path json_extract_string, first readable wins.
_PATHS = ["$.data.p", "$.p", "$.price", "$.trade_price", "$.data.q", "$.q", "$.qty", "$.trade_volume",
          "$.data.m", "$.m", "$.isBuyerMaker", "$.ask_bid"]
_REFERENCE = """
    SELECT i,
        COALESCE(TRY_CAST(_f[1] AS DOUBLE), TRY_CAST(_f[2] AS DOUBLE), TRY_CAST(_f[3] AS DOUBLE),
                 TRY_CAST(_f[4] AS DOUBLE)) AS price,
        COALESCE(TRY_CAST(_f[5] AS DOUBLE), TRY_CAST(_f[6] AS DOUBLE), TRY_CAST(_f[7] AS DOUBLE),
                 TRY_CAST(_f[8] AS DOUBLE)) AS volume,
        CASE COALESCE(_f[9], _f[10], _f[11], _f[12])
            WHEN 'true' THEN 'sell' WHEN 'false' THEN 'buy' WHEN 'ASK' THEN 'sell' WHEN 'BID' THEN 'buy' END AS side
    FROM (SELECT i, json_extract_string(raw_json, $paths) AS _f FROM messages)
"""

MESSAGES = [
    # every shape bronze holds
    '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"50000.10","q":"0.5","T":1,"m":true,"M":true}}',
    '{"e":"trade","s":"BTCUSDT","t":2,"p":"50000.20","q":"0.25","m":false,"M":true}',
    '{"a":3,"p":"1.5","q":"2","f":1,"l":2,"T":1,"m":true}',
    '{"id":4,"price":"42.0","qty":"1.25","time":1,"isBuyerMaker":false}',
    '{"type":"trade","code":"KRW-BTC","trade_price":90000000,"trade_volume":0.01,"ask_bid":"ASK","sequential_id":5}',
    '{"market":"KRW-ETH","trade_price":4000000.5,"trade_volume":1,"ask_bid":"BID","sequential_id":6}',
    # what must not change at the edges
    '{"stream":"x","data":{"p":"abc","q":"1","m":true},"p":"7"}',  # unreadable combined price falls back to $.p
    '{"stream":"x","data":{"p":"1","m":"maybe"},"m":true}',  # the first side present decides, readable or not
    '{"p":"1","p":"2","q":"3","m":false}',  # duplicate key: the first
    '{"P":"1","Q":"2","M":true}',  # keys are case-sensitive
    '{"data":"{\\"p\\":1}","p":"3","q":"1","m":true}',  # data is a string, not an object
    '{"data":[1,2],"price":"4","qty":"1","isBuyerMaker":true}',
    '{"p":1e999,"q":"-0.0","m":true}',  # inf and negative zero come through as the text did
    '{"p":{"x":1},"q":[1],"m":null}',
    '{"p":"\\u0031\\u0032","q":"1","ask_bid":"ASK"}',  # escapes
    '[{"p":"1"}]', 'null', '"text"', '{}', '  {"p" : "5" , "q":"1","m":false}  ',
]


def test_trade_fields_equal_the_per_path_reading_for_every_shape():
    con = duckdb.connect()
    con.register("messages", pl.DataFrame({"i": range(len(MESSAGES)), "raw_json": MESSAGES}).to_arrow())
    typed = with_trade_fields("SELECT * FROM messages")
    got = con.execute(f"SELECT i, price, volume, side FROM ({typed}) ORDER BY i").fetchall()
    want = con.execute(f"SELECT * FROM ({_REFERENCE}) ORDER BY i", {"paths": _PATHS}).fetchall()
    assert got == want
    assert got[0][1:] == (50000.10, 0.5, "sell") and got[4][1:] == (90000000.0, 0.01, "sell") and got[6][1] == 7.0
    assert sum(1 for r in got if r[1] is not None and r[2] is not None and r[3] is not None) == 13


DAY = date(2026, 3, 2)
T0 = datetime(2026, 3, 2, 0, 0, tzinfo=timezone.utc)


def _bronze_row(trade_id: int, at: datetime, price: str, ingest_s: int, market: str = "BTCUSDT", side: str = "true",
                qty: str = "0.5"):
    data = {"e": "trade", "s": market, "t": trade_id, "p": price, "q": qty, "T": 0, "m": json.loads(side)}
    return {
        "exchange": "binance", "market": market, "trade_id": trade_id, "event_time": at,
        "raw_json": json.dumps({"stream": market.lower() + "@trade", "data": data}, separators=(",", ":")),
        "unique_key": f"binance:{market}:{trade_id}", "ingest_time": T0 + timedelta(days=1, seconds=ingest_s),
        "ingest_run_id": "t", "source": "ws", "batch_file": "t", "receive_time": at + timedelta(milliseconds=5),
        "session_id": "t", "day": at.date(),
    }


def test_rebuild_keeps_the_earliest_readable_copy_and_bars_match_date_trunc(settings):
    ms = timedelta(milliseconds=1)
    rows = [
        _bronze_row(1, T0 + 10 * ms, "100", ingest_s=5),
        _bronze_row(1, T0 + 10 * ms, "101", ingest_s=1),  # earlier ingest of trade 1: this copy wins
        _bronze_row(2, T0 + 10 * ms, "bad", ingest_s=0),  # the earliest copy of 2 is unreadable ...
        _bronze_row(2, T0 + 10 * ms, "102", ingest_s=3),  # ... so the readable one is kept
        _bronze_row(3, T0 + 10 * ms, "99", ingest_s=1),  # same ms as 1 and 2: the bar's close is by trade id
        _bronze_row(4, T0 + timedelta(seconds=59, microseconds=999_999), "98", ingest_s=1),  # last us of minute 0
        _bronze_row(5, T0 + timedelta(minutes=1), "97", ingest_s=1),  # first us of minute 1
        _bronze_row(6, T0 + timedelta(hours=23, minutes=59, seconds=59), "96", ingest_s=1),
        _bronze_row(7, T0 + timedelta(minutes=3), "-1", ingest_s=1),  # never readable: not in silver
        _bronze_row(8, T0 + timedelta(hours=23, minutes=59, seconds=59), "95", ingest_s=1, side='"x"'),
        _bronze_row(9, T0 + timedelta(minutes=4), "NaN", ingest_s=1),  # a REST repair can put these in bronze
        _bronze_row(10, T0 + timedelta(minutes=4), "1e999", ingest_s=1),
        _bronze_row(1, T0 + timedelta(minutes=5), "50", ingest_s=1, market="ETHUSDT"),
        _bronze_row(2, T0 + timedelta(hours=23), "51", ingest_s=1, market="ETHUSDT"),
        _bronze_row(3, T0 + timedelta(hours=23) + timedelta(days=-1), "49", ingest_s=1, market="ETHUSDT"),  # day before
    ]
    frame = pl.DataFrame(rows)
    now = datetime(2026, 3, 4, tzinfo=timezone.utc)
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        lake.write(con, lambda c: lake.insert(c, "bronze.trades_raw", frame))
        for day in (DAY - timedelta(days=1), DAY):
            rebuild_silver_day(con, day, now)
        assert rebuild_silver_day(con, DAY, now) == 8  # idempotent: the day is replaced, not appended to
        silver = con.execute("SELECT market, trade_id, price, side FROM silver.trades WHERE day = ? ORDER BY ALL",
                             [DAY]).fetchall()
        assert silver == [("BTCUSDT", 1, 101.0, "sell"), ("BTCUSDT", 2, 102.0, "sell"), ("BTCUSDT", 3, 99.0, "sell"),
                          ("BTCUSDT", 4, 98.0, "sell"), ("BTCUSDT", 5, 97.0, "sell"), ("BTCUSDT", 6, 96.0, "sell"),
                          ("ETHUSDT", 1, 50.0, "sell"), ("ETHUSDT", 2, 51.0, "sell")]

        rebuild_gold_day(con, DAY, now)
        bars = con.execute("SELECT exchange, market, ts, open, high, low, close, volume, trade_count, day "
                           "FROM gold.ohlcv_1m_from_trades ORDER BY ALL").fetchall()
        # the same bars the ICU reading gives: date_trunc('minute'), first/last by (ts, trade_id), the minute's date
        want = con.execute(
            """SELECT exchange, market, date_trunc('minute', ts) AS m, arg_min(price, (ts, trade_id)), max(price),
                   min(price), arg_max(price, (ts, trade_id)), sum(volume), count(*),
                   CAST(date_trunc('minute', ts) AS DATE)
               FROM silver.trades WHERE day = ? GROUP BY ALL ORDER BY ALL""", [DAY]).fetchall()
        assert bars == want
        assert bars[0][2:7] == (T0, 101.0, 102.0, 98.0, 98.0) and bars[1][2] == T0 + timedelta(minutes=1)

        stats = con.execute("SELECT market, as_of, open_24h, last_price, trade_count_24h FROM gold.market_stats_24h "
                            "ORDER BY market").fetchall()
        # ETHUSDT's trade of the day before is exactly 24 h before its last one: outside the (as_of - 24 h, as_of] window
        assert stats == [("BTCUSDT", T0 + timedelta(hours=23, minutes=59, seconds=59), 101.0, 96.0, 6),
                         ("ETHUSDT", T0 + timedelta(hours=23), 50.0, 51.0, 2)]


# The dedupe as defined (docs: one row per (exchange, market, trade_id), the earliest ingested copy, then the earliest
# received, among those silver can read), as one window over every row: what the rebuild gave before it windowed only
# the keys bronze holds more than once.
_SILVER_BY_ONE_WINDOW = f"""
    SELECT exchange, market, trade_id, event_time, price, volume, side, receive_time
    FROM (SELECT *, COALESCE(event_time IS NOT NULL AND price > 0 AND volume >= 0 AND side IS NOT NULL
                             AND isfinite(price) AND isfinite(volume), false) AS readable
          FROM ({with_trade_fields("SELECT * FROM bronze.trades_raw WHERE day = $day")})
          QUALIFY row_number() OVER (PARTITION BY exchange, market, trade_id
                                     ORDER BY readable DESC, ingest_time, receive_time) = 1)
    WHERE readable ORDER BY ALL
"""


_INGEST_RECEIVE = [(i, r) for i in range(3) for r in range(4)]


def test_rebuild_dedupes_like_one_window_over_every_row(settings):
    """Keys sent once, twice and five times, copies unreadable or ingested in any order, across markets and exchanges
    whose trade ids overlap: the rebuild keeps exactly the rows one window over the whole day keeps."""
    rng = random.Random(5)
    rows = []
    for market in ("BTCUSDT", "ETHUSDT"):
        for trade_id in range(1500):
            at = T0 + timedelta(milliseconds=rng.randint(0, 86_400_000 - 1))
            # copies tie on ingest_time or on receive_time, never on both (then which copy is kept is not defined)
            for ingest_s, receive_ms in rng.sample(_INGEST_RECEIVE, rng.choice([1, 1, 1, 2, 5])):
                price = rng.choice([f"{rng.uniform(90, 110):.4f}"] * 4 + ["bad", "-1"])
                row = _bronze_row(trade_id, at, price, ingest_s, market=market)
                row["receive_time"] = at + timedelta(milliseconds=receive_ms)
                rows.append(row)
    rows += [{**r, "exchange": "upbit"} for r in rows[:300]]  # the same ids at another exchange: other trades
    rng.shuffle(rows)
    now = datetime(2026, 3, 4, tzinfo=timezone.utc)
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        lake.write(con, lambda c: lake.insert(c, "bronze.trades_raw", pl.DataFrame(rows)))
        kept = rebuild_silver_day(con, DAY, now)
        got = con.execute("SELECT exchange, market, trade_id, ts, price, volume, side, receive_time FROM silver.trades "
                          "ORDER BY ALL").fetchall()
        want = con.execute(_SILVER_BY_ONE_WINDOW, {"day": DAY}).fetchall()
    assert got == want and kept == len(want)
    assert len({(r[0], r[1], r[2]) for r in got}) == len(got)  # one row per key
    assert 2200 < len(got) < 2700  # ~3,300 keys, ~3 in 4 with a readable copy


# The 24-hour stats as defined (docs: the trades in (as_of - 24 h, as_of], first and last by (ts, trade_id)), read from
# the trades themselves: what the bars-based SQL must give.
_STATS_FROM_TRADES = """
    WITH w AS (SELECT exchange, market, max(ts) AS as_of FROM silver.trades GROUP BY ALL)
    SELECT t.exchange, t.market, w.as_of, arg_min(price, (ts, trade_id)), max(price), min(price),
        arg_max(price, (ts, trade_id)), (arg_max(price, (ts, trade_id)) / arg_min(price, (ts, trade_id)) - 1) * 100,
        sum(volume), sum(quote_volume), sum(quote_volume) / sum(volume), count(*)
    FROM silver.trades t JOIN w ON t.exchange = w.exchange AND t.market = w.market
    WHERE t.ts > w.as_of - INTERVAL 24 HOUR
    GROUP BY ALL ORDER BY ALL
"""


def test_24h_stats_from_bars_equal_the_stats_over_the_trades(settings):
    """Stats come from the 1-minute bars plus the trades of the minute the window starts in: the window's edge cuts that
    minute's bar, so a trade at exactly as_of - 24 h is out, one a millisecond later is in, and ties in the edge minute
    are decided by trade id."""
    rng = random.Random(11)
    t1 = T0 + timedelta(hours=17, minutes=3, seconds=20, milliseconds=250)  # BTCUSDT's last trade, mid-minute
    cut = t1 - timedelta(days=1)
    rows = [  # the edge minute of BTCUSDT's window, trade by trade
        _bronze_row(1, cut - timedelta(seconds=5), "10", 1),  # same minute as the window's start, before it: out
        _bronze_row(2, cut, "11", 1),  # exactly 24 h before as_of: out
        _bronze_row(4, cut + timedelta(milliseconds=1), "12", 1),  # the first trade in: open_24h
        _bronze_row(3, cut + timedelta(milliseconds=1), "99", 1),  # same ms, lower id: open_24h after all
        _bronze_row(5, cut + timedelta(seconds=20), "250", 1, qty="3"),  # the edge minute's high
        _bronze_row(6, cut.replace(second=0, microsecond=0) + timedelta(minutes=1), "13", 1),  # first whole bar
    ]
    trade_ids = {"BTCUSDT": 100, "ETHUSDT": 1, "XRPUSDT": 1, "SOLUSDT": 1}
    for market, trades in (("BTCUSDT", 4000), ("ETHUSDT", 3000), ("XRPUSDT", 400), ("SOLUSDT", 1)):
        end = t1 if market == "BTCUSDT" else T0 + timedelta(hours=rng.randint(0, 23), milliseconds=rng.randint(0, 10**7))
        for _ in range(trades):
            at = end - timedelta(milliseconds=rng.randint(0, 36 * 3600 * 1000))  # 36 hours back: over two days
            if market == "BTCUSDT" and at <= cut + timedelta(minutes=1):
                continue  # the edge minute is the hand-made one above
            rows.append(_bronze_row(trade_ids[market], at, f"{rng.uniform(90, 110):.4f}", 1, market=market,
                                    side=rng.choice(["true", "false"]), qty=f"{rng.uniform(0.001, 2):.6f}"))
            trade_ids[market] += 1
        rows.append(_bronze_row(trade_ids[market], end, "100", 1, market=market))  # the market's as_of
        trade_ids[market] += 1
    now = datetime(2026, 3, 4, tzinfo=timezone.utc)
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        lake.write(con, lambda c: lake.insert(c, "bronze.trades_raw", pl.DataFrame(rows)))
        for day in (DAY - timedelta(days=1), DAY):  # a backfill's order: the day before's bars exist for the second
            rebuild_silver_day(con, day, now)
            rebuild_gold_day(con, day, now)
        got = con.execute("SELECT * EXCLUDE (updated_at) FROM gold.market_stats_24h ORDER BY ALL").fetchall()
        want = con.execute(_STATS_FROM_TRADES).fetchall()
    assert [r[0:8] + r[11:] for r in got] == [r[0:8] + r[11:] for r in want]  # times, prices, counts: exactly
    for g, w in zip(got, want):
        assert g[8:11] == pytest.approx(w[8:11], rel=1e-12)  # sums over bars add in another order
    btc = next(r for r in got if r[1] == "BTCUSDT")
    assert btc[2] == t1 and btc[3] == 99.0 and btc[4] == 250.0  # open: trade 3 (same ms as 4); high: the edge minute's
