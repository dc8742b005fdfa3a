"""Rate limits, fault switches, shocks and ground truth, the Slack sink and Fear & Greed of the exchange simulator."""

from __future__ import annotations

import asyncio
import csv
import json
import time

import httpx
import pytest
import websockets
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError


@pytest.fixture(scope="module")
def control_sim():
    """One simulator for the tests that flip faults; each test leaves it reset."""
    from exchange_sim.testing import running_sim

    with running_sim(history_start="2025-09-01", trade_rate=5) as handle:
        yield handle


@pytest.fixture
def fault_sim(control_sim):
    control_sim.reset()
    yield control_sim
    control_sim.reset()


@pytest.mark.sim_options(upbit_rate=3, upbit_ban_after=2, upbit_ban_s=30, binance_weight=10, binance_ban_after=1)
def test_rate_limits_429_then_418(sim):
    with httpx.Client(base_url=sim.url, timeout=30) as c:
        statuses, remaining = [], []
        for _ in range(6):
            r = c.get("/v1/candles/minutes/1", params={"market": "KRW-BTC"})
            statuses.append(r.status_code)
            remaining.append(r.headers["Remaining-Req"])
        # 3 per second pass, the next ones are refused, and a client that keeps going is blocked with 418
        assert statuses[:3] == [200, 200, 200] and statuses[3:5] == [429, 429] and statuses[5] == 418
        assert remaining[:3] == [f"group=candle; min=1800; sec={n}" for n in (2, 1, 0)]
        assert c.get("/v1/candles/minutes/1", params={"market": "KRW-BTC"}).status_code == 418  # still blocked
        # the groups are separate, but a ban covers the client
        assert c.get("/v1/trades/ticks", params={"market": "KRW-BTC"}).status_code == 418

        statuses, headers = [], []
        for _ in range(7):
            r = c.get("/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1m", "limit": 1})
            statuses.append(r.status_code)
            headers.append(r.headers)
        assert statuses[:5] == [200] * 5 and statuses[5] == 429 and statuses[6] == 418
        assert [h["X-MBX-USED-WEIGHT-1M"] for h in headers[:5]] == ["2", "4", "6", "8", "10"]
        assert int(headers[5]["Retry-After"]) >= 1 and int(headers[6]["Retry-After"]) >= 1
        sim.reset()
        assert c.get("/v1/candles/minutes/1", params={"market": "KRW-BTC"}).status_code == 200
        # a browser (Origin header) gets one request per 10 s
        browser = {"Origin": "https://example.test"}
        assert [c.get("/v1/market/all", headers=browser).status_code for _ in range(2)] == [200, 429]


def test_rest_faults_slow_5xx_and_429_bursts(fault_sim):
    sim = fault_sim
    with httpx.Client(base_url=sim.url, timeout=30) as c:
        sim.set_faults(rest_429_burst=2)
        codes = [c.get("/api/v3/time").status_code for _ in range(3)]
        assert codes == [429, 429, 200]
        sim.set_faults(rest_5xx_every=2)
        codes = [c.get("/api/v3/time").status_code for _ in range(4)]
        assert sorted(codes) == [200, 200, 503, 503]
        sim.set_faults(rest_5xx_every=0, rest_slow_ms=400)
        start = time.monotonic()
        assert c.get("/v1/market/all").status_code == 200
        assert time.monotonic() - start >= 0.4
        assert c.get("/_sim/status").json()["faults"]["rest_slow_ms"] == 400  # /_sim is never slowed or failed
        r = c.post("/_sim/faults", json={"no_such_fault": 1})
        assert r.status_code == 400 and "no_such_fault" in r.json()["error"]


def test_websocket_faults_duplicates_reorder_malformed_drift_disconnect(fault_sim):
    sim = fault_sim
    sim.set_faults(ws_duplicate_every=4)

    async def collect(n: int) -> list:
        async with websockets.connect(sim.binance_ws_url + "/ws/btcusdt@trade") as ws:
            return [await ws.recv() for _ in range(n)]

    frames = asyncio.run(collect(12))
    ids = [json.loads(f)["t"] for f in frames]
    assert len(ids) - len(set(ids)) >= 2  # every 4th message came twice

    sim.set_faults(ws_duplicate_every=0, ws_out_of_order_every=3, ws_malformed_every=5, ws_schema_drift_after=4)
    frames = asyncio.run(collect(20))
    parsed, broken = [], 0
    for f in frames:
        try:
            parsed.append(json.loads(f))
        except ValueError:
            broken += 1
    assert broken >= 2
    ids = [m["t"] for m in parsed]
    assert ids != sorted(ids) and len(ids) == len(set(ids))  # reordered
    # none lost: only the last swap may be cut off by the end of the read
    assert set(range(min(ids), max(ids) + 1)) - set(ids) <= {max(ids) - 1}
    # from the 4th message on, a new field (message number = trade id offset: no duplicates in this read)
    assert all(("sim_added_field" in m) == (m["t"] - min(ids) + 1 >= 4) for m in parsed)
    assert all(m["sim_added_field"] == "drift" for m in parsed if "sim_added_field" in m)

    sim.set_faults(ws_out_of_order_every=0, ws_malformed_every=0, ws_schema_drift_after=0, ws_disconnect_every_s=1.0)

    async def until_closed():
        async with websockets.connect(sim.upbit_ws_url) as ws:
            await ws.send(json.dumps([{"ticket": "x"}, {"type": "trade", "codes": ["KRW-BTC"]}]))
            start = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            return time.monotonic() - start, closed.value

    elapsed, closed = asyncio.run(until_closed())
    assert 0.8 <= elapsed < 10 and closed.rcvd.code == 1011


def test_shock_moves_the_stream_and_ground_truth_records_it(fault_sim):
    sim = fault_sim
    async def scenario():
        async with websockets.connect(sim.upbit_ws_url) as ws:
            await ws.send(json.dumps([{"ticket": "x"}, {"type": "trade", "codes": ["KRW-BTC"], "is_only_realtime": True}]))
            before = json.loads(await ws.recv())
            at = await asyncio.to_thread(sim.shock, "KRW-BTC", 10)
            after = []
            while len(after) < 5:
                m = json.loads(await ws.recv())
                if m["trade_timestamp"] >= at:
                    after.append(m)
            return before, at, after

    before, at, after = asyncio.run(scenario())
    assert all(m["trade_price"] > before["trade_price"] * 1.07 for m in after)
    truth = sim.ground_truth("KRW-BTC", after[0]["trade_timestamp"], after[-1]["trade_timestamp"] + 1)
    assert [(t["sequential_id"], t["price"]) for t in truth] == [(m["sequential_id"], m["trade_price"]) for m in after]
    status = sim.status()
    assert status["shocks"]["upbit:KRW-BTC"][0]["at_ms"] == at
    # REST history agrees with the stream after the shock
    ticks = httpx.get(sim.url + "/v1/trades/ticks", params={"market": "KRW-BTC", "count": 500}).json()
    shocked = [t for t in ticks if t["sequential_id"] in {m["sequential_id"] for m in after}]
    assert [t["trade_price"] for t in shocked] == [m["trade_price"] for m in reversed(after)][: len(shocked)]


def test_slack_sink_answers_like_slack_and_lists_messages(fault_sim):
    sim = fault_sim
    client = WebClient(token="xoxb-sim-token", base_url=sim.slack_api_url)
    resp = client.chat_postMessage(channel="#cryptoflow-alerts", text="price spike KRW-BTC +5%")
    assert resp["ok"] is True and resp["channel"].startswith("C") and resp["message"]["text"] == "price spike KRW-BTC +5%"
    assert float(resp["ts"]) > 0
    form = httpx.post(sim.slack_api_url + "chat.postMessage", data={"channel": "#x", "text": "form body"},
                      headers={"Authorization": "Bearer xoxb-sim-token"}).json()
    assert form["ok"] is True
    assert httpx.post(sim.slack_api_url + "chat.postMessage", json={"channel": "#x", "text": "t"}).json() == {
        "ok": False, "error": "not_authed"}
    messages = sim.slack_messages()
    assert [m["text"] for m in messages] == ["price spike KRW-BTC +5%", "form body"]
    page = httpx.get(sim.url + "/_sim/slack").text
    assert "price spike KRW-BTC +5%" in page and "#cryptoflow-alerts" in page

    sim.set_faults(slack_status=429)
    with pytest.raises(SlackApiError) as err:
        WebClient(token="xoxb-sim-token", base_url=sim.slack_api_url, retry_handlers=[]).chat_postMessage(channel="#a", text="x")
    assert err.value.response.status_code == 429 and err.value.response.headers["Retry-After"] == "1"
    sim.set_faults(slack_status=500)
    assert httpx.post(sim.slack_api_url + "chat.postMessage", json={"channel": "#a", "text": "x"},
                      headers={"Authorization": "Bearer t"}).status_code == 500
    assert len(sim.slack_messages()) == 2


def test_fear_greed_serves_the_real_history(sim_session, recorded_data):
    with open(next((recorded_data / "fear_greed").glob("*.csv"))) as fh:
        real = {row["date"][:10]: row for row in csv.DictReader(fh)}
    body = httpx.get(sim_session.fear_greed_url + "/fng/", params={"limit": 0, "format": "json"}).json()
    assert body["name"] == "Fear and Greed Index" and body["metadata"] == {"error": None}
    data = body["data"]
    stamps = [int(d["timestamp"]) for d in data]
    assert stamps == sorted(stamps, reverse=True)
    assert "time_until_update" in data[0] and all("time_until_update" not in d for d in data[1:])
    assert all(isinstance(v, str) for d in data for v in d.values())
    by_day = {time.strftime("%Y-%m-%d", time.gmtime(int(d["timestamp"]))): d for d in data}
    for day, row in real.items():
        assert by_day[day]["value"] == row["value"] and by_day[day]["value_classification"] == row["value_classification"]
    assert "2024-10-26" not in by_day  # a real gap stays a gap
    two = httpx.get(sim_session.fear_greed_url + "/fng/", params={"limit": 2}).json()["data"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_until_update"} for r in rows]  # noqa: E731
    assert len(two) == 2 and strip(two) == strip(data[:2])  # the countdown moves between the two calls


def test_bad_start_options_fail_with_a_clear_message(tmp_path):
    from exchange_sim.testing import running_sim

    bad = tmp_path / "KRW-BTC_1m_bad.csv"
    bad.write_text("timestamp,open,high,low,close,volume\n2025-09-01 00:00:00,10,9,8,10,1\n")
    with pytest.raises(RuntimeError, match=r"(?s)exited with 2.*inconsistent candle"):
        with running_sim(real_csv={"KRW-BTC": bad}):
            pass
    with pytest.raises(RuntimeError, match=r"(?s)exited with 2.*unknown fault switch"):
        with running_sim(faults={"ws_explode": 1}):
            pass
