"""Another process writing to the lake: ``batches`` commits of ``rows`` trades each into silver.trades, started when
told (a line on stdin), so a test can run a reader or a restore against real concurrent commits."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

_SCRIPT = r"""
import sys
from datetime import datetime, timezone
import polars as pl
from cryptoflow_dagster import lake
batches, rows, exchange, market = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
con = lake.connect()
print("ready", flush=True)
sys.stdin.readline()
for b in range(batches):
    now = datetime.now(timezone.utc)
    frame = pl.DataFrame({"exchange": [exchange] * rows, "market": [market] * rows,
        "trade_id": [b * rows + i for i in range(rows)], "ts": [now] * rows, "price": [1.0] * rows,
        "volume": [1.0] * rows, "quote_volume": [1.0] * rows, "side": ["sell"] * rows, "ingest_time": [now] * rows})
    lake.write(con, lambda c: lake.insert(c, "silver.trades", frame))
print("done", flush=True)
"""


@contextlib.contextmanager
def lake_writer(batches: int, rows: int, exchange: str, market: str) -> Iterator[subprocess.Popen]:
    """The writer process, started: it prints "done" when its last commit is in. Killed and its pipes closed on exit."""
    writer = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, str(batches), str(rows), exchange, market],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready = writer.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"lake writer did not start: {writer.stderr.read()}")
        writer.stdin.write("go\n")
        writer.stdin.flush()
        yield writer
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait(60)
        for pipe in (writer.stdin, writer.stdout, writer.stderr):
            pipe.close()
