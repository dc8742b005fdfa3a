"""A Binance combined-stream WebSocket server that sends trades at a steady rate (``--rate`` messages/s in all).

``python -m benchmarks.paced_stream --port P --rate 1000 [--shock-every 20]``

Why not the simulator: its live streams are cut from per-day trade blocks, and a day at 250 trades/s per market is
~20 million trades generated at once (seconds of CPU, gigabytes), so 1,000 msg/s across markets is not something it
can pace on this machine. Prices and sizes still come from the simulator's model (history trades of each symbol,
re-timed to now); frames use the simulator's own Binance template. Every ``--shock-every`` seconds one symbol's
price steps +-4 % (rotating), so the market alert rules fire and the alert path can be timed.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime, timezone

from websockets.asyncio.server import serve

from exchange_sim.binance_ws import TRADE
from exchange_sim.model import DAY_MS, Model, ModelConfig

SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT")
TICK_S = 0.01


def model_paths(n: int) -> dict[str, tuple[list[float], list[float]]]:
    day = datetime(2026, 1, 5, tzinfo=timezone.utc)
    start = int(day.timestamp() * 1000)
    model = Model(ModelConfig(seed=11, history_start_ms=start, live_epoch_ms=start + 30 * DAY_MS,
                              history_per_minute=max(20.0, n / 1440)))
    out = {}
    for symbol in SYMBOLS:
        t = model.trades("binance", symbol, start, start + DAY_MS)
        out[symbol] = (t.price[:n].tolist(), t.volume[:n].tolist())
    return out


async def main_async(port: int, rate: float, shock_every: float) -> None:
    paths = model_paths(200_000)
    next_id = {s: 1 for s in SYMBOLS}
    factor = {s: 1.0 for s in SYMBOLS}

    async def handler(ws) -> None:
        per_tick = rate * TICK_S
        due, k, started, shocks = 0.0, 0, time.monotonic(), 0
        while True:
            now = time.monotonic()
            if shock_every and now - started >= (shocks + 1) * shock_every:
                symbol = SYMBOLS[shocks % len(SYMBOLS)]
                factor[symbol] *= 1.04 if (shocks // len(SYMBOLS)) % 2 == 0 else 1 / 1.04
                shocks += 1
            due += per_tick
            n, due = int(due), due - int(due)
            ms = int(time.time() * 1000)
            frames = []
            for _ in range(n):
                symbol = SYMBOLS[k % len(SYMBOLS)]
                prices, volumes = paths[symbol]
                i = next_id[symbol]
                next_id[symbol] = i + 1
                j = i % len(prices)
                data = TRADE % (ms, symbol, i, prices[j] * factor[symbol], volumes[j], ms, "false" if i % 2 else "true")
                frames.append('{"stream":"%s@trade","data":%s}' % (symbol.lower(), data))
                k += 1
            for frame in frames:
                await ws.send(frame)
            # sleep to the next tick boundary: the rate holds even when a tick's sends took a while
            await asyncio.sleep(max(0.0, started + (k / rate) - time.monotonic()))

    async with serve(handler, "127.0.0.1", port, compression=None):
        await asyncio.Future()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paced_stream")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--shock-every", type=float, default=20.0)
    args = parser.parse_args()
    asyncio.run(main_async(args.port, args.rate, args.shock_every))


if __name__ == "__main__":
    main()
