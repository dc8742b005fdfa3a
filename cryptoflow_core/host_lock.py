"""An exclusive lock that one process at a time holds on this host: ``flock`` on a file; the OS drops it if the holder
dies, so a crashed holder never leaves the lock behind.

Two ways to take it:

- :meth:`HostLock.try_hold` does not wait: held or not, at once, and whether another holder had it since we last did
  (the Upbit rate limiter, which then reads what the other process left in the note below);
- :meth:`HostLock.hold` waits as long as it takes (the kernel's queue, no polling) and, while it waits, logs every
  ``warn_every_s`` which process holds it and for how long (the lake's writers: a hung holder must at least be visible).

The holder writes ``<pid> <since, epoch seconds> <holder id>`` into the file for the others to read. A holder that
lets go adds a second line, ``released <note>``: the next holder reads the note in :attr:`HostLock.left_by_previous`
(what the Upbit limiter's requests may still count for at the server). No such line means the previous holder died
holding the lock, and whatever it was doing is unknown.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


class HostLock:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._holder = f"{os.getpid()}:{id(self)}"
        self._fd: int | None = None
        # The note the previous holder left when it let go; "" if nobody held the lock before; None if the previous
        # holder died holding it (nothing known).
        self.left_by_previous: str | None = ""

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_hold(self) -> tuple[bool, bool]:
        """(held now, someone else held it since we last did): in the second case what they did is unknown to us."""
        if self._fd is not None:
            return True, False
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False, False
        previous = self._take(fd)
        return True, previous != self._holder

    def hold(self, *, warn_every_s: float = 60.0, what: str = "host lock", logger: logging.Logger = log) -> None:
        """Wait for the lock, without a timeout; every ``warn_every_s`` of waiting, log a warning on ``logger`` naming
        the holder (``what`` says which lock), and once it is held after such a wait, how long it took."""
        if self._fd is not None:
            return
        fd = self._open()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._wait(fd, warn_every_s, what, logger)
        except BaseException:
            os.close(fd)
            raise
        self._take(fd)

    def release(self, note: str = "") -> None:
        """Let go, leaving ``note`` (one line) for the next holder."""
        if self._fd is not None:
            if "\n" in note:
                raise ValueError("a host lock's note is one line")
            line = os.pread(self._fd, 256, 0).decode(errors="replace").split("\n", 1)[0]
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{line}\nreleased {note}\n".encode(), 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> HostLock:
        self.hold()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def _take(self, fd: int) -> str:
        """Write us in as the holder (with when), keep what the previous holder left, and return its id."""
        holder, _, rest = os.pread(fd, 64 * 1024, 0).decode(errors="replace").partition("\n")
        previous = holder.split()
        released = rest.split("\n", 1)[0]
        if not previous:
            self.left_by_previous = ""
        else:
            self.left_by_previous = released.removeprefix("released ") if released.startswith("released") else None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {time.time():.0f} {self._holder}\n".encode(), 0)
        self._fd = fd
        return previous[2] if len(previous) >= 3 else ""

    def _wait(self, fd: int, warn_every_s: float, what: str, logger: logging.Logger) -> None:
        started = time.monotonic()
        done = threading.Event()

        def warn() -> None:
            while not done.wait(warn_every_s):
                try:
                    holder = self.path.read_text().split()
                except OSError:
                    holder = []
                pid, since = (holder + ["?", "?"])[:2]
                held_s = f"{time.time() - float(since):.0f} s" if since.isdigit() else "an unknown time"
                logger.warning("%s: waiting %.0f s for process %s, which has held it for %s (%s)",
                               what, time.monotonic() - started, pid, held_s, self.path)

        watcher = threading.Thread(target=warn, name=f"{what} wait", daemon=True)
        watcher.start()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            done.set()
        waited = time.monotonic() - started
        if waited >= warn_every_s:
            logger.warning("%s: got it after %.0f s", what, waited)
