"""A sidecar stopped while a busy stream is mid-flush lands every message it counted (found by the ingest benchmark)."""

from __future__ import annotations

import asyncio

import orjson
import pyarrow.parquet as pq
from websockets.asyncio.server import serve

from cryptoflow_core.settings import load_settings
from cryptoflow_core.landing_files import list_files
from streaming_sensor.sidecar import Sidecar


def _trade(i: int) -> bytes:
    return orjson.dumps({"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1_700_000_000_000 + i, "s": "BTCUSDT",
                         "t": i, "p": "37000.01", "q": "0.001", "T": 1_700_000_000_000 + i, "m": i % 2 == 0, "M": True}})


def test_stop_during_a_flush_still_lands_every_counted_message(cryptoflow_home, monkeypatch):
    async def firehose(ws):
        i = 0
        try:
            while True:  # as fast as the client reads, like the simulator's firehose: flushes overlap the stop
                i += 1
                await ws.send(_trade(i))
        except Exception:
            return

    async def scenario():
        async with serve(firehose, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            monkeypatch.setenv("CRYPTOFLOW_BINANCE_WS_URL", f"ws://127.0.0.1:{port}")
            monkeypatch.setenv("CRYPTOFLOW_BINANCE_SYMBOLS", "BTCUSDT")
            monkeypatch.setenv("CRYPTOFLOW_FLUSH_INTERVAL_S", "0.05")  # nearly always flushing
            monkeypatch.setenv("CRYPTOFLOW_FLUSH_MAX_MESSAGES", "200")
            sidecar = Sidecar(load_settings(), ("binance",))
            await sidecar.run(duration_s=1.5)
            return sidecar

    sidecar = asyncio.run(scenario())
    settings = load_settings()
    counted = orjson.loads(settings.heartbeat_path.read_bytes())["counters"]["messages"]
    files = list_files(settings.landing_dir, channels=("trade",))
    landed = [tid for f in files for tid in pq.read_table(f.path, columns=["trade_id"]).column("trade_id").to_pylist()]
    assert counted > 1000  # the stream was busy
    assert len(landed) == counted == sidecar.batcher.rows_written  # nothing received is left in memory at exit
    assert sorted(landed) == list(range(1, counted + 1))  # in order, no gaps, no duplicates
