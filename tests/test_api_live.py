"""The live push (WS /v1/live) against a real `cryptoflow serve` process and commits from this process (another
process than the API's): trades, closed 1-minute bars and alerts of the subscribed markets arrive once each, and a
client that stops reading is dropped with a reason while the others carry on."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime, timedelta, timezone

import httpx
import polars as pl
import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.sync.client import connect
from websockets.uri import parse_uri

from api_lake import commit, trades
from cryptoflow_dagster import lake
from cryptoflow_dagster.alerting import outbox
from cryptoflow_dagster.alerting.model import Alert
from cryptoflow_serving.testing import running_api
from lake_writer import lake_writer


@pytest.fixture
def api(settings):
    with lake.session(settings) as con:
        lake.ensure_schema(con)
    with running_api({"CRYPTOFLOW_HOME": str(settings.home)}, "--poll", "0.2") as handle:
        yield handle


def subscribe(ws, markets, channels=("trades", "bars", "alerts")) -> dict:
    ws.send(json.dumps({"subscribe": {"markets": list(markets), "channels": list(channels)}}))
    return json.loads(ws.recv(timeout=10))


def collect(ws, done, timeout_s: float = 30.0) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while not done(got):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; got {len(got)}: {got[-3:]}"
        try:
            got.append(json.loads(ws.recv(timeout=left)))
        except TimeoutError:
            continue
    return got


def test_trades_closed_bars_and_alerts_of_the_subscribed_market_arrive_once(api, settings):
    with connect(api.ws_url) as ws:
        bad = subscribe(ws, ["upbit:BTCUSDT"])
        assert bad["type"] == "error" and "invalid Upbit market code" in bad["message"]
        ok = subscribe(ws, ["upbit:KRW-BTC"])  # the connection stayed open after the bad one
        assert ok["type"] == "subscribed" and ok["markets"] == ["upbit:KRW-BTC"]

        minute0 = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=2)
        mine = trades("upbit", "KRW-BTC", minute0, 30, 4.0, 160_000_000.0, seed=1)
        other = trades("binance", "BTCUSDT", minute0, 30, 4.0, 115_000.0, seed=2)
        with lake.session(settings) as con:
            commit(con, pl.concat([mine, other]))
            outbox.record(con, [Alert(rule="price_move", dedupe_key=f"{m}-1", message=f"moved {m}", exchange=ex,
                                      market=m, triggered_at=datetime.now(timezone.utc), value=5.0, threshold=3.0)
                                for ex, m in (("upbit", "KRW-BTC"), ("binance", "BTCUSDT"))])

        def done(got):
            kinds = [g["type"] for g in got]
            return kinds.count("trade") >= 30 and "alert" in kinds and any(
                g["type"] == "bar" and g["ts"] == minute0.isoformat() for g in got)

        got = collect(ws, done)

    pushed = [g for g in got if g["type"] == "trade"]
    assert {(g["exchange"], g["market"]) for g in got if g["type"] != "subscribed"} == {("upbit", "KRW-BTC")}
    assert [g["trade_id"] for g in pushed] == mine["trade_id"].to_list()  # each once, in trade order
    assert [g["price"] for g in pushed] == pytest.approx(mine["price"].to_list(), rel=1e-15)
    bar = next(g for g in got if g["type"] == "bar" and g["ts"] == minute0.isoformat())
    first = mine.filter(pl.col("ts") < minute0 + timedelta(minutes=1))
    assert (bar["open"], bar["close"], bar["trade_count"]) == (first["price"][0], first["price"][-1], first.height)
    assert bar["high"] == first["price"].max() and bar["volume"] == pytest.approx(first["volume"].sum())
    # the minute still open when the trades were committed is pushed only once closed (a later trade or 5 s after)
    assert all(g["ts"] in (minute0.isoformat(), (minute0 + timedelta(minutes=1)).isoformat())
               for g in got if g["type"] == "bar")
    alert = next(g for g in got if g["type"] == "alert")
    assert alert["message"] == "moved KRW-BTC" and alert["status"] == "pending"
    # "now" answers come from the feed's memory, as of the snapshot that the pushed trades came from (or later)
    with httpx.Client(base_url=api.url) as c:
        stats = c.get("/v1/stats/24h", params={"market": "KRW-BTC"}).json()
        price = c.get("/v1/markets", params={"market": "KRW-BTC"}).json()
    assert stats["snapshot"] >= pushed[-1]["snapshot"] and price["snapshot"] >= pushed[-1]["snapshot"]
    assert stats["data"][0]["as_of"] == mine["ts"][-1].isoformat() and stats["data"][0]["trade_count_24h"] == 30
    assert price["data"][0]["last_trade_id"] == mine["trade_id"][-1]


def test_every_commit_of_a_concurrent_writer_reaches_a_client_exactly_once(api, settings):
    batches, rows = 20, 100
    with connect(api.ws_url) as ws:
        assert subscribe(ws, ["upbit:KRW-ETH"], ["trades"])["type"] == "subscribed"
        with lake_writer(batches, rows, "upbit", "KRW-ETH") as writer:
            got = collect(ws, lambda g: len(g) >= batches * rows)
            assert writer.stdout.readline().strip() == "done"
    ids = [g["trade_id"] for g in got]
    assert sorted(ids) == list(range(batches * rows))  # none lost, none twice
    snapshots = [g["snapshot"] for g in got]
    assert snapshots == sorted(snapshots)
    # every commit's rows arrive together, at the one snapshot that committed them (never half a commit)
    per_snapshot = pl.DataFrame({"snapshot": snapshots, "batch": [i // rows for i in ids]})
    assert per_snapshot.group_by("batch").agg(pl.col("snapshot").n_unique())["snapshot"].max() == 1
    with httpx.Client(base_url=api.url) as c:
        price = c.get("/v1/markets", params={"market": "KRW-ETH"}).json()["data"]
    assert price[0]["last_trade_id"] == batches * rows - 1


class NonReadingClient:
    """A WebSocket client that subscribes, then does not read: a small receive buffer, nothing taken off the socket."""

    def __init__(self, url: str, subscribe_to: dict):
        self.protocol = ClientProtocol(parse_uri(url))
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((parse_uri(url).host, parse_uri(url).port))
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        while self.protocol.state is State.CONNECTING:
            self.protocol.receive_data(self.sock.recv(4096))
        assert self.protocol.state is State.OPEN, self.protocol.handshake_exc
        self.protocol.send_text(json.dumps(subscribe_to).encode())
        self._flush()

    def _flush(self) -> None:
        self.sock.sendall(b"".join(self.protocol.data_to_send()))

    def read_until_closed(self, timeout_s: float) -> tuple[int, str, int]:
        """Start reading: (close code, close reason, data frames received before it)."""
        self.sock.settimeout(timeout_s)
        frames = 0
        while self.protocol.close_rcvd is None:
            data = self.sock.recv(1 << 16)
            if not data:
                break
            self.protocol.receive_data(data)
            frames += sum(1 for e in self.protocol.events_received() if getattr(e, "opcode", None) is Opcode.TEXT)
        close = self.protocol.close_rcvd
        return (close.code, close.reason, frames) if close else (None, "", frames)

    def close(self) -> None:
        self.sock.close()


def test_a_client_that_does_not_read_is_dropped_with_a_reason_and_the_others_carry_on(settings):
    with lake.session(settings) as con:
        lake.ensure_schema(con)
    queue = 400
    env = {"CRYPTOFLOW_HOME": str(settings.home)}
    with running_api(env, "--poll", "0.2", "--queue-size", str(queue)) as api, \
            connect(api.ws_url) as reader, httpx.Client(base_url=api.url) as http:
        stalled = NonReadingClient(api.ws_url, {"subscribe": {"markets": ["*"], "channels": ["trades"]}})
        try:
            assert subscribe(reader, ["*"], ["trades"])["type"] == "subscribed"
            received: list[dict] = []
            keep_reading = threading.Event()
            keep_reading.set()

            closed: list[Exception] = []

            def read_all() -> None:  # a client that keeps up, on its own thread
                while keep_reading.is_set():
                    try:
                        received.append(json.loads(reader.recv(timeout=0.2)))
                    except TimeoutError:
                        continue
                    except ConnectionClosed as exc:
                        closed.append(exc)
                        return

            thread = threading.Thread(target=read_all)
            thread.start()
            sent = 0
            now = datetime.now(timezone.utc)
            try:
                with lake.session(settings) as con:
                    # commits of 500 trades, each once the reading client has all before it: it keeps up, and only
                    # the stalled client's buffers (the kernel's, then its queue) fill
                    while http.get("/v1/server").json()["live"]["dropped_clients"] == 0:
                        assert sent < 60_000, "the stalled client was never dropped"
                        commit(con, trades("upbit", "KRW-SOL", now, 500, 0.001, 300_000.0, seed=sent,
                                           first_id=sent), gold=False)
                        sent += 500
                        deadline = time.monotonic() + 20
                        while len(received) < sent and time.monotonic() < deadline and not closed:
                            time.sleep(0.02)
                stats = http.get("/v1/server").json()["live"]
                assert stats["dropped_clients"] == 1 and stats["subscribers"] == 1  # the reading client is still on
                assert stats["max_queue_depth"] <= queue  # what the server held for the stalled client stayed bounded

                code, reason, frames = stalled.read_until_closed(timeout_s=15)
                assert code == 4008 and reason.startswith("slow consumer"), (code, reason)
                assert 0 < frames < sent
                deadline = time.monotonic() + 30
                while len(received) < sent and time.monotonic() < deadline:
                    time.sleep(0.1)
            finally:
                keep_reading.clear()
                thread.join()
            assert not closed, closed
            assert sorted(g["trade_id"] for g in received) == list(range(sent))  # the reading client lost nothing
        finally:
            stalled.close()


def test_a_cached_page_is_served_until_a_commit_touches_its_rows(api, settings):
    """Pages are kept while the rows behind them do not change: a commit elsewhere keeps them, a commit into their
    range (a late trade two hours back, older than anything the live push sends) drops them, and the next answer
    carries the new rows."""
    t0 = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(hours=2)
    with lake.session(settings) as con:
        commit(con, trades("upbit", "KRW-BTC", t0, 20, 30.0, 160_000_000.0, seed=3))  # 10 minutes of bars

    def feed_at_least(snapshot: int) -> None:
        deadline = time.monotonic() + 20
        while (http.get("/v1/server").json()["live"]["snapshot"] or 0) < snapshot:
            assert time.monotonic() < deadline, "the feed did not move on"
            time.sleep(0.05)

    def lake_snapshot() -> int:
        with lake.session(settings, read_only=True) as con:
            return con.execute("SELECT id FROM current_snapshot()").fetchone()[0]

    params = {"exchange": "upbit", "market": "KRW-BTC", "start": t0.isoformat(),
              "end": (t0 + timedelta(minutes=10)).isoformat()}
    with httpx.Client(base_url=api.url) as http:
        feed_at_least(lake_snapshot())
        first = http.get("/v1/bars/1m", params=params)
        again = http.get("/v1/bars/1m", params=params)
        assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
        assert again.json() == first.json() and first.json()["count"] == 10

        with lake.session(settings) as con:  # another market, another time: the page stays
            commit(con, trades("binance", "BTCUSDT", datetime.now(timezone.utc), 5, 1.0, 115_000.0, seed=4))
        feed_at_least(lake_snapshot())
        kept = http.get("/v1/bars/1m", params=params)
        assert kept.headers["x-cache"] == "hit" and kept.json() == first.json()

        late = trades("upbit", "KRW-BTC", t0 + timedelta(seconds=75), 1, 1.0, 1.0, seed=5, first_id=10_000)
        with lake.session(settings) as con:  # a late trade in the page's second minute
            commit(con, late)
        feed_at_least(lake_snapshot())
        fresh = http.get("/v1/bars/1m", params=params)
        assert fresh.headers["x-cache"] == "miss"
        counts = [b["trade_count"] for b in fresh.json()["data"]]
        assert counts == [2, 3] + [2] * 8 and fresh.json()["snapshot"] > first.json()["snapshot"]
        assert fresh.json()["data"][1]["low"] == pytest.approx(late["price"][0])
        stats = http.get("/v1/server").json()["cache"]
        assert stats["hits"] >= 2 and stats["dropped"] >= 1
