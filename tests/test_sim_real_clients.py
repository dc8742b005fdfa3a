"""A widely used exchange client, unmodified, against the simulator: ccxt (REST) and ccxt.pro (WebSocket).

Only configuration changes: ``urls['api']`` entries point at the simulator, and Binance's market loading is limited
to spot (``options['fetchMarkets']``; the simulator serves no futures API) without the key-only currency call. Every
value ccxt returns is checked against the simulator's ground truth (``SimHandle.ground_truth``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from functools import reduce
from operator import add

import ccxt
import ccxt.pro
import httpx
import pytest
import websockets

DAY_MS = 86_400_000
BINANCE_OPTIONS = {"options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False}}


def binance_rest(sim) -> ccxt.binance:
    ex = ccxt.binance(BINANCE_OPTIONS)
    ex.urls["api"]["public"] = sim.url + "/api/v3"
    return ex


def upbit_rest(sim) -> ccxt.upbit:
    ex = ccxt.upbit()
    ex.urls["api"]["public"] = sim.url
    return ex


def minutes(trades: list[dict]) -> dict[int, dict]:
    """1-minute OHLCV rebuilt from ground-truth trades (sums as left folds, the order they happened)."""
    by: dict[int, list[dict]] = defaultdict(list)
    for t in trades:
        by[t["ts"] // 60_000 * 60_000].append(t)
    return {m: {"o": ts[0]["price"], "h": max(t["price"] for t in ts), "l": min(t["price"] for t in ts),
                "c": ts[-1]["price"], "v": reduce(add, [t["volume"] for t in ts])} for m, ts in by.items()}


def check_closed_minutes(sim, market: str, candles: list[list], before_ms: int, **tolerance) -> None:
    """ccxt's OHLCV rows of minutes that had ended before the request equal the minutes rebuilt from ground truth."""
    closed = [c for c in candles if c[0] + 60_000 <= before_ms]
    assert closed, candles
    rebuilt = minutes(sim.ground_truth(market, closed[0][0], closed[-1][0] + 60_000))
    for ts, o, h, low, c, v in closed:
        r = rebuilt[ts]
        assert (o, h, low, c) == (r["o"], r["h"], r["l"], r["c"]) and v == pytest.approx(r["v"], **tolerance)


def test_ccxt_binance_rest_markets_ticker_trades_ohlcv_equal_ground_truth(sim_session):
    ex = binance_rest(sim_session)
    markets = ex.load_markets()
    status = sim_session.status()
    assert sorted(m["id"] for m in markets.values()) == sorted(status["binance_symbols"])
    assert markets["BTC/USDT"]["precision"]["price"] == 0.01 and markets["BTC/USDT"]["spot"]

    before = int(time.time() * 1000)
    trades = ex.fetch_trades("BTC/USDT", limit=50)  # ccxt's default: aggTrades
    truth = sim_session.ground_truth("BTCUSDT", trades[0]["timestamp"], trades[-1]["timestamp"] + 1)
    orders: dict[int, list[dict]] = defaultdict(list)
    for t in truth:
        orders[t["agg_id"]].append(t)
    assert [int(t["id"]) for t in trades] == sorted(orders)[-len(trades):]
    for t in trades:
        fills = orders[int(t["id"])]
        assert t["price"] == fills[0]["price"] and t["timestamp"] == fills[0]["ts"]
        assert t["amount"] == pytest.approx(reduce(add, [f["volume"] for f in fills]), abs=1e-8)
        assert t["side"] == fills[0]["side"]

    # Binance prints volumes with 8 decimals: equal to the ground-truth sum to 1e-8
    check_closed_minutes(sim_session, "BTCUSDT", ex.fetch_ohlcv("BTC/USDT", "1m", limit=5), before, abs=1e-8)

    ticker = ex.fetch_ticker("BTC/USDT")  # /api/v3/ticker/24hr?symbol=: the rolling 24 h ending at closeTime
    info = ticker["info"]
    window = sim_session.ground_truth("BTCUSDT", int(info["openTime"]) + 1, int(info["closeTime"]) + 1)
    assert int(info["count"]) == len(window) > 0
    assert (int(info["firstId"]), int(info["lastId"])) == (window[0]["trade_id"], window[-1]["trade_id"])
    assert ticker["last"] == window[-1]["price"] and ticker["open"] == window[0]["price"]
    assert ticker["high"] == max(t["price"] for t in window) and ticker["low"] == min(t["price"] for t in window)
    assert ticker["baseVolume"] == pytest.approx(sum(t["volume"] for t in window), rel=1e-9)

    tickers = ex.fetch_tickers(["BTC/USDT", "ETH/USDT"])  # symbols=["BTCUSDT","ETHUSDT"]
    assert set(tickers) == {"BTC/USDT", "ETH/USDT"}
    eth = tickers["ETH/USDT"]["info"]
    eth_window = sim_session.ground_truth("ETHUSDT", int(eth["openTime"]) + 1, int(eth["closeTime"]) + 1)
    assert int(eth["count"]) == len(eth_window) and tickers["ETH/USDT"]["last"] == eth_window[-1]["price"]
    with httpx.Client(base_url=sim_session.url, timeout=60) as client:
        every = client.get("/api/v3/ticker/24hr").json()
        assert sorted(r["symbol"] for r in every) == sorted(status["binance_symbols"])
        price = client.get("/api/v3/ticker/price", params={"symbol": "SOLUSDT"}).json()
        last = sim_session.ground_truth("SOLUSDT", int(time.time() * 1000) - 3_600_000, int(time.time() * 1000) + 1)
        assert price["symbol"] == "SOLUSDT" and float(price["price"]) in {t["price"] for t in last[-50:]}
        assert client.get("/api/v3/ticker/24hr", params={"symbol": "NOPEUSDT"}).json()["code"] == -1121
        bad = client.get("/api/v3/ticker/24hr", params={"symbols": "BTCUSDT"})
        assert bad.status_code == 400 and bad.json()["code"] == -1100  # symbols must be a JSON array
        assert int(client.get("/api/v3/ticker/24hr").headers["x-mbx-used-weight-1m"]) >= 80  # all symbols: weight 80


def test_ccxt_upbit_rest_markets_ticker_trades_ohlcv_equal_ground_truth(sim_session):
    ex = upbit_rest(sim_session)
    markets = ex.load_markets()
    status = sim_session.status()
    assert sorted(m["id"] for m in markets.values()) == sorted(status["upbit_markets"])

    before = int(time.time() * 1000)
    trades = ex.fetch_trades("BTC/KRW", limit=30)
    truth = {t["sequential_id"]: t for t in sim_session.ground_truth("KRW-BTC", trades[0]["timestamp"],
                                                                      trades[-1]["timestamp"] + 1)}
    for t in trades:
        real = truth[int(t["id"])]
        assert (t["timestamp"], t["price"], t["amount"], t["side"]) == (real["ts"], real["price"], real["volume"], real["side"])

    check_closed_minutes(sim_session, "KRW-BTC", ex.fetch_ohlcv("BTC/KRW", "1m", limit=5), before, rel=1e-12)

    ticker = ex.fetch_ticker("BTC/KRW")
    at = int(ticker["info"]["timestamp"])
    day = sim_session.ground_truth("KRW-BTC", at // DAY_MS * DAY_MS, at + 1)
    rolling = sim_session.ground_truth("KRW-BTC", at - DAY_MS + 1, at + 1)
    assert ticker["last"] == day[-1]["price"] and ticker["open"] == day[0]["price"]
    assert ticker["high"] == max(t["price"] for t in day) and ticker["low"] == min(t["price"] for t in day)
    assert ticker["baseVolume"] == pytest.approx(sum(t["volume"] for t in rolling), rel=1e-9)  # acc_trade_volume_24h

    every = ex.fetch_tickers()
    assert sorted(every) == sorted(markets)
    with httpx.Client(base_url=sim_session.url, timeout=60) as client:
        krw = client.get("/v1/ticker/all", params={"quote_currencies": "KRW"}).json()
        assert sorted(t["market"] for t in krw) == sorted(m for m in status["upbit_markets"] if m.startswith("KRW-"))
        details = client.get("/v1/market/all", params={"isDetails": "true"}).json()  # the older spelling too
        assert all("market_event" in row for row in details)


async def _watch_binance(sim) -> tuple[list, list]:
    ex = ccxt.pro.binance(BINANCE_OPTIONS)
    ex.urls["api"]["public"] = sim.url + "/api/v3"
    ex.urls["api"]["ws"]["spot"] = f"ws://{sim.host}:{sim.port}/ws"  # ccxt connects to /ws/<n>, then SUBSCRIBEs
    try:
        one: list = []
        while len(one) < 5:
            one += await ex.watch_trades("BTC/USDT")
        several: list = []
        while {t["symbol"] for t in several} != {"ETH/USDT", "XRP/USDT"}:
            several += await ex.watch_trades_for_symbols(["ETH/USDT", "XRP/USDT"])
        return one, several
    finally:
        await ex.close()


async def _watch_upbit(sim) -> list:
    ex = ccxt.pro.upbit()
    ex.urls["api"]["public"] = sim.url
    ex.urls["api"]["ws"] = f"ws://{sim.host}:{sim.port}/websocket/v1"
    try:
        got: list = []
        while len(got) < 5:
            got += await ex.watch_trades("BTC/KRW")
        return got
    finally:
        await ex.close()


def _by_id(trades: list) -> dict:
    return {int(t["id"]): t for t in trades}


def test_ccxt_pro_watches_trades_on_both_exchanges_equal_to_ground_truth(sim_session):
    one, several = asyncio.run(asyncio.wait_for(_watch_binance(sim_session), 90))
    for symbol, got in (("BTCUSDT", one), ("ETHUSDT", [t for t in several if t["symbol"] == "ETH/USDT"]),
                        ("XRPUSDT", [t for t in several if t["symbol"] == "XRP/USDT"])):
        got = list(_by_id(got).values())
        truth = {t["trade_id"]: t for t in sim_session.ground_truth(symbol, min(t["timestamp"] for t in got),
                                                                     max(t["timestamp"] for t in got) + 1)}
        for t in got:
            real = truth[int(t["id"])]
            assert (t["timestamp"], t["price"], t["side"]) == (real["ts"], real["price"], real["side"])
            assert t["amount"] == pytest.approx(real["volume"], abs=1e-8)
    upbit = list(_by_id(asyncio.run(asyncio.wait_for(_watch_upbit(sim_session), 90))).values())
    # ccxt takes Upbit's message `timestamp` (when it was sent; the SNAPSHOT's is later than its trade), so the trade
    # time comes from the id: sequential_id = trade_timestamp * 10^4 + n
    traded = [int(t["id"]) // 10_000 for t in upbit]
    truth = {t["sequential_id"]: t for t in sim_session.ground_truth("KRW-BTC", min(traded), max(traded) + 1)}
    for t in upbit:
        real = truth[int(t["id"])]
        assert (t["price"], t["amount"], t["side"]) == (real["price"], real["volume"], real["side"])
        assert t["timestamp"] >= real["ts"]


async def _binance_protocol(base: str) -> dict:
    out: dict = {}

    async def answer(ws, ident):
        for _ in range(500):
            msg = json.loads(await ws.recv())
            if msg.get("id") == ident:
                return msg
        raise AssertionError(f"no answer to request {ident}")

    async with websockets.connect(base + "/ws/7") as ws:  # a connection name, not a stream: accepted, nothing sent
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}))
        out["subscribed"] = await answer(ws, 1)
        out["first"] = json.loads(await ws.recv())
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        out["listed"] = await answer(ws, 2)
        await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 3}))
        out["unsubscribed"] = await answer(ws, 3)
        await asyncio.sleep(1.1)  # the 5-per-second window passes
        too_many = [f"s{i}usdt@trade" for i in range(1025)]
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": too_many, "id": 4}))
        out["over_1024"] = await answer(ws, 4)
    async with websockets.connect(base + "/stream") as ws:  # combined endpoint, subscribed afterwards
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": "a"}))
        out["combined_reply"] = await answer(ws, "a")
        out["combined_first"] = json.loads(await ws.recv())
    async with websockets.connect(base + "/ws") as ws:  # six messages inside a second: Binance disconnects
        for i in range(6):
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 10 + i}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            for _ in range(10):
                await ws.recv()
        out["flood_close"] = closed.value.rcvd.code if closed.value.rcvd else None
    return out


def test_binance_websocket_subscription_protocol_and_limits(sim_session):
    out = asyncio.run(asyncio.wait_for(_binance_protocol(sim_session.binance_ws_url), 60))
    assert out["subscribed"] == {"result": None, "id": 1}
    assert out["first"]["e"] == "trade" and out["first"]["s"] == "BTCUSDT" and "stream" not in out["first"]
    assert out["listed"] == {"result": ["btcusdt@trade"], "id": 2}
    assert out["unsubscribed"] == {"result": None, "id": 3}
    assert "1024" in out["over_1024"]["error"]["msg"]
    assert out["combined_reply"] == {"result": None, "id": "a"}
    assert out["combined_first"]["stream"] == "ethusdt@trade" and out["combined_first"]["data"]["s"] == "ETHUSDT"
    assert out["flood_close"] == 1008


@pytest.mark.sim_options(markets="ALL", total_trade_rate=500, min_trade_rate=0.05)
def test_all_markets_listed_for_clients_and_rates_follow_volume_share(sim):
    """With ALL the simulator lists every recorded market, so a client resolves ALL / TOP50 from its REST."""
    from exchange_sim.universe import BINANCE_TOP, upbit_listing

    upbit = upbit_rest(sim).load_markets()
    krw = {m["id"] for m in upbit.values() if m["quote"] == "KRW"}
    assert set(upbit_listing()) <= krw and len(krw) >= 105
    assert upbit["NEO/KRW"]["info"]["korean_name"] == "네오"  # the recorded listing's names
    binance = binance_rest(sim).load_markets()
    assert {m["id"] for m in binance.values()} == {s for s, _ in BINANCE_TOP}
    rates = sim.status()["live_rates"]
    assert rates["binance:BTCUSDT"] > rates["binance:FLOWUSDT"] > 0.05 and rates["upbit:KRW-BTC"] > rates["upbit:KRW-NU"]
    assert sum(rates.values()) == pytest.approx(500 + 0.05 * len(rates))
