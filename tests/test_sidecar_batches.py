"""The micro-batch writer: atomic landing files a concurrent reader can always read whole, and the disk spill."""

from __future__ import annotations

import threading

import pyarrow.parquet as pq
import pytest

from cryptoflow_core import landing_files
from streaming_sensor.batches import MicroBatcher


def _add(batcher: MicroBatcher, i: int, exchange: str = "binance") -> int:
    raw = b'{"stream":"btcusdt@trade","data":{"t":%d}}' % i
    return batcher.add(exchange, "trade", "BTCUSDT", i, 1_700_000_000_000 + i, 1_700_000_000_000_000 + i, "s1", raw, None)


def test_reader_polling_landing_never_sees_a_partial_file(tmp_path):
    root = tmp_path / "landing"
    batcher = MicroBatcher(root, "0123456789abcdef", tmp_path / "spill")
    done = threading.Event()
    seen: dict[str, int] = {}
    errors: list[str] = []

    def reader() -> None:
        while True:
            finished = done.is_set()
            for f in landing_files.list_files(root):
                if f.name in seen:
                    continue
                try:
                    seen[f.name] = pq.read_table(f.path).num_rows
                except Exception as exc:  # a half-written file would fail to parse here
                    errors.append(f"{f.name}: {exc}")
            if finished:
                return

    thread = threading.Thread(target=reader)
    thread.start()
    total = 0
    for batch in range(60):
        for _ in range(2_000):
            _add(batcher, total)
            total += 1
        batcher.flush()
    done.set()
    thread.join()
    assert errors == []
    assert len(seen) == 60 and sum(seen.values()) == total
    assert not list(root.rglob("*.tmp"))


def test_landing_rows_keep_the_frame_verbatim_and_the_trace_columns(tmp_path):
    batcher = MicroBatcher(tmp_path / "landing", "0123456789abcdef", tmp_path / "spill")
    raw = b'{"type":"trade","code":"KRW-BTC","x":"\xed\x95\x9c"}'
    batcher.add("upbit", "trade", "KRW-BTC", 7, 1000, 2000, "sessionA", raw, None)
    batcher.add("upbit", "trade", None, None, None, 2001, "sessionA", b"\xff\x00junk", "invalid JSON")
    (path,) = batcher.flush()
    landed = landing_files.parse(path, tmp_path / "landing")
    assert landed is not None and (landed.exchange, landed.channel) == ("upbit", "trade")
    rows = pq.read_table(path).to_pylist()
    assert rows[0] == {"exchange": "upbit", "market": "KRW-BTC", "trade_id": 7, "event_time_ms": 1000,
                       "receive_time_us": 2000, "session_id": "sessionA", "raw": raw, "error": None}
    assert rows[1]["raw"] == b"\xff\x00junk" and rows[1]["error"] == "invalid JSON"


def test_backpressure_spills_to_disk_and_loses_nothing(tmp_path):
    spill = tmp_path / "spill"
    batcher = MicroBatcher(tmp_path / "landing", "0123456789abcdef", spill, max_buffered=1_000)
    for i in range(4_500):  # no flush meanwhile: the writer is "behind"
        _add(batcher, i)
    assert batcher.buffered() < 1_000  # memory stays bounded
    assert batcher.rows_spilled == 4_000 and list(spill.glob("*.spill"))
    files = batcher.flush()
    ids = sorted(i for f in files for i in pq.read_table(f, columns=["trade_id"]).column(0).to_pylist())
    assert ids == list(range(4_500))
    assert not list(spill.iterdir())  # spill files are removed only after their rows landed


def test_spill_left_by_a_killed_sidecar_is_drained_by_the_next_one(tmp_path):
    spill = tmp_path / "spill"
    first = MicroBatcher(tmp_path / "landing", "aaaaaaaaaaaaaaaa", spill, max_buffered=100)
    for i in range(250):
        _add(first, i)
    # the process dies here: 200 rows are in the spill file, 50 in memory are lost (gap repair's job)
    second = MicroBatcher(tmp_path / "landing", "bbbbbbbbbbbbbbbb", spill, max_buffered=100)
    files = second.flush()
    ids = sorted(i for f in files for i in pq.read_table(f, columns=["trade_id"]).column(0).to_pylist())
    assert ids == list(range(200))


def test_a_failed_write_keeps_the_rows_for_the_next_flush(tmp_path):
    root = tmp_path / "landing"
    batcher = MicroBatcher(root, "0123456789abcdef", tmp_path / "spill")
    for i in range(10):
        _add(batcher, i)
    root.mkdir()
    (root / "binance").write_text("a file where the exchange folder should be")  # every write into it fails
    with pytest.raises(OSError):
        batcher.flush()
    for i in range(10, 15):
        _add(batcher, i)
    assert batcher.buffered() == 15
    (root / "binance").unlink()
    (path,) = batcher.flush()
    assert pq.read_table(path, columns=["trade_id"]).column(0).to_pylist() == list(range(15))
