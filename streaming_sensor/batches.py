"""Micro-batches: rows buffered per landing stream, written as one atomic Parquet file per flush, with a disk spill.

Memory is bounded: when the writer falls behind and a stream holds more than ``max_buffered`` rows, the buffer is appended
to a spill file (sequential, cheap) and cleared; the next flush turns spilled rows into landing files. Nothing is dropped.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from cryptoflow_core import landing_files

log = logging.getLogger(__name__)

SCHEMA = landing_files.schema()

_COLUMNS = SCHEMA.names
_SMALL_COLUMNS = [c for c in _COLUMNS if c != "raw"]
_LEN = struct.Struct("<I")


def _record_batch(columns: list[list]) -> pa.RecordBatch:
    """Column lists in SCHEMA order as one Arrow batch of the landing schema."""
    return pa.RecordBatch.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, SCHEMA)], schema=SCHEMA)


@dataclass
class _Buffer:
    """Rows of one stream in arrival order: Arrow batches resolved off the event loop (``add_batch``), and rows added
    one at a time (``add``) collected in column lists until the next batch or the write seals them."""

    columns: list[list] = field(default_factory=lambda: [[] for _ in _COLUMNS])
    chunks: list[pa.RecordBatch] = field(default_factory=list)
    chunk_rows: int = 0

    def __len__(self) -> int:
        return len(self.columns[0]) + self.chunk_rows

    def seal(self) -> None:
        if self.columns[0]:
            self.append(_record_batch(self.columns))
            self.columns = [[] for _ in _COLUMNS]

    def append(self, batch: pa.RecordBatch) -> None:
        self.chunks.append(batch)
        self.chunk_rows += batch.num_rows

    def table(self) -> pa.Table:
        self.seal()
        return pa.Table.from_batches(self.chunks, schema=SCHEMA)

    def rows(self) -> list[tuple]:
        return [tuple(r.values()) for r in self.table().to_pylist()]


class MicroBatcher:
    """Collects rows per (exchange, channel) and writes them as landing files.

    ``add`` is called from the event loop; ``flush`` may run in a worker thread. A lock guards only the buffer swap.
    """

    def __init__(self, root: Path, writer_id: str, spill_dir: Path, max_buffered: int = 200_000):
        self.root = root
        self.writer_id = writer_id
        self.spill_dir = spill_dir
        self.max_buffered = max_buffered
        self._buffers: dict[tuple[str, str], _Buffer] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._seq = 0
        self.files_written = 0
        self.rows_written = 0
        self.rows_spilled = 0

    def add(
        self,
        exchange: str,
        channel: str,
        market: str | None,
        trade_id: int | None,
        event_ms: int | None,
        receive_us: int,
        session_id: str,
        raw: bytes,
        error: str | None,
    ) -> int:
        """Buffer one row; returns the stream's buffered row count (the caller decides when to ask for a flush)."""
        key = (exchange, channel)
        with self._lock:
            buf = self._buffers.get(key)
            if buf is None:
                buf = self._buffers[key] = _Buffer()
            cols = buf.columns
            cols[0].append(exchange)
            cols[1].append(market)
            cols[2].append(trade_id)
            cols[3].append(event_ms)
            cols[4].append(receive_us)
            cols[5].append(session_id)
            cols[6].append(raw)
            cols[7].append(error)
            size = len(buf)
            if size >= self.max_buffered:
                self._spill(key, buf)
                self._buffers[key] = _Buffer()
                size = 0
        return size

    def add_batches(self, exchange: str, batches: dict[str, pa.RecordBatch], then=None) -> None:
        """Buffer rows already in the landing schema, per channel (``frames.resolve``). ``then()`` runs under the same
        lock: the caller's counters move with the rows, so a flush never sees one without the other."""
        with self._lock:
            for channel, batch in batches.items():
                key = (exchange, channel)
                buf = self._buffers.get(key)
                if buf is None:
                    buf = self._buffers[key] = _Buffer()
                buf.seal()
                buf.append(batch)
                if len(buf) >= self.max_buffered:
                    self._spill(key, buf)
                    self._buffers[key] = _Buffer()
            if then is not None:
                then()

    def buffered(self) -> int:
        with self._lock:
            return sum(len(b) for b in self._buffers.values())

    def _spill_path(self, key: tuple[str, str]) -> Path:
        return self.spill_dir / f"{self.writer_id}-{key[0]}-{key[1]}.spill"

    def _spill(self, key: tuple[str, str], buf: _Buffer) -> None:
        """Append the buffer to the stream's spill file as length-prefixed records (called under ``_lock``)."""
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        rows = buf.rows()
        with open(self._spill_path(key), "ab") as fh:
            for row in rows:
                record = orjson.dumps([*row[:6], row[6].hex(), row[7]])
                fh.write(_LEN.pack(len(record)))
                fh.write(record)
            fh.flush()
            os.fsync(fh.fileno())
        self.rows_spilled += len(rows)
        log.warning("writer behind: spilled %d %s/%s rows to disk", len(rows), *key)

    def _take_spill(self) -> list[tuple[tuple[str, str], list[tuple], Path]]:
        """Claim every spill file (renamed first, so rows spilled meanwhile go to a fresh file) and read its rows."""
        if not self.spill_dir.is_dir():
            return []
        with self._lock:
            for path in self.spill_dir.glob("*.spill"):
                os.replace(path, path.with_suffix(".draining"))
        out = []
        for path in sorted(self.spill_dir.glob("*.draining")):
            exchange, channel = path.stem.split("-")[-2:]
            out.append(((exchange, channel), _read_records(path.read_bytes()), path))
        return out

    def flush(self, now: datetime | None = None) -> list[Path]:
        """Write every non-empty stream buffer (and any spilled rows) as landing files. Returns the new files."""
        with self._flush_lock:  # one flush at a time keeps file names in write order
            with self._lock:
                taken = {k: b for k, b in self._buffers.items() if len(b)}
                for key in taken:
                    self._buffers[key] = _Buffer()
            written: list[Path] = []
            for key, rows, path in self._take_spill():
                if rows:
                    written.append(self._write(key, pa.Table.from_batches(
                        [_record_batch([list(c) for c in zip(*rows)])], schema=SCHEMA), now))
                path.unlink()  # only once its rows are safely in a landing file
            for key, buf in list(taken.items()):
                try:
                    written.append(self._write(key, buf.table(), now))
                except BaseException:
                    self._put_back(taken)  # a failed write (disk full, say) loses nothing: the rows wait for the next flush
                    raise
                del taken[key]
            return written

    def _put_back(self, taken: dict[tuple[str, str], _Buffer]) -> None:
        """Return unwritten rows to the front of their buffers (ahead of rows that arrived meanwhile)."""
        with self._lock:
            for key, old in taken.items():
                new = self._buffers.get(key) or _Buffer()
                old.seal()
                new.seal()
                for chunk in new.chunks:
                    old.append(chunk)
                self._buffers[key] = old

    def _write(self, key: tuple[str, str], table: pa.Table, now: datetime | None) -> Path:
        exchange, channel = key
        self._seq += 1
        when = now or datetime.now(timezone.utc)
        final = landing_files.landing_path(self.root, exchange, channel, when, self.writer_id, self._seq)
        # Snappy, and neither a dictionary nor statistics for the raw column: the file is read once, whole, and every
        # frame is unique, so the writer's dictionary attempt on it was pure cost (half the encoding time, measured).
        landing_files.write_atomically(final, lambda tmp: pq.write_table(table, tmp, compression="snappy",
                                                                  use_dictionary=_SMALL_COLUMNS,
                                                                  write_statistics=_SMALL_COLUMNS))
        self.files_written += 1
        self.rows_written += table.num_rows
        return final


def _read_records(data: bytes) -> list[tuple]:
    pos, rows = 0, []
    while pos + _LEN.size <= len(data):
        (n,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        if pos + n > len(data):
            break  # a torn tail from a crash mid-append: the complete records before it are kept
        row = orjson.loads(data[pos : pos + n])
        pos += n
        rows.append((*row[:6], bytes.fromhex(row[6]), row[7]))
    return rows
