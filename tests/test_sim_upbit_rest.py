"""Upbit REST of the exchange simulator, through a real httpx client: shapes, order, limits, `to`, paging, real data."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone

import httpx
import pytest

BTC_DAY = "2025-09-10"  # inside the recorded KRW-BTC/KRW-ETH candles


def _types(record: dict) -> dict:
    return {k: type(v).__name__ for k, v in record.items()}


@pytest.fixture(scope="module")
def samples(recorded_data):
    return json.loads((recorded_data / "upbit" / "native_samples.json").read_text())


@pytest.fixture(scope="module")
def upbit(sim_session):
    with httpx.Client(base_url=sim_session.upbit_rest_url, timeout=30) as client:
        yield client


def _get(client: httpx.Client, path: str, **params):
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["Remaining-Req"].startswith("group=")
    return r.json()


def test_market_all_lists_the_default_markets(upbit):
    rows = _get(upbit, "/v1/market/all", is_details="true")
    assert [r["market"] for r in rows] == ["KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-USDT"]
    assert set(rows[0]) == {"market", "korean_name", "english_name", "market_event"}
    assert set(_get(upbit, "/v1/market/all")[0]) == {"market", "korean_name", "english_name"}


def test_candles_and_ticks_have_the_real_shapes(upbit, samples):
    minute = _get(upbit, "/v1/candles/minutes/60", market="KRW-BTC", to=f"{BTC_DAY}T12:00:00Z", count=2)
    real_minute = samples["rest_candles_minutes_60__ccxt_static_upbit_json"][0]
    assert set(minute[0]) == set(real_minute)
    # the ccxt sample stores every value as text; the numbers it holds must parse as the sim's numbers do
    for key, value in minute[0].items():
        if isinstance(value, (int, float)):
            float(real_minute[key])

    days = _get(upbit, "/v1/candles/days", market="KRW-BTC", to=f"{BTC_DAY}T00:00:00Z", count=2)
    real_days = samples["rest_candles_days__upbit_docs_curl_capture_2025-07-30"]
    assert [_types(d) for d in days] == [_types(d) for d in real_days]

    ticks = _get(upbit, "/v1/trades/ticks", market="KRW-BTC", count=3)
    real_tick = samples["rest_trades_ticks__ccxt_static_upbit_json"][0]
    assert set(ticks[0]) == set(real_tick)
    assert isinstance(ticks[0]["sequential_id"], int) and isinstance(ticks[0]["trade_price"], float)


def test_newest_first_count_limits_and_errors(upbit):
    candles = _get(upbit, "/v1/candles/minutes/1", market="KRW-ETH", count=200, to=f"{BTC_DAY}T06:00:00")
    starts = [c["candle_date_time_utc"] for c in candles]
    assert starts == sorted(starts, reverse=True) and starts[0] == f"{BTC_DAY}T05:59:00"
    assert 190 <= len(candles) <= 200  # windows without trades have no candle
    ticks = _get(upbit, "/v1/trades/ticks", market="KRW-ETH", count=500, days_ago=1)  # a full day, at any hour
    assert len(ticks) == 500
    assert [t["sequential_id"] for t in ticks] == sorted((t["sequential_id"] for t in ticks), reverse=True)
    for path, params in [
        ("/v1/candles/minutes/1", {"market": "KRW-BTC", "count": 201}),
        ("/v1/trades/ticks", {"market": "KRW-BTC", "count": 501}),
        ("/v1/candles/minutes/2", {"market": "KRW-BTC"}),
        ("/v1/candles/minutes/1", {"market": "KRW-BTC", "to": "yesterday"}),
        ("/v1/trades/ticks", {"market": "KRW-BTC", "days_ago": 8}),
    ]:
        r = upbit.get(path, params=params)
        assert r.status_code == 400, (path, params, r.text)
        assert set(r.json()["error"]) == {"name", "message"}
    r = upbit.get("/v1/candles/days", params={"market": "KRW-DOGE"})
    assert r.status_code == 404 and r.json()["error"]["message"] == "Code not found"


def test_to_accepts_every_documented_spelling(upbit):
    spellings = [f"{BTC_DAY}T03:00:00Z", f"{BTC_DAY} 03:00:00", f"{BTC_DAY}T03:00:00", f"{BTC_DAY}T12:00:00+09:00"]
    answers = [_get(upbit, "/v1/candles/minutes/5", market="KRW-BTC", count=3, to=to) for to in spellings]
    assert all(a == answers[0] for a in answers)
    assert answers[0][0]["candle_date_time_utc"] == f"{BTC_DAY}T02:55:00"
    assert answers[0][0]["candle_date_time_kst"] == f"{BTC_DAY}T11:55:00"


def test_real_candles_shape_the_price_path(upbit, recorded_data):
    """Where recorded candles exist, the sim's 1-minute OHLC is the real OHLC, minute for minute."""
    real = {}
    with open(next((recorded_data / "upbit").glob("KRW-BTC_1m_*.csv"))) as fh:
        for row in csv.DictReader(fh):
            if row["timestamp"].startswith(f"{BTC_DAY} 0"):
                real[row["timestamp"].replace(" ", "T")] = row
    got = _get(upbit, "/v1/candles/minutes/1", market="KRW-BTC", count=200, to=f"{BTC_DAY}T03:20:00Z")
    assert len(got) == 200
    for c in got:
        r = real[c["candle_date_time_utc"]]
        assert (c["opening_price"], c["high_price"], c["low_price"], c["trade_price"]) == (
            float(r["open"]), float(r["high"]), float(r["low"]), float(r["close"]))
        assert c["candle_acc_trade_volume"] == pytest.approx(float(r["volume"]), abs=1e-6)


def test_ticker_has_the_documented_fields_and_agrees_with_ticks(upbit):
    documented = {
        "market", "trade_date", "trade_time", "trade_timestamp", "opening_price", "high_price", "low_price", "trade_price",
        "prev_closing_price", "change", "change_price", "change_rate", "signed_change_price", "signed_change_rate",
        "trade_volume", "acc_trade_price", "acc_trade_price_24h", "acc_trade_volume", "acc_trade_volume_24h",
        "highest_52_week_price", "highest_52_week_date", "lowest_52_week_price", "lowest_52_week_date", "timestamp"}
    (btc,) = _get(upbit, "/v1/ticker", markets="KRW-BTC")
    assert set(btc) == documented
    assert btc["low_price"] <= btc["trade_price"] <= btc["high_price"] <= btc["highest_52_week_price"]
    assert btc["signed_change_price"] == pytest.approx(btc["trade_price"] - btc["prev_closing_price"])
    assert len(btc["trade_date"]) == 8 and len(btc["trade_time"]) == 6
    (latest,) = _get(upbit, "/v1/trades/ticks", market="KRW-BTC", count=1)
    assert latest["timestamp"] >= btc["trade_timestamp"]  # the ticker is the last trade at the time it was asked
    assert latest["prev_closing_price"] == btc["prev_closing_price"]
    assert [t["market"] for t in _get(upbit, "/v1/ticker/all", quote_currencies="KRW")] == [
        "KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-USDT"]


def test_tick_paging_with_cursor_returns_every_trade_once(upbit, sim_session):
    """Walking /v1/trades/ticks back with `cursor` covers exactly the ground-truth trades of the day so far."""
    now = datetime.now(timezone.utc)
    first = _get(upbit, "/v1/trades/ticks", market="KRW-XRP", count=500, to="00:20:00", days_ago=1)
    seen = list(first)
    while len(seen) < 3000:
        page = _get(upbit, "/v1/trades/ticks", market="KRW-XRP", count=500, days_ago=1, cursor=seen[-1]["sequential_id"])
        if not page:
            break
        seen.extend(page)
    ids = [t["sequential_id"] for t in seen]
    assert len(ids) == len(set(ids)) and ids == sorted(ids, reverse=True)
    day = now.date().toordinal() - 1 - datetime(1970, 1, 1).toordinal()
    truth = sim_session.ground_truth("KRW-XRP", day * 86_400_000, day * 86_400_000 + 20 * 60_000)
    assert ids[::-1] == [t["sequential_id"] for t in truth]
    assert seen[0]["trade_date_utc"] == seen[-1]["trade_date_utc"]
    # the JSON form of the ground truth holds the same trades as the NDJSON the helper reads
    as_json = httpx.get(sim_session.url + "/_sim/trades", params={"market": "KRW-XRP", "start": truth[0]["ts"],
                                                                  "end": truth[-1]["ts"] + 1}).json()
    assert as_json["count"] == len(truth) and as_json["trades"] == truth
