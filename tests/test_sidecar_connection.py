"""Connection handling against a local WebSocket server on loopback: watchdog, keep-alive, reconnects, gap candidates."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.server import serve

from streaming_sensor.batches import MicroBatcher
from streaming_sensor.connection import FeedConnection, backoff_delay
from streaming_sensor.feeds import BinanceFeed, UpbitFeed
from cryptoflow_core.heartbeat import StreamState, read_gap_candidates


def binance_connection(tmp_path, port: int, flush_max: int, **batcher_options) -> tuple[FeedConnection, MicroBatcher, StreamState]:
    """A BTCUSDT connection to a loopback server whose flush requests do nothing: the test decides when rows land."""
    feed = BinanceFeed(f"ws://127.0.0.1:{port}", ("BTCUSDT",))
    batcher = MicroBatcher(tmp_path / "landing", "0123456789abcdef", tmp_path / "spill", **batcher_options)
    state = StreamState()
    return FeedConnection(feed, batcher, state, tmp_path / "landing", lambda: None, flush_max), batcher, state


def test_backoff_is_exponential_capped_and_jittered():
    low = [backoff_delay(a, rand=lambda: 0.0) for a in range(12)]
    high = [backoff_delay(a, rand=lambda: 1.0) for a in range(12)]
    assert low[0] == 0.125 and high[0] == 0.25 and high[3] == 2.0
    assert max(high) == 30.0 and high[-1] == 30.0  # capped: a feed keeps retrying, never gives up, never waits forever
    assert all(lo < hi for lo, hi in zip(low, high))  # jitter spreads reconnects
    assert backoff_delay(10_000) <= 30.0


class QuickUpbit(UpbitFeed):
    keepalive_interval_s = 0.3


def test_silent_connection_is_replaced_keepalive_is_sent_and_the_window_becomes_a_gap(tmp_path):
    received: list[str] = []
    connections: list[int] = []

    async def handler(ws):
        connections.append(1)
        if len(connections) == 2:  # the second connection delivers one trade, then goes quiet too
            await ws.send(b'{"type":"trade","code":"KRW-BTC","trade_timestamp":1700000000000,"trade_price":1.0,'
                          b'"trade_volume":1.0,"ask_bid":"BID","sequential_id":17000000000000000}')
        async for message in ws:
            received.append(message)

    async def scenario() -> StreamState:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            feed = QuickUpbit(f"ws://127.0.0.1:{port}/websocket/v1", ("KRW-BTC",))
            batcher = MicroBatcher(tmp_path / "landing", "0123456789abcdef", tmp_path / "spill")
            state = StreamState()
            conn = FeedConnection(feed, batcher, state, tmp_path / "landing", lambda: None, 5000, silence_timeout_s=1.0)
            stop = asyncio.Event()
            task = asyncio.create_task(conn.run(stop))
            await asyncio.sleep(4.0)
            stop.set()
            await asyncio.wait_for(task, 10)
            batcher.flush()
            return state

    state = asyncio.run(scenario())
    assert len(connections) >= 2 and state.reconnects >= 1  # the watchdog closed the silent link and a new one came up
    assert "PING" in received  # Upbit keep-alive
    assert any(m.startswith("[") and '"type":"trade"' in m for m in received)  # subscription
    assert state.messages == 1 and state.state == "stopped"
    (gap,) = read_gap_candidates(tmp_path / "landing")  # silence, reconnect, first trade: a window to repair
    assert gap["exchange"] == "upbit" and gap["markets"] == ["KRW-BTC"] and gap["start"] < gap["end"]


def test_downtime_gap_starts_at_the_earliest_unsafe_moment_of_the_last_heartbeat(tmp_path):
    from datetime import datetime, timezone

    from streaming_sensor.sidecar import downtime_start

    def iso(s: float) -> str:
        return datetime.fromtimestamp(s, timezone.utc).isoformat()

    path = tmp_path / "_heartbeat.json"
    assert downtime_start(path, "upbit") is None  # no sidecar ran here before: nothing was missed
    path.write_text(json.dumps({
        "started_at": iso(1000.0), "flushed_through": iso(2000.0),
        "streams": {"upbit": {"gap_since": iso(1990.0), "lag_s": 2.5}, "binance": {"gap_since": None, "lag_s": 0.5}},
    }))
    # an unwritten disconnect window began before the last flush; trades were arriving 2.5 s late
    assert downtime_start(path, "upbit") == 1990.0 - 2.5
    assert downtime_start(path, "binance") == 2000.0 - 0.5  # killed: what came after the last flush was lost


def test_shutdown_notice_reconnects_at_once_and_control_frames_are_not_landed(tmp_path):
    """Frames are only kept by the receive loop (ADR 0010): the serverShutdown notice must still be acted on as it
    arrives, acks and pongs must still not land, and the counters must still match the landed rows."""
    def trade(i: int) -> str:
        return json.dumps({"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1, "s": "BTCUSDT", "t": i, "p": "1.5",
                                                                 "q": "2", "T": 1_700_000_000_000 + i, "m": True, "M": True}},
                          separators=(",", ":"))

    connections: list[float] = []

    async def handler(ws):
        connections.append(asyncio.get_running_loop().time())
        n = len(connections)
        await ws.send('{"result":null,"id":1}')
        for i in range(1, 101):
            await ws.send(trade(n * 1000 + i))
        await ws.send('{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT"}}')  # a dead letter
        if n == 1:
            await ws.send('{"stream":"btcusdt@trade","data":{"e":"serverShutdown","E":1}}')
        await ws.wait_closed()  # the server never closes: only the notice can make the client reconnect

    async def scenario() -> tuple[StreamState, MicroBatcher]:
        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            conn, batcher, state = binance_connection(tmp_path, server.sockets[0].getsockname()[1], 5000)
            stop = asyncio.Event()
            task = asyncio.create_task(conn.run(stop))
            for _ in range(100):
                await asyncio.sleep(0.05)
                if len(connections) == 2 and state.state == "connected":
                    break
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.wait_for(task, 10)
            return state, batcher

    import pyarrow.parquet as pq

    state, batcher = asyncio.run(scenario())
    assert len(connections) == 2 and connections[1] - connections[0] < 2.0  # reconnected on the notice, not a timeout
    rows = [r for f in batcher.flush() for r in pq.read_table(f).to_pylist()]
    trades = sorted(r["trade_id"] for r in rows if r["error"] is None)
    assert trades == [*range(1001, 1101), *range(2001, 2101)]
    dead = [r for r in rows if r["error"] is not None]
    assert len(dead) == 2 and all("missing, non-integer or out-of-range field: t" in r["error"] for r in dead)
    assert not any(b'"result"' in r["raw"] or b"serverShutdown" in r["raw"] for r in rows)  # control frames stay out
    assert state.messages == len(rows) == 202 and state.malformed == 2
    assert len({r["session_id"] for r in rows}) == 2  # each connection's rows carry its own session id


def test_frames_held_by_a_stalled_flusher_are_spilled_to_disk_and_all_land(tmp_path):
    """No flush ever runs here (request_flush does nothing): the receive loop must bound what it holds by resolving its
    frames itself once ``max_buffered`` are waiting, and the batcher spills them; nothing is lost."""
    async def handler(ws):
        for i in range(1, 3001):
            await ws.send(json.dumps({"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1, "s": "BTCUSDT", "t": i,
                                      "p": "1.5", "q": "2", "T": 1_700_000_000_000, "m": False, "M": True}},
                                     separators=(",", ":")))
        await ws.wait_closed()

    async def scenario() -> tuple[StreamState, MicroBatcher, int]:
        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            conn, batcher, state = binance_connection(tmp_path, server.sockets[0].getsockname()[1], 100, max_buffered=500)
            stop = asyncio.Event()
            task = asyncio.create_task(conn.run(stop))
            for _ in range(200):
                await asyncio.sleep(0.05)
                if batcher.rows_spilled >= 2500:
                    break
            held = len(conn._pending.frames) + batcher.buffered()  # what sits in memory while still connected
            stop.set()
            await asyncio.wait_for(task, 10)
            return state, batcher, held

    import pyarrow.parquet as pq

    state, batcher, held = asyncio.run(scenario())
    assert batcher.rows_spilled >= 2500 and held < 1000  # memory stayed bounded
    ids = sorted(t for f in batcher.flush() for t in pq.read_table(f, columns=["trade_id"]).column(0).to_pylist())
    assert ids == list(range(1, 3001)) and state.messages == 3000
