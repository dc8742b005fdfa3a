"""The per-exchange parsers on real recorded frames (exchange_sim/recorded) and on the bad input the issue lists."""

from __future__ import annotations

import csv
import json

import orjson
import pytest

from streaming_sensor.feeds import CONTROL, DEAD, TICKER, TRADE, BinanceFeed, UpbitFeed


def upbit_frames(recorded_data):
    samples = json.loads((recorded_data / "upbit" / "native_samples.json").read_text())
    return samples["ws_trade_default_format__captured_2023-11-19"]


def binance_frames(recorded_data, limit=None):
    """The recorded trxusdt@trade stream, re-framed as the combined stream sends it (values copied verbatim)."""
    path = recorded_data / "binance" / "ws_trades_TRXUSDT_spot_2025-03-04.csv"
    with path.open() as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if limit is not None and i >= limit:
                return
            data = {
                "e": row["EventType"], "E": int(row["EventTime"]) // 1000, "s": row["Symbol"], "t": int(row["TradeId"]),
                "p": row["Price"], "q": row["Quantity"], "T": int(row["TransactionTime"]) // 1000,
                "m": row["IsBuyerMarketMaker"] == "1", "M": row["MUnknownParameter"] == "True",
            }
            yield row, orjson.dumps({"stream": row["Stream"], "data": data})


def test_upbit_parses_real_trade_frames(recorded_data):
    feed = UpbitFeed("ws://x", ("KRW-BTC",))
    for msg in upbit_frames(recorded_data):
        parsed = feed.parse(json.dumps(msg).encode())  # Upbit sends UTF-8 JSON in binary frames
        assert parsed.kind == TRADE and parsed.error is None
        assert (parsed.market, parsed.trade_id, parsed.event_ms) == ("KRW-BTC", msg["sequential_id"], msg["trade_timestamp"])
    # text frames work as well
    assert feed.parse(json.dumps(upbit_frames(recorded_data)[0])).kind == TRADE


def test_binance_parses_every_recorded_trade(recorded_data):
    feed = BinanceFeed("ws://x", ("TRXUSDT",))
    ids = []
    for row, frame in binance_frames(recorded_data):
        parsed = feed.parse(frame)
        assert parsed.kind == TRADE, parsed.error
        assert parsed.market == "TRXUSDT" and parsed.event_ms == int(row["TransactionTime"]) // 1000
        ids.append(parsed.trade_id)
    assert len(ids) == 10_000 and ids == list(range(ids[0], ids[0] + 10_000))  # consecutive ids, as recorded


def test_upbit_ticker_pong_and_errors():
    feed = UpbitFeed("ws://x", ("KRW-BTC",))
    ticker = {"type": "ticker", "code": "KRW-BTC", "timestamp": 1700365437515, "trade_price": 1.0}
    assert feed.parse(orjson.dumps(ticker)).kind == TICKER
    assert feed.parse(b'{"status":"UP"}').kind == CONTROL
    err = feed.parse(b'{"error":{"name":"WRONG_FORMAT","message":"bad"}}')
    assert err.kind == DEAD and "WRONG_FORMAT" in err.error


@pytest.mark.parametrize(
    "frame, reason",
    [
        (b'{"type":"trade","code":"KRW-BTC","trade_price":1', "invalid JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'{"type":"orderbook","code":"KRW-BTC"}', "unknown message type"),
        (b'{"type":"trade","code":"KRW-DOGE","sequential_id":1,"trade_timestamp":1}', "unsubscribed market"),
        (b'{"type":"trade","code":"KRW-BTC","trade_timestamp":1,"trade_price":1.0}', "sequential_id"),
        (b'{"type":"trade","code":"KRW-BTC","sequential_id":1,"trade_timestamp":1,"trade_volume":1.0,"ask_bid":"ASK"}',
         "trade_price"),
        (b'{"type":"trade","code":"KRW-BTC","sequential_id":1,"trade_timestamp":1,"trade_price":1,"trade_volume":1,'
         b'"ask_bid":"X"}', "ask_bid"),
        (b"\xff\xfe not utf8", "invalid JSON"),
    ],
)
def test_upbit_bad_frames_are_dead_letters_with_a_reason(frame, reason):
    parsed = UpbitFeed("ws://x", ("KRW-BTC",)).parse(frame)
    assert parsed.kind == DEAD and reason in parsed.error


def test_upbit_new_field_is_accepted(recorded_data):
    msg = dict(upbit_frames(recorded_data)[1], brand_new_field={"x": 1})
    assert UpbitFeed("ws://x", ("KRW-BTC",)).parse(orjson.dumps(msg)).kind == TRADE


@pytest.mark.parametrize(
    "data, reason",
    [
        ({"e": "aggTrade", "s": "BTCUSDT"}, "unknown message type"),
        ({"e": "trade", "s": "DOGEUSDT", "t": 1, "T": 1, "p": "1", "q": "1", "m": True}, "unsubscribed market"),
        ({"e": "trade", "s": "BTCUSDT", "T": 1, "p": "1", "q": "1", "m": True}, "field: t"),
        ({"e": "trade", "s": "BTCUSDT", "t": 1, "T": 1, "p": "abc", "q": "1", "m": True}, "p/q"),
        ({"e": "trade", "s": "BTCUSDT", "t": 1, "T": 1, "p": "1", "q": "1"}, "field: m"),
        ({"s": "BTCUSDT"}, "missing field: e"),
    ],
)
def test_binance_bad_frames_are_dead_letters_with_a_reason(data, reason):
    parsed = BinanceFeed("ws://x", ("BTCUSDT",)).parse(orjson.dumps({"stream": "btcusdt@trade", "data": data}))
    assert parsed.kind == DEAD and reason in parsed.error


def test_binance_control_messages():
    feed = BinanceFeed("ws://x", ("BTCUSDT",))
    assert feed.parse(b'{"result":null,"id":1}').kind == CONTROL
    shutdown = feed.parse(b'{"stream":"btcusdt@trade","data":{"e":"serverShutdown","E":1}}')
    assert shutdown.kind == CONTROL and shutdown.reconnect


def test_endpoints_and_subscription():
    assert BinanceFeed("ws://h:1/", ("BTCUSDT", "ETHUSDT")).url() == "ws://h:1/stream?streams=btcusdt@trade/ethusdt@trade"
    (sub,) = UpbitFeed("ws://h/websocket/v1", ("KRW-BTC",)).subscription()
    request = json.loads(sub)
    assert {"type": "trade", "codes": ["KRW-BTC"], "is_only_realtime": True} in request
    assert request[-1] == {"format": "DEFAULT"}
