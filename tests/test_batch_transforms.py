"""Bronze -> silver on real recorded exchange data (exchange_sim/recorded), through the same pure functions the assets call."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone

import polars as pl
import pytest

from cryptoflow_dagster.batch import bronze, silver
from cryptoflow_dagster.clients.http import split_json_array
from cryptoflow_dagster.clients.upbit import Page

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
T1 = datetime(2026, 1, 2, tzinfo=timezone.utc)


def page_from_text(text: str, path: str = "/x", **params) -> Page:
    return Page(path, params, json.loads(text), split_json_array(text))


def upbit_day_candles_text(recorded_data) -> str:
    # The docs capture, re-serialised as one JSON array exactly as the API sends it (numbers keep their spelling).
    raw = (recorded_data / "upbit" / "native_samples.json").read_text()
    start = raw.index("[", raw.index('"rest_candles_days__'))
    return raw[start : raw.index("]", start) + 1]


def binance_klines_text(recorded_data) -> str:
    with (recorded_data / "binance" / "klines_ADABTC_1m_2021-11-27_official_layout.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    # The archive CSV holds the API's 12 fields in order; the API sends times and counts as numbers, the rest as strings.
    items = [[int(r[0]), *r[1:6], int(r[6]), r[7], int(r[8]), r[9], r[10], r[11]] for r in rows]
    return json.dumps(items), rows


def test_upbit_day_candles_keep_raw_text_verbatim_and_parse_to_silver(recorded_data):
    text = upbit_day_candles_text(recorded_data)
    page = page_from_text(text, "/v1/candles/days", market="KRW-BTC", count=2)
    rows = bronze.candle_rows("upbit", "KRW-BTC", "1d", [page], run_id="r1", ingest_time=T0)
    assert rows.height == 2
    # Verbatim: the raw text still spells 162483000.00000000 the way the server did.
    assert "162483000.00000000" in rows["raw_json"][0]
    assert json.loads(rows["api_params_json"][0]) == {"path": "/v1/candles/days", "market": "KRW-BTC", "count": 2}
    assert rows["unique_key"].to_list() == ["upbit:KRW-BTC:1d:2025-07-29T00:00:00Z", "upbit:KRW-BTC:1d:2025-07-28T00:00:00Z"]

    result = silver.candles(rows, "1d", run_id="r2")
    assert result.dead_letters.height == 0
    day = result.rows.filter(pl.col("day") == datetime(2025, 7, 29).date()).row(0, named=True)
    assert (day["open"], day["high"], day["low"], day["close"]) == (162483000.0, 163800000.0, 162034000.0, 163158000.0)
    assert day["volume"] == pytest.approx(1487.53432374)
    assert day["quote_volume"] == pytest.approx(242634976840.02426)


def test_upbit_string_valued_candle_from_ccxt_capture_parses(recorded_data):
    samples = json.loads((recorded_data / "upbit" / "native_samples.json").read_text())
    item = samples["rest_candles_minutes_60__ccxt_static_upbit_json"][0]
    page = page_from_text(json.dumps([item]))
    rows = bronze.candle_rows("upbit", "USDT-BTC", "60m", [page], run_id="r", ingest_time=T0)
    result = silver.candles(rows, "60m", run_id="r")
    assert result.rows["open"][0] == pytest.approx(72738.58583492)
    assert result.rows["quote_volume"][0] == pytest.approx(1669.08358949)


def test_binance_official_kline_layout_parses_every_row(recorded_data):
    text, csv_rows = binance_klines_text(recorded_data)
    rows = bronze.candle_rows("binance", "ADABTC", "1m", [page_from_text(text)], run_id="r", ingest_time=T0)
    result = silver.candles(rows, "1m", run_id="r")
    assert result.rows.height == len(csv_rows) == 10
    first = result.rows.row(0, named=True)
    assert first["ts"] == datetime(2021, 11, 27, tzinfo=timezone.utc)
    assert (first["open"], first["high"], first["low"], first["close"]) == (0.00002853, 0.00002854, 0.00002851, 0.00002854)
    assert first["volume"] == pytest.approx(36304.2) and first["quote_volume"] == pytest.approx(1.03547608)


def _upbit_minute_items(recorded_data, day: str) -> list[dict]:
    """Upbit's KRW-BTC 1m history (ccxt layout) put back into Upbit's own field names, newest first like the API."""
    items = []
    with (recorded_data / "upbit" / "KRW-BTC_1m_2025-09-01_2025-10-04.csv").open() as f:
        for r in csv.DictReader(f):
            if not r["timestamp"].startswith(day):
                continue
            o, h, lo, c, v = (float(r[k]) for k in ("open", "high", "low", "close", "volume"))
            items.append({
                "market": "KRW-BTC", "candle_date_time_utc": r["timestamp"].replace(" ", "T"),
                "opening_price": o, "high_price": h, "low_price": lo, "trade_price": c,
                "candle_acc_trade_volume": v, "candle_acc_trade_price": v * c, "unit": 1,
            })
    return items[::-1]


def test_real_day_of_minutes_keeps_gaps_absent_and_counts_them(recorded_data):
    items = _upbit_minute_items(recorded_data, "2025-09-01")
    page = page_from_text(json.dumps(items))
    rows = bronze.candle_rows("upbit", "KRW-BTC", "1m", [page], run_id="r", ingest_time=T0)
    result = silver.candles(rows, "1m", run_id="r")
    assert result.dead_letters.height == 0
    assert result.rows.height == len(items)
    # No candle invented for a minute without trades: the ts set is exactly the source's.
    assert set(result.rows["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S")) == {i["candle_date_time_utc"] for i in items}
    gaps = silver.missing_minutes(result.rows, 1440)
    assert gaps["missing"].sum() == 1440 - len(items)
    assert result.rows["ts"].is_sorted()


def test_latest_ingest_wins_on_duplicate_keys():
    old = page_from_text('[{"candle_date_time_utc":"2026-01-01T00:00:00","opening_price":1,"high_price":2,"low_price":1,'
                         '"trade_price":2,"candle_acc_trade_volume":1,"candle_acc_trade_price":2}]')
    new = page_from_text('[{"candle_date_time_utc":"2026-01-01T00:00:00","opening_price":1,"high_price":3,"low_price":1,'
                         '"trade_price":3,"candle_acc_trade_volume":5,"candle_acc_trade_price":15}]')
    frame = pl.concat([
        bronze.candle_rows("upbit", "KRW-BTC", "1m", [new], run_id="new", ingest_time=T1),
        bronze.candle_rows("upbit", "KRW-BTC", "1m", [old], run_id="old", ingest_time=T0),
    ])
    result = silver.candles(frame, "1m", run_id="r")
    assert result.duplicates_dropped == 1
    assert result.rows.select("close", "volume").row(0) == (3.0, 5.0)


BAD_ROWS = [
    ('{"candle_date_time_utc":"2026-01-01T00:01:00","opening_price":0,"high_price":2,"low_price":1,"trade_price":2,'
     '"candle_acc_trade_volume":1,"candle_acc_trade_price":2}', "price <= 0"),
    ('{"candle_date_time_utc":"2026-01-01T00:02:00","opening_price":1,"high_price":2,"low_price":1,"trade_price":2,'
     '"candle_acc_trade_volume":-1,"candle_acc_trade_price":2}', "volume < 0"),
    ('{"candle_date_time_utc":"2026-01-01T00:03:00","opening_price":1,"high_price":2,"low_price":1.5,"trade_price":2,'
     '"candle_acc_trade_volume":1,"candle_acc_trade_price":2}', "low above open/close"),
    ('{"candle_date_time_utc":"2026-01-01T00:04:00","opening_price":1,"high_price":1.5,"low_price":1,"trade_price":2,'
     '"candle_acc_trade_volume":1,"candle_acc_trade_price":2}', "high below open/close"),
    ('{"candle_date_time_utc":"2026-01-01T00:05:00","opening_price":"abc","high_price":2,"low_price":1,"trade_price":2,'
     '"candle_acc_trade_price":2}', "missing or non-numeric field(s): open volume"),
]


def test_invalid_rows_become_dead_letters_with_reasons_and_drift_is_ignored():
    good = ('{"candle_date_time_utc":"2026-01-01T00:00:00","opening_price":1,"high_price":2,"low_price":1,"trade_price":2,'
            '"candle_acc_trade_volume":1,"candle_acc_trade_price":2,"brand_new_field":{"nested":[1,2]}}')
    page = page_from_text("[" + ",".join([good] + [raw for raw, _ in BAD_ROWS]) + "]")
    rows = bronze.candle_rows("upbit", "KRW-BTC", "1m", [page], run_id="r", ingest_time=T0)
    result = silver.candles(rows, "1m", run_id="silver-run")
    assert result.rows.height == 1  # the drifted row (a new field) still loads
    dead = result.dead_letters.sort("raw")
    assert sorted(dead["error"].to_list()) == sorted(reason for _, reason in BAD_ROWS)
    assert set(dead["source"]) == {"silver.candles_1m"} and set(dead["ingest_run_id"]) == {"silver-run"}
    # The dead letter keeps the row exactly as bronze had it.
    assert {r.decode() for r in dead["raw"]} == {raw for raw, _ in BAD_ROWS}


def test_fear_greed_history_from_real_csv(recorded_data):
    with (recorded_data / "fear_greed" / "fear_greed_2018-02-01_2026-03-12.csv").open() as f:
        entries = [
            {"value": r["value"], "value_classification": r["value_classification"],
             "timestamp": str(int(datetime.fromisoformat(r["date"].replace("Z", "+00:00")).timestamp()))}
            for r, _ in zip(csv.DictReader(f), range(30))
        ]
    entries.append({"value": "140", "value_classification": "Greed", "timestamp": "1500000000"})
    page = Page("/fng/", {"limit": 31}, entries, [json.dumps(e) for e in entries])
    rows = bronze.fear_greed_rows(page, run_id="r", ingest_time=T0)
    result = silver.fear_greed(rows, run_id="r")
    assert result.rows.height == 30
    assert result.rows.filter(pl.col("day") == datetime(2026, 3, 12).date())["value"].to_list() == [18]
    assert result.dead_letters["error"].to_list() == ["value outside 0..100"]
