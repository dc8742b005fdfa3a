"""The baton between silver writers: one host lock, and how a streaming run hands it to the next one without a gap.

Why (docs/decisions/0019-streaming-handover.md): a streaming run is bounded (a redeploy's code is live within
``CRYPTOFLOW_STREAM_RUN_MAX_S``), and the next run used to start only after the last one ended: sensor tick, run queue, a
new process importing the code location, the lake attached, the landing folder listed. Files landing meanwhile waited
8-20 s, a freshness spike every run. Now the next run is started ahead of time (the landing sensor requests it
``CRYPTOFLOW_STREAM_HANDOVER_S`` before the current run's end), pays all of that while the current one still ingests,
announces itself, and waits for the lock; the current run, once past its maximum, ends at its next step when a successor
is announced, leaves its reader's position (the landing cursor) behind and releases the lock. The successor takes over
within a poll interval.

The lock also keeps the gap-repair job and a streaming run from writing silver at once, whatever the run queue does.

Files, under ``<home>/locks/``: ``silver-writer.lock`` (the lock; its holder's pid and since), ``silver-writer.next``
(``<pid> <run id>`` of the run waiting to take over), ``silver-writer.cursor`` (the last holder's landing cursor).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from cryptoflow_core.host_lock import HostLock

log = logging.getLogger(__name__)

LOCK, NEXT, CURSOR = "silver-writer.lock", "silver-writer.next", "silver-writer.cursor"
_POLL_S = 0.05  # how often a waiting run tries the lock: the hand-over costs at most this


def lock_dir(home: Path) -> Path:
    return home / "locks"


class Handover:
    def __init__(self, directory: Path, run_id: str | None):
        self.dir = directory
        self.run_id = run_id or f"pid-{os.getpid()}"
        self.lock = HostLock(directory / LOCK)
        self.waited_s = 0.0

    def take_turn(self, stopping: Callable[[], bool], on_wait: Callable[[], None] | None = None) -> str | None:
        """Announce this run as the next writer and wait for the lock (until ``stopping()``). Returns the landing cursor
        the previous holder left when this run took over from one (None when the lock was free: a cold start lists the
        whole landing folder, as a backlog may wait there), or raises :class:`StopWaiting`."""
        self.dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        held, _ = self.lock.try_hold()
        if held:
            return None
        _write(self.dir / NEXT, f"{os.getpid()} {self.run_id}".encode())
        if on_wait is not None:
            on_wait()
        while not held:
            if stopping():
                self._withdraw()
                raise StopWaiting()
            time.sleep(_POLL_S)
            held, _ = self.lock.try_hold()
        self.waited_s = time.monotonic() - started
        self._withdraw()
        try:
            data = orjson.loads((self.dir / CURSOR).read_bytes())
            return data["cursor"] if isinstance(data.get("cursor"), str) else None
        except (OSError, ValueError, AttributeError, KeyError):
            return None

    def successor_ready(self) -> bool:
        """Is another run (alive) waiting for the lock? Cheap: one small file read, asked every loop step."""
        try:
            pid, run_id = (self.dir / NEXT).read_text().split()[:2]
        except (OSError, ValueError):
            return False
        return pid.isdigit() and run_id != self.run_id and _alive(int(pid))

    def hand_over(self, cursor: str | None) -> None:
        """Leave the landing cursor for the next holder (while still holding the lock), then release it."""
        if not self.lock.held:
            return
        try:
            if cursor is not None:
                _write(self.dir / CURSOR, orjson.dumps({"run_id": self.run_id, "cursor": cursor}))
        finally:
            self.lock.release()

    def _withdraw(self) -> None:
        try:
            path = self.dir / NEXT
            if path.read_text().split()[1:2] == [self.run_id]:
                path.unlink()
        except (OSError, IndexError):
            pass


class StopWaiting(Exception):
    """A stop signal arrived while the run waited for its turn: it ends without having written anything."""


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
