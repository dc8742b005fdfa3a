"""The simulator's candles are exactly the candles its trades make, for every minute of several days and markets."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from functools import reduce
from operator import add

import httpx
import pytest

DAY_MS = 86_400_000
# a real-data day (2025-09-03), a day after the recording ends (2025-10-20), and the day the recording ends mid-day
DAYS = ["2025-09-03", "2025-10-04", "2025-10-20"]


def _day_ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp() * 1000)


def rebuild(trades: list[dict]) -> dict[int, dict]:
    """1-minute OHLCV from trades in time order; sums are left folds, as anyone adding them up in order would."""
    by_minute: dict[int, list[dict]] = defaultdict(list)
    for t in trades:
        by_minute[t["ts"] // 60_000 * 60_000].append(t)
    out = {}
    for start, ts in by_minute.items():
        prices = [t["price"] for t in ts]
        out[start] = {
            "open": prices[0], "high": max(prices), "low": min(prices), "close": prices[-1],
            "volume": reduce(add, [t["volume"] for t in ts]),
            "quote": reduce(add, [t["price"] * t["volume"] for t in ts]),
            "count": len(ts), "last_ts": ts[-1]["ts"],
            "buy_volume": reduce(add, [t["volume"] if t["side"] == "buy" else 0.0 for t in ts]),
        }
    return out


@pytest.mark.parametrize("market", ["KRW-BTC", "KRW-SOL"])
def test_upbit_minute_candles_equal_candles_rebuilt_from_trades(sim_session, market):
    with httpx.Client(base_url=sim_session.url, timeout=60) as client:
        for day in DAYS:
            start = _day_ms(day)
            expected = rebuild(sim_session.ground_truth(market, start, start + DAY_MS))
            got: dict[int, dict] = {}
            to = start + DAY_MS
            while to > start:
                to_text = datetime.fromtimestamp(to / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                r = client.get("/v1/candles/minutes/1", params={"market": market, "count": 200, "to": to_text})
                assert r.status_code == 200, r.text
                for c in r.json():
                    got[_day_ms(c["candle_date_time_utc"][:10]) + _minute_of(c["candle_date_time_utc"])] = c
                to -= 200 * 60_000
            got = {k: v for k, v in got.items() if start <= k < start + DAY_MS}
            assert set(got) == set(expected), f"{market} {day}: candle minutes differ from trade minutes"
            assert len(got) < 1440 or day == "2025-09-03"  # Upbit-style gaps exist outside the recording
            for minute, c in got.items():
                e = expected[minute]
                assert (c["opening_price"], c["high_price"], c["low_price"], c["trade_price"]) == (
                    e["open"], e["high"], e["low"], e["close"])
                assert c["candle_acc_trade_volume"] == e["volume"]
                assert c["candle_acc_trade_price"] == e["quote"]
                assert c["timestamp"] == e["last_ts"]


def _minute_of(iso: str) -> int:
    hh, mm = int(iso[11:13]), int(iso[14:16])
    return (hh * 60 + mm) * 60_000


@pytest.mark.parametrize("symbol", ["BTCUSDT", "XRPUSDT"])
def test_binance_klines_equal_klines_rebuilt_from_trades(sim_session, symbol):
    with httpx.Client(base_url=sim_session.url, timeout=60) as client:
        for day in DAYS[1:]:
            start = _day_ms(day)
            expected = rebuild(sim_session.ground_truth(symbol, start, start + DAY_MS))
            rows = []
            for first in (start, start + 1000 * 60_000):
                r = client.get("/api/v3/klines", params={"symbol": symbol, "interval": "1m", "startTime": first,
                                                         "endTime": start + DAY_MS - 1, "limit": 1000})
                assert r.status_code == 200, r.text
                rows.extend(r.json())
            assert [k[0] for k in rows] == sorted(expected)  # oldest first, every minute of the day
            for k in rows:
                e = expected[k[0]]
                assert k[1:5] == [f"{e[x]:.8f}" for x in ("open", "high", "low", "close")]
                assert k[5] == f"{e['volume']:.8f}" and k[7] == f"{e['quote']:.8f}"
                assert k[6] == k[0] + 59_999 and k[8] == e["count"] and k[9] == f"{e['buy_volume']:.8f}"


def test_day_candle_is_the_day_of_trades(sim_session):
    start = _day_ms("2025-10-20")
    trades = sim_session.ground_truth("KRW-ETH", start, start + DAY_MS)
    r = httpx.get(sim_session.url + "/v1/candles/days", params={"market": "KRW-ETH", "to": "2025-10-21T00:00:00Z"})
    (c,) = r.json()
    prices = [t["price"] for t in trades]
    assert (c["opening_price"], c["high_price"], c["low_price"], c["trade_price"]) == (prices[0], max(prices), min(prices), prices[-1])
    assert c["candle_acc_trade_volume"] == reduce(add, [t["volume"] for t in trades])
    assert c["candle_date_time_utc"] == "2025-10-20T00:00:00"
    prev = httpx.get(sim_session.url + "/v1/candles/days", params={"market": "KRW-ETH", "to": "2025-10-20T00:00:00Z"}).json()[0]
    assert c["prev_closing_price"] == prev["trade_price"]
    assert c["change_price"] == pytest.approx(c["trade_price"] - prev["trade_price"])
