"""The REST clients over real HTTP against a small local server speaking the exchanges' protocol, with scripted faults.

(The full simulator covers the happy path end to end in test_batch_pipeline.py; here each fault is set up precisely.)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from cryptoflow_dagster.clients import BannedError, BinanceClient, ExchangeError, FearGreedClient, RateLimitStop, UpbitClient
from cryptoflow_dagster.clients.ratelimit import Ticket, UpbitLimiter, WeightLimiter, backoff_delay, parse_remaining_req

Reply = tuple[int, dict[str, str], str]
DAY = datetime(2026, 1, 5, tzinfo=timezone.utc)


class Scripted:
    """A loopback HTTP server: ``routes[path](query) -> (status, headers, body)``; every request is recorded."""

    def __init__(self, routes: dict[str, Callable[[dict[str, str]], Reply]]) -> None:
        self.routes, self.requests = routes, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                outer.requests.append((time.monotonic(), url.path, query))
                status, headers, body = outer.routes[url.path](query)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body.encode())))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Scripted":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def upbit_minutes(query: dict[str, str], missing: set[int] = frozenset()) -> Reply:
    """Upbit 1m candles before ``to``, newest first, at most ``count``; minute indexes in ``missing`` had no trades."""
    to = datetime.fromisoformat(query["to"].replace("Z", "+00:00"))
    items, t = [], to - timedelta(minutes=1)
    while len(items) < int(query["count"]) and t >= DAY - timedelta(days=1):
        if int((t - DAY).total_seconds() // 60) not in missing:
            items.append({"market": query["market"], "candle_date_time_utc": t.strftime("%Y-%m-%dT%H:%M:%S"),
                          "opening_price": 100.0, "high_price": 101.0, "low_price": 99.0, "trade_price": 100.5,
                          "timestamp": int(t.timestamp() * 1000) + 59_000, "candle_acc_trade_price": 1005.0,
                          "candle_acc_trade_volume": 10.0, "unit": 1})
        t -= timedelta(minutes=1)
    return 200, {"Remaining-Req": "group=candle; min=1800; sec=9", "Content-Type": "application/json"}, json.dumps(items)


def test_upbit_pages_a_day_newest_first_with_the_to_cursor():
    missing = {0, 777, 1439}
    with Scripted({"/v1/candles/minutes/1": lambda q: upbit_minutes(q, missing)}) as server:
        client = UpbitClient(server.url)
        pages = list(client.candle_pages("KRW-BTC", "1m", DAY, DAY + timedelta(days=1)))
    starts = [item["candle_date_time_utc"] for page in pages for item in page.items]
    assert len(starts) == 1440 - len(missing) == len(set(starts))
    assert all(s.startswith("2026-01-05") for s in starts)
    cursors = [q["to"] for _, _, q in server.requests]
    # 200 per call, walking back: each call's `to` is the oldest candle the previous call returned.
    assert cursors[0] == "2026-01-06T00:00:00Z" and all(int(q["count"]) == 200 for _, _, q in server.requests)
    assert cursors[1] == pages[0].items[-1]["candle_date_time_utc"] + "Z"
    assert len(server.requests) == 8


def binance_klines(query: dict[str, str]) -> Reply:
    start, end, limit = int(query["startTime"]), int(query["endTime"]), int(query["limit"])
    items = [[t, "1.0", "1.2", "0.9", "1.1", "3.0", t + 59_999, "3.3", 7, "1.0", "1.1", "0"]
             for t in range(start, min(end + 1, start + limit * 60_000), 60_000)]
    return 200, {"X-MBX-USED-WEIGHT-1M": "10"}, json.dumps(items)


def test_binance_pages_oldest_first_by_start_time():
    with Scripted({"/api/v3/klines": binance_klines}) as server:
        client = BinanceClient(server.url)
        pages = list(client.kline_pages("BTCUSDT", "1m", DAY, DAY + timedelta(days=1)))
    opens = [k[0] for p in pages for k in p.items]
    assert len(opens) == 1440 and opens == sorted(opens)
    starts = [int(q["startTime"]) for _, _, q in server.requests]
    assert starts == [int(DAY.timestamp() * 1000), int(DAY.timestamp() * 1000) + 1000 * 60_000]
    assert all(q["limit"] == "1000" for _, _, q in server.requests)


def test_binance_trade_endpoints_by_from_id():
    def historical(q):
        first = int(q["fromId"])
        items = [{"id": i, "price": "4.0", "qty": "1.0", "quoteQty": "4.0", "time": 1499865549590 + i,
                  "isBuyerMaker": i % 2 == 0, "isBestMatch": True} for i in range(first, first + int(q["limit"]))]
        return 200, {"X-MBX-USED-WEIGHT-1M": "25"}, json.dumps(items)

    def agg(q):
        return 200, {}, json.dumps([{"a": int(q["fromId"]), "p": "0.01633102", "q": "4.70443515", "f": 27781, "l": 27781,
                                     "T": 1498793709153, "m": True, "M": True}])

    with Scripted({"/api/v3/historicalTrades": historical, "/api/v3/aggTrades": agg}) as server:
        client = BinanceClient(server.url)
        ids = [t["id"] for page in client.trades_between_ids("BTCUSDT", 100, 2600) for t in page.items]
        aggs = client.agg_trades("BTCUSDT", from_id=26129).items
    assert ids == list(range(100, 2601))
    assert aggs[0]["a"] == 26129
    assert [q["fromId"] for _, p, q in server.requests if p.endswith("historicalTrades")] == ["100", "1100", "2100"]


def test_upbit_trade_ticks_follow_the_sequential_id_cursor():
    base = 1785395043779

    def ticks(q):
        newest = int(q.get("cursor", (base + 1000) * 10_000)) // 10_000 - 1
        items = [{"market": q["market"], "timestamp": t, "trade_price": 1.0, "trade_volume": 1.0, "ask_bid": "ASK",
                  "sequential_id": t * 10_000} for t in range(newest, newest - int(q["count"]), -1)]
        return 200, {"Remaining-Req": "group=trade; min=100; sec=5"}, json.dumps(items)

    with Scripted({"/v1/trades/ticks": ticks}) as server:
        client = UpbitClient(server.url)
        got = [t["timestamp"] for p in client.trade_tick_pages("KRW-BTC", since_ms=base, days_ago=2) for t in p.items]
    assert got == list(range(base + 999, base - 1, -1))
    cursors = [q.get("cursor") for _, _, q in server.requests]
    assert cursors[0] is None and cursors[1] == str((base + 500) * 10_000)
    assert all(q["days_ago"] == "2" for _, _, q in server.requests)
    with pytest.raises(ValueError, match="days_ago"):
        client.trade_ticks("KRW-BTC", days_ago=8)


def test_429_retry_after_is_honoured_then_the_client_stops_before_a_418():
    calls = {"n": 0}

    def limited(q):
        calls["n"] += 1
        if calls["n"] == 1:
            return 429, {"Retry-After": "1"}, '{"code":-1003,"msg":"Too many requests"}'
        if calls["n"] == 2:
            return 200, {"X-MBX-USED-WEIGHT-1M": "2"}, "[]"
        return 429, {"Retry-After": "0"}, '{"code":-1003,"msg":"Too many requests"}'

    with Scripted({"/api/v3/klines": limited}) as server:
        client = BinanceClient(server.url, max_429=3)
        assert client.klines("BTCUSDT", "1m", start_ms=0).items == []
        first, second = server.requests[0][0], server.requests[1][0]
        with pytest.raises(RateLimitStop, match="3 responses 429 .* in a row.*418"):
            client.klines("BTCUSDT", "1m", start_ms=0)
    # The retry waited out Retry-After; a success reset the streak, and after three 429s in a row nothing more was sent.
    assert second - first >= 1.0
    assert len(server.requests) == 5 and client.http.stats["429"] == 4


def test_5xx_is_retried_with_backoff_and_418_and_4xx_fail_clearly():
    state = {"n": 0}

    def flaky(q):
        state["n"] += 1
        return (503, {}, "busy") if state["n"] < 3 else (200, {}, "[]")

    routes = {"/v1/candles/days": flaky, "/v1/market/all": lambda q: (418, {}, "banned"),
              "/v1/ticker": lambda q: (400, {}, '{"error":{"name":"404","message":"Code not found"}}')}
    with Scripted(routes) as server:
        client = UpbitClient(server.url)
        assert client.candles("KRW-BTC", "1d", to=DAY).items == []
        assert client.http.stats["retries"] == 2
        with pytest.raises(BannedError, match="418"):
            client.markets()
        with pytest.raises(ExchangeError, match="Code not found"):
            client.tickers(["KRW-NOPE"])
    with pytest.raises(ValueError):
        UpbitClient("http://127.0.0.1:9").candles("KRW-BTC", "7m")


def test_upbit_holds_a_group_when_remaining_req_reaches_zero_and_stays_under_10_per_second():
    def counting(q):
        left = max(0, 3 - sum(1 for _, p, _ in server.requests if p.endswith("days")) % 4)
        return 200, {"Remaining-Req": f"group=candle; min=1; sec={left}"}, "[]"

    with Scripted({"/v1/candles/days": counting}) as server:
        client = UpbitClient(server.url)
        for _ in range(10):
            client.candles("KRW-BTC", "1d", to=DAY, count=1)
    times = [t for t, _, _ in server.requests]
    # Seen by the server: after each `sec=0` the group waits a second, so no window holds more than the 4 it allowed
    # (the client's own pacing alone would have let 9 through).
    assert max(sum(1 for u in times if t <= u < t + 1.0) for t in times) <= 4


def test_fear_greed_days_and_error_payload():
    def fng(q):
        data = [{"value": str(50 + i), "value_classification": "Neutral", "timestamp": str(int((DAY - timedelta(days=i)).timestamp()))}
                for i in range(int(q["limit"]))]
        return 200, {}, json.dumps({"name": "Fear and Greed Index", "data": data, "metadata": {"error": None}})

    with Scripted({"/fng/": fng}) as server:
        page = FearGreedClient(server.url).days(DAY.date() - timedelta(days=2), DAY.date(), today=DAY.date())
    assert [i["value"] for i in page.items] == ["50", "51", "52"] and page.params["limit"] == 4  # (today - first) + 2
    with Scripted({"/fng/": lambda q: (200, {}, '{"data":[],"metadata":{"error":"limit invalid"}}')}) as server:
        with pytest.raises(ExchangeError, match="limit invalid"):
            FearGreedClient(server.url).history(5)


def test_limiter_units_parse_and_pace():
    assert parse_remaining_req("group=candle; min=1800; sec=9") == ("candle", 9)
    assert parse_remaining_req("garbage") is None
    assert 0.125 <= backoff_delay(1) <= 0.25 and backoff_delay(20) <= 10.0
    now = [1000.0]
    upbit = UpbitLimiter(10, clock=lambda: now[0])
    probe = upbit.try_acquire("candle")
    assert isinstance(probe, Ticket) and not isinstance(upbit.try_acquire("candle"), Ticket)  # one probe until answered
    now[0] += 0.02
    upbit.answered(probe, 200, "group=candle; min=1800; sec=9")
    assert upbit.capacity("candle") == 10  # the server's whole allowance, not one below it
    burst = [upbit.try_acquire("candle") for _ in range(9)]
    assert all(isinstance(t, Ticket) for t in burst)
    assert not isinstance(upbit.try_acquire("candle"), Ticket) and isinstance(upbit.try_acquire("trade"), Ticket)  # groups apart
    for ticket in burst:
        now[0] += 0.01
        upbit.answered(ticket, 200, "group=candle; min=1800; sec=0")
    # A slot frees one second after its request's *answer* (the latest the server can have counted it), never sooner.
    now[0] = probe.answered + 0.999
    assert upbit.try_acquire("candle") == pytest.approx(0.001)
    now[0] = probe.answered + 1.0
    assert isinstance(upbit.try_acquire("candle"), Ticket) and not isinstance(upbit.try_acquire("candle"), Ticket)

    slower = UpbitLimiter(10, clock=lambda: now[0])
    slower.answered(slower.acquire("candle"), 200, "group=candle; min=1800; sec=2")  # a slower server: its word caps us
    assert slower.capacity("candle") == 3
    assert [isinstance(slower.try_acquire("candle"), Ticket) for _ in range(3)] == [True, True, False]

    weight = WeightLimiter(6000, safety=0.8, clock=lambda: now[0])
    now[0] = 60 * 1000 + 59.0  # the minute's last second: all of the 4800 budget is released by now
    weight.answered(weight.acquire(2), 200, "4790")
    assert isinstance(weight.try_acquire(2), Ticket) and weight.try_acquire(25) > 0  # 4794 + 25 would pass 4800
    now[0] += 1
    assert isinstance(weight.try_acquire(25), Ticket)  # a new minute
