"""Child processes that must all stop together: each in its own process group, stopped group by group, and (for
``cryptoflow demo``) restarted with backoff when one dies on its own.

A process group per child means the grandchildren go too (the Dagster code server's run workers), and a Ctrl-C in the
terminal reaches only the parent, which then stops the children in a known order.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log_path: Path | None
    _log_file: IO[bytes] | None = None
    # what it was started with, so that it can be started again
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    started_at: float = field(default_factory=time.monotonic)
    restarts: int = 0
    backoff_s: float = 0.0  # the wait before its latest restart (0: never restarted, or healthy since)
    restart_at: float | None = None  # monotonic time of the pending restart, while it is down

    @property
    def pgid(self) -> int:
        # start_new_session=True made the child the leader of a group with its own pid as id
        return self.process.pid

    @property
    def down(self) -> bool:
        return self.restart_at is not None


@dataclass(frozen=True)
class RestartPolicy:
    """systemd's ``Restart=always`` with a growing ``RestartSec``: a child that exits is started again after
    ``first_delay_s``, each quick exit doubling the wait up to ``max_delay_s``; one that stayed up ``healthy_after_s``
    starts from ``first_delay_s`` again. A child that crashes at once is started at most once a ``max_delay_s``."""

    first_delay_s: float = 1.0
    max_delay_s: float = 60.0
    healthy_after_s: float = 60.0

    def next_delay(self, previous_s: float, uptime_s: float) -> float:
        if previous_s <= 0 or uptime_s >= self.healthy_after_s:
            return self.first_delay_s
        return min(self.max_delay_s, previous_s * 2)


@dataclass(frozen=True)
class Exited:
    """A supervised child ended on its own; it is started again in ``delay_s``."""

    child: Child
    pid: int
    returncode: int
    uptime_s: float
    delay_s: float


@dataclass(frozen=True)
class Restarted:
    child: Child
    old_pid: int
    returncode: int
    uptime_s: float  # how long the previous process had been up


class Children:
    """Starts named children and stops them: SIGTERM to each group, wait, then SIGKILL. ``supervise`` restarts those
    that exit on their own."""

    def __init__(self, *, stop_timeout_s: float = 20.0) -> None:
        self.stop_timeout_s = stop_timeout_s
        self.children: list[Child] = []
        self._leftovers: list[tuple[int, float]] = []  # (pgid, SIGKILL time): groups whose leader died on its own
        self._exits: dict[str, tuple[int, int, float]] = {}  # name -> (old pid, code, uptime) until restarted

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
            log_file = open(log_path, "ab")  # noqa: SIM115 - closed when the child is stopped
        child = Child(name, _spawn(argv, env, cwd, log_file), log_path, log_file, list(argv), dict(env), cwd)
        self.children.append(child)
        log.info("started %s (pid %d): %s", name, child.process.pid, " ".join(argv))
        return child

    def get(self, name: str) -> Child | None:
        return next((c for c in self.children if c.name == name), None)

    def exited(self) -> list[Child]:
        """Children that have ended on their own."""
        return [c for c in self.children if c.process.poll() is not None]

    def pids(self) -> list[int]:
        return [c.process.pid for c in self.children]

    # ---- supervision ---------------------------------------------------------------------------------------------

    def supervise(self, policy: RestartPolicy, now: float | None = None) -> list[Exited | Restarted]:
        """One look: schedule a restart for each child that exited, start those whose wait is over. Never blocks."""
        now = time.monotonic() if now is None else now
        events: list[Exited | Restarted] = []
        self._kill_leftovers(now)
        for child in self.children:
            if child.restart_at is None:
                code = child.process.poll()
                if code is None:
                    continue
                uptime = now - child.started_at
                child.backoff_s = policy.next_delay(child.backoff_s, uptime)
                child.restart_at = now + child.backoff_s
                self._exits[child.name] = (child.process.pid, code, uptime)
                # what the dead leader left in its group (a code server's gRPC server and run workers) ends in order
                if group_alive(child.pgid):
                    _signal_group(child.pgid, signal.SIGTERM)
                    self._leftovers.append((child.pgid, now + self.stop_timeout_s))
                events.append(Exited(child, child.process.pid, code, uptime, child.backoff_s))
            elif now >= child.restart_at:
                old_pid, code, uptime = self._exits[child.name]
                try:
                    self._respawn(child, code)
                except OSError as exc:  # could not even start: try again after a longer wait
                    child.backoff_s = policy.next_delay(child.backoff_s, 0.0)
                    child.restart_at = now + child.backoff_s
                    log.error("could not restart %s: %s; next try in %.0fs", child.name, exc, child.backoff_s)
                    continue
                del self._exits[child.name]
                events.append(Restarted(child, old_pid, code, uptime))
        return events

    def _respawn(self, child: Child, code: int) -> None:
        if child._log_file:
            child._log_file.write(f"\n--- {datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ} cryptoflow demo: "
                                  f"restarting {child.name} (exit code {code}) ---\n".encode())
            child._log_file.flush()
        child.process = _spawn(child.argv, child.env, child.cwd, child._log_file)
        child.started_at = time.monotonic()
        child.restart_at = None
        child.restarts += 1
        log.warning("restarted %s (pid %d), restart %d", child.name, child.process.pid, child.restarts)

    def _kill_leftovers(self, now: float) -> None:
        for pgid, kill_at in list(self._leftovers):
            if not group_alive(pgid):
                self._leftovers.remove((pgid, kill_at))
            elif now >= kill_at:
                log.warning("process group %d (left by a child that died) did not end within %.0fs: killing it",
                            pgid, self.stop_timeout_s)
                _signal_group(pgid, signal.SIGKILL)
                self._leftovers.remove((pgid, kill_at))

    # ---- stopping ------------------------------------------------------------------------------------------------

    def stop_some(self, names: Iterable[str], *, timeout_s: float | None = None) -> None:
        """Stop these children (all at once, then wait for each, ``timeout_s`` or the stop timeout, before SIGKILL) and
        forget them; unknown names are skipped."""
        wanted = set(names)
        chosen = [c for c in self.children if c.name in wanted]
        self._stop(chosen, self.stop_timeout_s if timeout_s is None else timeout_s)

    def stop(self) -> None:
        """Stop every child left (the last started first) and whatever groups dead children left behind."""
        self._stop(list(reversed(self.children)), self.stop_timeout_s)
        for pgid, _ in self._leftovers:
            if group_alive(pgid):
                _signal_group(pgid, signal.SIGKILL)
        self._leftovers.clear()

    def _stop(self, chosen: list[Child], timeout_s: float) -> None:
        if not chosen:
            return
        for child in chosen:
            child.process.poll()
            _signal_group(child.pgid, signal.SIGTERM)
        started = time.monotonic()
        deadline = started + timeout_s
        for child in chosen:
            if _wait_group(child, deadline):
                log.info("%s stopped (%.1fs)", child.name, time.monotonic() - started)
        for child in chosen:
            child.process.poll()  # reap an exited leader: a zombie would still count as a live group member
            if group_alive(child.pgid):
                log.warning("%s did not stop within %.0fs: killing its process group", child.name, timeout_s)
                _signal_group(child.pgid, signal.SIGKILL)
            try:
                child.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.error("%s (pid %d) survived SIGKILL", child.name, child.process.pid)
            if child._log_file:
                child._log_file.close()
            self.children.remove(child)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# A process started in the background (`nohup make demo &`, a script's `cmd &`) has these ignored, and an ignored
# signal stays ignored across exec: the Dagster code server then never saw the stop's SIGTERM and was killed at the
# timeout (the whole suite, launched that way, failed every demo stop test on it).
_STOP_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM)


def _default_stop_signals() -> None:
    """In the child, between fork and exec: the stop signals back to their default action."""
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def _spawn(argv: Sequence[str], env: Mapping[str, str], cwd: Path | None,
           log_file: IO[bytes] | None) -> subprocess.Popen:
    """A child in a new session (its own process group), output appended to its log file, the stop signals at their
    default action whatever this process inherited."""
    return subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log_file if log_file else None,
        stderr=subprocess.STDOUT if log_file else None,
        start_new_session=True,
        preexec_fn=_default_stop_signals,
    )


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # already gone


def group_alive(pgid: int) -> bool:
    """Whether any process of the group ``pgid`` is still there (one we may not signal counts as there)."""
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
        if child.process.returncode is not None and not group_alive(child.pgid):
            return True
        time.sleep(0.1)
    return False

