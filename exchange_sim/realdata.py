"""Real 1-minute candles that shape the simulated price path (CSV layout ``timestamp,open,high,low,close,volume``).

The recorded files (shared/data/upbit/<MARKET>_1m_*.csv, naive UTC timestamps) come from ccxt downloads; any CSV in
that layout can be passed instead. Inside the span a file covers, a minute without a row is a real minute without
trades and stays empty in the simulator.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SHARED_UPBIT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "upbit"
_NAME_RE = re.compile(r"^((?:KRW|BTC|USDT)-[A-Z0-9]+)_1m_.*\.csv$")


@dataclass(frozen=True)
class RealMinutes:
    """One market's real candles, indexed by minute since the Unix epoch."""

    minute: np.ndarray  # int64, sorted, unique
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @property
    def first_minute(self) -> int:
        return int(self.minute[0])

    @property
    def last_minute(self) -> int:
        return int(self.minute[-1])


def load_csv(path: Path) -> RealMinutes:
    rows: list[tuple[int, float, float, float, float, float]] = []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        if [h.strip() for h in header[:6]] != ["timestamp", "open", "high", "low", "close", "volume"]:
            raise ValueError(f"{path}: expected header timestamp,open,high,low,close,volume, got {header}")
        for line_no, row in enumerate(reader, start=2):
            try:
                ts = datetime.fromisoformat(row[0].strip())
                if ts.tzinfo is None:
                    ts = ts.replace(tzinfo=timezone.utc)
                o, h, lo, c, v = (float(x) for x in row[1:6])
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path}:{line_no}: bad candle row {row!r}: {exc}") from None
            if not (lo <= min(o, c) and max(o, c) <= h) or v <= 0:
                raise ValueError(f"{path}:{line_no}: inconsistent candle {row!r}")
            rows.append((int(ts.timestamp()) // 60, o, h, lo, c, v))
    if not rows:
        raise ValueError(f"{path}: no candles")
    arr = np.array(rows, dtype=np.float64)
    order = np.argsort(arr[:, 0], kind="stable")
    arr = arr[order]
    minute = arr[:, 0].astype(np.int64)
    keep = np.concatenate(([True], np.diff(minute) > 0))  # a duplicated minute keeps its first row
    return RealMinutes(minute[keep], *(arr[keep, i].copy() for i in range(1, 6)))


def discover(directory: Path = SHARED_UPBIT_DIR) -> dict[str, Path]:
    """Map market code -> CSV for files named like ``KRW-BTC_1m_<span>.csv``."""
    found: dict[str, Path] = {}
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            match = _NAME_RE.match(path.name)
            if match:
                found.setdefault(match.group(1), path)
    return found


def load_all(paths: dict[str, Path]) -> dict[str, RealMinutes]:
    loaded = {}
    for market, path in paths.items():
        loaded[market] = load_csv(Path(path))
        log.info("real candles for %s: %d minutes from %s", market, len(loaded[market].minute), path)
    return loaded
