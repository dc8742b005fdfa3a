"""``cryptoflow demo`` driven by another program (the demo tests, the endurance benchmark).

The demo runs in a session of its own, so the program, not a terminal, decides who gets the Ctrl-C. Its output is read
line by line on a thread (and copied to ``log`` when given); its children are found from the ``started NAME (pid N)``
lines it prints, each the leader of its own process group.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptoflow_dagster.cli.children import group_alive
from cryptoflow_dagster.cli.services import REPO_ROOT, free_port

CRYPTOFLOW = str(Path(sys.executable).parent / "cryptoflow")
_STARTED = re.compile(r"started (\S+) \(pid (\d+)\)")


class DemoOutputError(RuntimeError):
    """The demo did not print what was waited for: it exited first, or the wait timed out."""


@dataclass
class DemoProcess:
    home: Path
    process: subprocess.Popen
    ui_port: int
    sim_port: int
    api_port: int
    log: Path | None = None
    lines: queue.Queue = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, home: Path, *args: str, env: dict[str, str] | None = None, log: Path | None = None):
        """``cryptoflow demo`` on free ports, with ``args`` after them; ``env`` replaces this process's environment."""
        ui_port, sim_port, api_port = free_port(), free_port(), free_port()
        process = subprocess.Popen(
            [CRYPTOFLOW, "demo", "--ui-port", str(ui_port), "--sim-port", str(sim_port), "--api-port", str(api_port),
             *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, cwd=REPO_ROOT,
            env=env,
        )
        demo = cls(home, process, ui_port, sim_port, api_port, log)
        demo.reader = threading.Thread(target=demo._read, daemon=True)
        demo.reader.start()
        return demo

    def _read(self) -> None:
        out = open(self.log, "a") if self.log else None
        try:
            with self.process.stdout:  # closed at end of file: an open pipe would warn when collected, elsewhere
                for line in self.process.stdout:
                    if out:
                        out.write(line)
                        out.flush()
                    self.lines.put(line.rstrip("\n"))
        finally:
            if out:
                out.close()
            self.lines.put(None)

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    @property
    def sim(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def wait_for(self, text: str | re.Pattern, timeout_s: float) -> str:
        """The first line from now on that holds ``text`` (or matches it)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise DemoOutputError(f"no {text!r} from the demo within {timeout_s:.0f}s:\n" + self.tail()) from None
            if line is None:
                self.lines.put(None)
                raise DemoOutputError(f"the demo exited before {text!r}:\n" + self.tail())
            self.seen.append(line)
            if text.search(line) if isinstance(text, re.Pattern) else text in line:
                return line

    def drain(self) -> None:
        """Every line printed so far into ``seen``."""
        while not self.lines.empty():
            line = self.lines.get()
            if line is None:
                self.lines.put(None)
                return
            self.seen.append(line)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.seen[-n:])

    def children(self) -> dict[str, int]:
        """name -> pid (= process group) of the latest start of each child the demo started."""
        self.drain()
        return {m.group(1): int(m.group(2)) for line in self.seen if (m := _STARTED.search(line))}

    def kill_all(self, wait_s: float = 180) -> None:
        """After a failure: SIGTERM to the demo (its own orderly stop), SIGKILL after ``wait_s``, then SIGKILL to every
        child group still there. Nothing it started outlives the caller."""
        groups = self.children()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pgid in groups.values():
            if group_alive(pgid):
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.reader is not None:
            self.reader.join(timeout=10)
            if self.reader.is_alive():  # the reader closes the pipe at end of file; only a stuck one leaves it open
                self.process.stdout.close()
