"""Binance REST of the simulator through httpx: exchangeInfo, klines, aggTrades, historicalTrades; order, ids, limits."""

from __future__ import annotations

import csv
from datetime import datetime, timezone

import httpx
import pytest

T0 = int(datetime(2025, 10, 20, 12, tzinfo=timezone.utc).timestamp() * 1000)


@pytest.fixture(scope="module")
def binance(sim_session):
    with httpx.Client(base_url=sim_session.binance_rest_url, timeout=30) as client:
        yield client


def _get(client: httpx.Client, path: str, **params):
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) > 0
    return r.json()


def test_exchange_info_lists_symbols_with_filters(binance):
    info = _get(binance, "/api/v3/exchangeInfo")
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT"]
    btc = _get(binance, "/api/v3/exchangeInfo", symbol="BTCUSDT")["symbols"][0]
    assert (btc["baseAsset"], btc["quoteAsset"], btc["status"]) == ("BTC", "USDT", "TRADING")
    price_filter = next(f for f in btc["filters"] if f["filterType"] == "PRICE_FILTER")
    assert price_filter["tickSize"] == "0.01000000"


def _kline(row: list) -> tuple:
    """One parser for recorded klines and the simulator's: open time, OHLCV, close time (the first 7 columns)."""
    open_time, o, h, lo, c, v, close_time = row[:7]
    return int(open_time), float(o), float(h), float(lo), float(c), float(v), int(close_time)


def test_klines_have_the_official_layout_and_are_oldest_first(binance, recorded_data):
    with open(recorded_data / "binance" / "klines_ADABTC_1m_2021-11-27_official_layout.csv") as fh:
        official = next(csv.reader(fh))
    with open(recorded_data / "binance" / "klines_BTCUSDT_1h_2021-10_2022-10.csv") as fh:
        recorded = [_kline(r) for r in list(csv.reader(fh))[1:4]]
    rows = _get(binance, "/api/v3/klines", symbol="BTCUSDT", interval="1h", startTime=T0, limit=5)
    parsed = [_kline(r) for r in rows]
    for k in recorded + parsed:  # both are hourly bars that close 1 ms before the next opens
        assert k[6] - k[0] == 3_599_999 and k[3] <= min(k[1], k[4]) <= max(k[1], k[4]) <= k[2]
    assert len(rows) == 5 and [r[0] for r in rows] == [T0 + i * 3_600_000 for i in range(5)]
    for row in rows:
        assert len(row) == len(official) == 12
        # same types column by column as the archive layout: ints for times/count, decimal strings elsewhere
        # (the last column is the API's unused "0", a string on the API and a bare 0 in the archive)
        for ours, theirs in zip(row[:11], official[:11]):
            assert isinstance(ours, int) == theirs.isdigit(), (row, official)
        assert float(row[3]) <= min(float(row[1]), float(row[4])) <= max(float(row[1]), float(row[4])) <= float(row[2])
        assert row[6] == row[0] + 3_599_999
    latest = _get(binance, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=3)
    assert latest[0][0] < latest[1][0] < latest[2][0]
    assert latest[-1][0] <= datetime.now(timezone.utc).timestamp() * 1000 < latest[-1][6] + 1
    day = _get(binance, "/api/v3/klines", symbol="ETHUSDT", interval="1d", startTime=T0 - 12 * 3_600_000, limit=2)
    assert [d[0] for d in day] == [T0 - 12 * 3_600_000, T0 + 12 * 3_600_000]


def test_agg_trades_and_historical_trades_are_contiguous_and_consistent(binance):
    aggs = _get(binance, "/api/v3/aggTrades", symbol="SOLUSDT", startTime=T0, endTime=T0 + 3_600_000, limit=500)
    assert len(aggs) == 500
    assert [a["a"] for a in aggs] == list(range(aggs[0]["a"], aggs[0]["a"] + 500))
    assert all(b["f"] == a["l"] + 1 for a, b in zip(aggs, aggs[1:]))  # aggTrades partition the trade ids
    assert [a["T"] for a in aggs] == sorted(a["T"] for a in aggs) and aggs[0]["T"] >= T0
    assert set(aggs[0]) == {"a", "p", "q", "f", "l", "T", "m", "M"}
    trades = _get(binance, "/api/v3/historicalTrades", symbol="SOLUSDT", fromId=aggs[0]["f"], limit=1000)
    assert [t["id"] for t in trades] == list(range(aggs[0]["f"], aggs[0]["f"] + 1000))
    assert set(trades[0]) == {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"}
    by_id = {t["id"]: t for t in trades}
    for a in aggs:
        fills = [by_id[i] for i in range(a["f"], a["l"] + 1) if i in by_id]
        if len(fills) == a["l"] - a["f"] + 1:
            assert {(f["price"], f["time"], f["isBuyerMaker"]) for f in fills} == {(a["p"], a["T"], a["m"])}
            assert sum(float(f["qty"]) for f in fills) == pytest.approx(float(a["q"]), abs=1e-8)
    again = _get(binance, "/api/v3/aggTrades", symbol="SOLUSDT", fromId=aggs[300]["a"], limit=3)
    assert again == aggs[300:303]
    # startTime alone: from there on, a full page even when that spans more than an hour of trades
    page = _get(binance, "/api/v3/aggTrades", symbol="SOLUSDT", startTime=T0, limit=1000)
    assert len(page) == 1000 and page[:500] == aggs and page[-1]["T"] - T0 > 3_600_000
    recent = _get(binance, "/api/v3/aggTrades", symbol="SOLUSDT", limit=5)
    assert len(recent) == 5 and recent[-1]["T"] <= datetime.now(timezone.utc).timestamp() * 1000


def test_errors_use_binance_codes(binance):
    cases = [
        ({"symbol": "NOPEUSDT", "interval": "1m"}, "/api/v3/klines", -1121),
        ({"symbol": "BTCUSDT", "interval": "7m"}, "/api/v3/klines", -1120),
        ({"interval": "1m"}, "/api/v3/klines", -1102),
        ({"symbol": "BTCUSDT", "limit": 1001}, "/api/v3/aggTrades", -1130),
        ({"symbol": "BTCUSDT", "startTime": T0, "endTime": T0 + 7_200_000}, "/api/v3/aggTrades", -1127),
    ]
    for params, path, code in cases:
        r = binance.get(path, params=params)
        assert r.status_code == 400 and r.json()["code"] == code, (path, params, r.text)
