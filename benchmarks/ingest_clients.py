"""The two baselines the sidecar is compared with, each run as its own process on the same firehose stream.

``python -m benchmarks.ingest_clients bare URL SECONDS``        the floor: a websockets receive loop that only counts
``python -m benchmarks.ingest_clients naive URL SECONDS DIR``   stdlib ``json.loads`` per message and one write per
                                                                 message (a JSON line appended and flushed to the OS)

Both use the same client library and options as the sidecar (websockets asyncio client, no compression, 4 MiB frames),
so the only difference is what is done per message. Prints one JSON object: messages, steady-state seconds and CPU
seconds, measured from the first message to the last (connection set-up and imports are left out, as for the sidecar).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect


async def _receive(url: str, seconds: float, per_message) -> dict:
    n = 0
    async with connect(url, open_timeout=10, max_size=2**22, compression=None) as ws:
        first = await ws.recv()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        per_message(first)
        end = wall0 + seconds
        check = 0
        async for frame in ws:
            per_message(frame)
            n += 1
            check += 1
            if check == 1000:  # reading the clock per message would itself be a cost the sidecar does not pay twice
                check = 0
                if time.perf_counter() >= end:
                    break
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"messages": n, "seconds": wall, "cpu_s": cpu}


def bare(url: str, seconds: float) -> dict:
    return asyncio.run(_receive(url, seconds, lambda frame: None))


def naive(url: str, seconds: float, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    fh = open(out_dir / "trades.jsonl", "w")

    def per_message(frame: str | bytes) -> None:
        msg = json.loads(frame)
        data = msg.get("data", msg)
        fh.write(json.dumps({"market": data["s"], "trade_id": data["t"], "ts": data["T"], "price": data["p"],
                             "qty": data["q"], "raw": msg}) + "\n")
        fh.flush()  # each message written on its own: the naive "durable" ingest

    try:
        return asyncio.run(_receive(url, seconds, per_message))
    finally:
        fh.close()


def main(argv: list[str]) -> int:
    what, url, seconds = argv[0], argv[1], float(argv[2])
    figures = bare(url, seconds) if what == "bare" else naive(url, seconds, Path(argv[3]))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
