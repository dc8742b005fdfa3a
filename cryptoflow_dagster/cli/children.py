"""Child processes that must all stop together: each in its own process group, stopped group by group.

A process group per child means the grandchildren go too (the Dagster webserver's code server, the daemon's run
workers), and a Ctrl-C in the terminal reaches only the parent, which then stops the children in a known order.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log_path: Path | None
    _log_file: IO[bytes] | None = None

    @property
    def pgid(self) -> int:
        # start_new_session=True made the child the leader of a group with its own pid as id
        return self.process.pid


class Children:
    """Starts named children and stops all of them: SIGTERM to each group (last started first), wait, then SIGKILL."""

    def __init__(self, *, stop_timeout_s: float = 20.0) -> None:
        self.stop_timeout_s = stop_timeout_s
        self.children: list[Child] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None = None,
        log_path: Path | None = None,
    ) -> Child:
        log_file = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log_file if log_file else None,
            stderr=subprocess.STDOUT if log_file else None,
            start_new_session=True,
        )
        child = Child(name, process, log_path, log_file)
        self.children.append(child)
        log.info("started %s (pid %d): %s", name, process.pid, " ".join(argv))
        return child

    def exited(self) -> list[Child]:
        """Children that have ended on their own."""
        return [c for c in self.children if c.process.poll() is not None]

    def pids(self) -> list[int]:
        return [c.process.pid for c in self.children]

    def stop(self) -> None:
        for child in reversed(self.children):
            _signal_group(child.pgid, signal.SIGTERM)
        started = time.monotonic()
        deadline = started + self.stop_timeout_s
        for child in reversed(self.children):
            if _wait_group(child, deadline):
                log.info("%s stopped (%.1fs)", child.name, time.monotonic() - started)
        for child in self.children:
            child.process.poll()  # reap an exited leader: a zombie would still count as a live group member
            if _group_alive(child.pgid):
                log.warning("%s did not stop within %.0fs: killing its process group", child.name, self.stop_timeout_s)
                _signal_group(child.pgid, signal.SIGKILL)
            try:
                child.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.error("%s (pid %d) survived SIGKILL", child.name, child.process.pid)
            if child._log_file:
                child._log_file.close()
        self.children.clear()

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # already gone


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_group(child: Child, deadline: float) -> bool:
    """Wait for the group leader (reaping it) and for the rest of its group, until the shared deadline."""
    while time.monotonic() < deadline:
        child.process.poll()
        if child.process.returncode is not None and not _group_alive(child.pgid):
            return True
        time.sleep(0.1)
    return False
