"""The two baselines the sidecar is compared with, each run as its own process on the same firehose stream.

``python -m benchmarks.ingest_clients bare URL SECONDS``        the floor: a websockets receive loop that only counts
``python -m benchmarks.ingest_clients naive URL SECONDS DIR``   stdlib ``json.loads`` per message and one write per
                                                                 message (a JSON line appended and flushed to the OS)
``python -m benchmarks.ingest_clients durable URL SECONDS DIR`` the durable floor: the bare loop plus what the sidecar
                                                                 cannot skip, keeping (frame, receive time) and writing
                                                                 them from a thread every 5,000 frames as an atomic
                                                                 Parquet file (layout.write_atomically, the landing
                                                                 files' settings); no verdict, market or trade id

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


def _connect(url: str):
    """The sidecar's client options: every client here connects the same way."""
    return connect(url, open_timeout=10, max_size=2**22, compression=None)


async def _receive(url: str, seconds: float, per_message) -> dict:
    n = 0
    async with _connect(url) as ws:
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


def durable(url: str, seconds: float, out_dir: Path) -> dict:
    """The sidecar's receive loop with nothing but durability behind it: frames kept as bytes (``recv(decode=False)``)
    with their receive time, handed every 5,000 frames to a writer thread that lands them as an atomic Parquet file."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from cryptoflow_core.landing_files import write_atomically

    pool = ThreadPoolExecutor(1)  # the sidecar's flush thread
    written = 0

    def write(frames: list[bytes], times: list[int]) -> None:
        nonlocal written
        written += 1
        table = pa.table({"receive_time_us": pc.divide(pa.array(times, pa.int64()), 1000),
                          "raw": pa.array(frames, pa.binary())})
        write_atomically(out_dir / f"{written:08d}.parquet", lambda tmp: pq.write_table(
            table, tmp, compression="snappy", use_dictionary=["receive_time_us"], write_statistics=["receive_time_us"]))

    async def receive() -> dict:
        async with _connect(url) as ws:
            recv, time_ns = ws.recv, time.time_ns
            frames, times = [await recv(decode=False)], [time_ns()]
            wall0, cpu0 = time.perf_counter(), time.process_time()
            end, n = wall0 + seconds, 0
            while True:
                frames.append(await recv(decode=False))
                times.append(time_ns())
                n += 1
                if len(frames) >= 5_000:
                    pool.submit(write, frames, times)
                    frames, times = [], []
                    if time.perf_counter() >= end:
                        break
            figures = {"messages": n, "seconds": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0}
        pool.submit(write, frames, times)
        return figures

    figures = asyncio.run(receive())
    pool.shutdown(wait=True)
    landed = sum(pq.read_metadata(f).num_rows for f in out_dir.glob("*.parquet"))
    if landed != figures["messages"] + 1:  # + the first frame, received before the clock started
        raise RuntimeError(f"durable client landed {landed} of {figures['messages'] + 1} frames")
    return figures


def main(argv: list[str]) -> int:
    what, url, seconds = argv[0], argv[1], float(argv[2])
    if what == "bare":
        figures = bare(url, seconds)
    else:
        out_dir = Path(argv[3])
        out_dir.mkdir(parents=True, exist_ok=True)
        figures = (naive if what == "naive" else durable)(url, seconds, out_dir)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
