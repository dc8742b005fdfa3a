"""Firehose rate of the exchange simulator: messages/s one WebSocket connection receives in firehose mode.

``python -m benchmarks.sim_firehose [--seconds 5] [--out results.json]``. The reader counts frames off a raw socket
(header parsing only) so the client's own JSON work does not cap the figure; the simulator runs in a subprocess.
The sidecar's target is 50,000 msg/s.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import time

from exchange_sim.testing import running_sim

SCENARIOS = {
    "binance_btcusdt_trade": ("/ws/btcusdt@trade", None),
    "binance_4_symbols_combined": ("/stream?streams=btcusdt@trade/ethusdt@trade/xrpusdt@trade/solusdt@trade", None),
    "upbit_5_codes_trade": ("/websocket/v1", [{"ticket": "bench"}, {"type": "trade", "codes": [
        "KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-USDT"]}, {"format": "SIMPLE"}]),
}


def _frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + masked


def count_frames(port: int, path: str, subscribe: list | None, seconds: float) -> float:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(4096)
    if not buf.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {buf[:200]!r}")
    if subscribe is not None:
        sock.sendall(_frame(json.dumps(subscribe).encode()))
    data, frames = buf.split(b"\r\n\r\n", 1)[1], 0
    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        data += sock.recv(1 << 20)
        pos = 0
        while len(data) - pos >= 2:
            size, header = data[pos + 1] & 0x7F, 2
            if size == 126:
                if len(data) - pos < 4:
                    break
                size, header = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
            elif size == 127:
                if len(data) - pos < 10:
                    break
                size, header = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
            if len(data) - pos < header + size:
                break
            pos += header + size
            frames += 1
        data = data[pos:]
    elapsed = time.monotonic() - start
    sock.close()
    return frames / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    results: dict[str, object] = {"benchmark": "sim_firehose", "seconds": args.seconds, "cpus": os.cpu_count(),
                                  "load_avg_1m": os.getloadavg()[0]}
    with running_sim(firehose=True, history_days=2) as sim:
        for name, (path, subscribe) in SCENARIOS.items():
            results[name + "_msg_per_s"] = round(count_frames(sim.port, path, subscribe, args.seconds))
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
