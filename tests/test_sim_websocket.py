"""The simulator's WebSockets through the real `websockets` client: Upbit and Binance subscriptions, formats, pings."""

from __future__ import annotations

import asyncio
import csv
import json
import socket
import time
from functools import reduce
from operator import add

import pytest
import websockets

from exchange_sim.upbit_shapes import TICKER_KEYS, TRADE_KEYS

UPBIT = ["KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-USDT"]  # the simulator's default markets
UPBIT_BEST_QUOTE_KEYS = {"best_ask_price", "best_ask_size", "best_bid_price", "best_bid_size"}  # newer than the 2023 capture


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _subscribe(url: str, request: list, n: int) -> list:
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps(request))
        return [await ws.recv() for _ in range(n)]


@pytest.fixture(scope="module")
def samples(recorded_data):
    return json.loads((recorded_data / "upbit" / "native_samples.json").read_text())


def test_upbit_trades_snapshot_then_realtime_binary_and_real_shape(sim_session, samples):
    frames = run(_subscribe(sim_session.upbit_ws_url, [{"ticket": "t1"}, {"type": "trade", "codes": ["KRW-BTC", "KRW-ETH"]},
                                                       {"format": "DEFAULT"}], 12))
    assert all(isinstance(f, bytes) for f in frames)
    msgs = [json.loads(f) for f in frames]
    real = samples["ws_trade_default_format__captured_2023-11-19"]
    for m in msgs:
        assert set(m) == set(real[0]) | UPBIT_BEST_QUOTE_KEYS
        assert {k: type(m[k]) for k in real[0]} == {k: type(v) for k, v in real[0].items()}
    assert [m["stream_type"] for m in msgs[:2]] == ["SNAPSHOT", "SNAPSHOT"]
    assert {m["code"] for m in msgs[:2]} == {"KRW-BTC", "KRW-ETH"}
    assert all(m["stream_type"] == "REALTIME" for m in msgs[2:])
    # the stream carries the model's trades with no gap: ground truth between the first and last realtime BTC trade
    btc = [m for m in msgs[2:] if m["code"] == "KRW-BTC"]
    if len(btc) >= 2:
        truth = sim_session.ground_truth("KRW-BTC", btc[0]["trade_timestamp"], btc[-1]["trade_timestamp"] + 1)
        assert [t["sequential_id"] for t in truth] == [m["sequential_id"] for m in btc]
        assert [t["price"] for t in truth] == [m["trade_price"] for m in btc]
    for m in msgs:
        assert m["sequential_id"] // 10_000 == m["trade_timestamp"]
        assert m["change"] in ("RISE", "EVEN", "FALL") and m["change_price"] >= 0
        assert m["ask_bid"] in ("ASK", "BID")


def test_upbit_simple_and_list_formats_and_ticker(sim_session):
    simple = json.loads(run(_subscribe(sim_session.upbit_ws_url, [{"ticket": "t"}, {"type": "trade", "codes": ["KRW-XRP"]},
                                                                  {"format": "SIMPLE"}], 1))[0])
    assert set(simple) == {short for _, short in TRADE_KEYS} and simple["ty"] == "trade" and simple["st"] == "SNAPSHOT"
    listed = json.loads(run(_subscribe(sim_session.upbit_ws_url, [{"ticket": "t"}, {"type": "trade", "codes": ["KRW-XRP"]},
                                                                  {"format": "JSON_LIST"}], 1))[0])
    assert isinstance(listed, list) and listed[0]["type"] == "trade"
    # A REALTIME ticker follows a trade, and an Upbit market can be quiet for a minute or two (empty minutes), so
    # subscribe every market: the snapshots come first, then the first REALTIME ticker of whichever market trades.
    tick = [json.loads(f) for f in run(_subscribe(sim_session.upbit_ws_url, [{"ticket": "t"},
                                                                              {"type": "ticker", "codes": UPBIT}], 6))]
    assert set(tick[0]) == {full for full, _ in TICKER_KEYS}
    assert [t["stream_type"] for t in tick] == ["SNAPSHOT"] * 5 + ["REALTIME"]
    assert sorted(t["code"] for t in tick[:5]) == sorted(UPBIT)
    latest = tick[5]
    truth = sim_session.ground_truth(latest["code"], latest["trade_timestamp"], latest["trade_timestamp"] + 1)
    assert latest["trade_price"] in [t["price"] for t in truth]  # the ticker carries the trade that triggered it
    assert len(tick[0]["trade_date"]) == 8 and len(tick[0]["trade_time"]) == 6  # yyyyMMdd / HHmmss on tickers
    assert tick[0]["low_price"] <= tick[0]["trade_price"] <= tick[0]["high_price"]
    assert tick[0]["acc_trade_volume"] <= tick[0]["acc_trade_volume_24h"]


def test_upbit_only_snapshot_ping_and_errors(sim_session):
    async def scenario():
        async with websockets.connect(sim_session.upbit_ws_url) as ws:
            answers = {}
            for name, request in [
                ("WRONG_FORMAT", "not json"),
                ("NO_TICKET", [{"type": "trade", "codes": ["KRW-BTC"]}]),
                ("NO_TYPE", [{"ticket": "x"}]),
                ("NO_CODES", [{"ticket": "x"}, {"type": "trade"}]),
                ("INVALID_PARAM", [{"ticket": "x"}, {"type": "trade", "codes": ["krw-btc"]}]),
                ("WRONG_FORMAT", [{"ticket": "x"}, {"type": "trade", "codes": ["KRW-BTC"]}, {"format": "XML"}]),
            ]:
                await ws.send(request if isinstance(request, str) else json.dumps(request))
                answers.setdefault(name, []).append(json.loads(await ws.recv())["error"]["name"])
            await ws.send(json.dumps([{"ticket": "x"}, {"type": "trade", "codes": ["KRW-BTC"], "is_only_snapshot": True}]))
            snapshot = json.loads(await ws.recv())
            await ws.send("PING")
            status = json.loads(await ws.recv())  # nothing else arrives: snapshot only
            pong = await ws.ping()
            await asyncio.wait_for(pong, 5)  # WebSocket-level PING frames are answered too
            return answers, snapshot, status

    answers, snapshot, status = run(scenario())
    assert all(set(v) == {k} for k, v in answers.items())
    assert snapshot["stream_type"] == "SNAPSHOT"
    assert status == {"status": "UP"}


@pytest.mark.sim_options(ws_idle_timeout=1.0, ws_ping_interval=0.3)
def test_idle_close_and_server_pings(sim):
    async def scenario():
        async with websockets.connect(sim.binance_ws_url + "/ws") as binance:  # Binance has no idle close
            async with websockets.connect(sim.upbit_ws_url) as ws:
                start = time.monotonic()
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 15)
                elapsed = time.monotonic() - start
            await binance.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
            assert json.loads(await binance.recv()) == {"result": [], "id": 1}
            return elapsed, closed.value

    elapsed, closed = run(scenario())
    assert closed.rcvd is not None and closed.rcvd.code == 1000 and "idle" in closed.rcvd.reason
    assert elapsed >= 0.9
    _assert_server_pings(sim)


def _binance_trade(msg: dict) -> tuple[int, float, float, int, bool]:
    """The one parser tests apply to both the real recorded stream and the simulator's messages."""
    assert msg["e"] == "trade"
    return int(msg["t"]), float(msg["p"]), float(msg["q"]), int(msg["T"]), msg["m"] in (True, "1", 1, "True")


def test_binance_raw_and_combined_streams_match_the_real_stream(sim_session, recorded_data):
    with open(recorded_data / "binance" / "ws_trades_TRXUSDT_spot_2025-03-04.csv") as fh:
        rows = list(csv.DictReader(fh))[:50]
    real = [{"e": r["EventType"], "E": int(r["EventTime"]) // 1000, "s": r["Symbol"], "t": int(r["TradeId"]),
             "p": r["Price"], "q": r["Quantity"], "T": int(r["TransactionTime"]) // 1000, "m": r["IsBuyerMarketMaker"] == "1",
             "M": r["MUnknownParameter"] == "True"} for r in rows]

    async def scenario():
        async with websockets.connect(sim_session.binance_ws_url + "/ws/btcusdt@trade") as ws:
            raw = [await ws.recv() for _ in range(12)]
        async with websockets.connect(sim_session.binance_ws_url + "/stream?streams=ethusdt@trade/ethusdt@aggTrade") as ws:
            combined = [await ws.recv() for _ in range(16)]
        return raw, combined

    raw, combined = run(scenario())
    assert all(isinstance(f, str) for f in raw)
    sim_msgs = [json.loads(f) for f in raw]
    assert all(set(m) == set(real[0]) for m in sim_msgs)
    parsed_real, parsed_sim = [_binance_trade(m) for m in real], [_binance_trade(m) for m in sim_msgs]
    for parsed in (parsed_real, parsed_sim):
        ids = [p[0] for p in parsed]
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # contiguous trade ids, as on Binance
    truth = {t["trade_id"]: t for t in sim_session.ground_truth("BTCUSDT", parsed_sim[0][3], parsed_sim[-1][3] + 1)}
    assert all(truth[i]["price"] == p and truth[i]["side"] == ("sell" if m else "buy") for i, p, _q, _t, m in parsed_sim)

    wrapped = [json.loads(f) for f in combined]
    assert all(set(w) == {"stream", "data"} for w in wrapped)
    streams = {w["stream"] for w in wrapped}
    assert streams <= {"ethusdt@trade", "ethusdt@aggTrade"}
    for w in wrapped:
        if w["stream"] == "ethusdt@aggTrade":
            assert set(w["data"]) == {"e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"} and w["data"]["f"] <= w["data"]["l"]
        else:
            assert w["data"]["s"] == "ETHUSDT"


def test_binance_subscribe_method_and_bad_stream(sim_session):
    async def scenario():
        async with websockets.connect(sim_session.binance_ws_url + "/ws") as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["solusdt@aggTrade"], "id": 7}))
            reply = json.loads(await ws.recv())
            first = json.loads(await ws.recv())
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
            for _ in range(200):
                listing = json.loads(await ws.recv())
                if listing.get("id") == 8:
                    break
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["nosuch@trade"], "id": 9}))
            for _ in range(200):
                error = json.loads(await ws.recv())
                if error.get("id") == 9:
                    break
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(sim_session.binance_ws_url + "/ws/btcusdt@depth"):
                pass
        return reply, first, listing, error

    reply, first, listing, error = run(scenario())
    assert reply == {"result": None, "id": 7}
    assert first["e"] == "aggTrade" and first["s"] == "SOLUSDT"
    assert listing == {"result": ["solusdt@aggTrade"], "id": 8}
    assert "error" in error


def _assert_server_pings(sim):
    """Read raw frames off a plain socket: the server's PING (opcode 9) arrives without any client traffic."""
    with socket.create_connection(("127.0.0.1", sim.port), timeout=10) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101")
        first = s.recv(2)
        assert first[0] & 0x0F == 0x9  # a PING frame


@pytest.mark.sim_options(firehose=True)
def test_firehose_sends_contiguous_model_trades_as_fast_as_read(sim):
    async def scenario():
        async with websockets.connect(sim.binance_ws_url + "/ws/btcusdt@trade", max_queue=None) as ws:
            start = time.monotonic()
            msgs = [json.loads(await ws.recv()) for _ in range(20_000)]
            return msgs, time.monotonic() - start

    msgs, _elapsed = run(scenario())
    ids = [m["t"] for m in msgs]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    # 20,000 trades at the live rate of 3/s would take nearly two hours of wall time: firehose ran ahead of the clock
    assert msgs[-1]["T"] - msgs[0]["T"] > 3_600_000
    truth = sim.ground_truth("BTCUSDT", msgs[0]["T"], msgs[99]["T"] + 1)
    assert [t["trade_id"] for t in truth][:100] == ids[:100]

    async def klines():
        async with websockets.connect(sim.binance_ws_url + "/ws/ethusdt@kline_1m") as ws:
            got = []
            while sum(k["k"]["x"] for k in got) < 3:
                got.append(json.loads(await ws.recv()))
            return got

    got = run(klines())
    assert all(set(k) == {"e", "E", "s", "k"} and k["e"] == "kline" for k in got)
    closed = [k["k"] for k in got if k["k"]["x"]]
    assert [c["t"] for c in closed] == sorted(c["t"] for c in closed)
    for c in closed:  # a closed kline is exactly its minute of ground-truth trades
        trades = sim.ground_truth("ETHUSDT", c["t"], c["T"] + 1)
        assert (c["f"], c["L"], c["n"]) == (trades[0]["trade_id"], trades[-1]["trade_id"], len(trades))
        assert c["o"] == f"{trades[0]['price']:.8f}" and c["c"] == f"{trades[-1]['price']:.8f}"
        assert c["v"] == f"{reduce(add, [t['volume'] for t in trades]):.8f}"


def test_upbit_is_only_realtime_camel_case_sends_no_snapshot(sim_session):
    """The older `isOnlyRealtime` spelling (ccxt and old docs) with SIMPLE keys: realtime trades only, as sent."""
    frames = run(_subscribe(sim_session.upbit_ws_url, [{"ticket": "rt"}, {"type": "trade", "codes": ["KRW-BTC", "KRW-ETH"],
                                                                           "isOnlyRealtime": True}, {"format": "SIMPLE"}], 4))
    msgs = [json.loads(f) for f in frames]
    assert {m["st"] for m in msgs} == {"REALTIME"}
    for m in msgs:
        truth = sim_session.ground_truth(m["cd"], m["ttms"], m["ttms"] + 1)
        assert m["sid"] in {t["sequential_id"] for t in truth}
