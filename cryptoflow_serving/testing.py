"""Run the API in a subprocess for tests and benchmarks: ``with running_api(env) as api: httpx.get(api.url + ...)``.

A subprocess, as in production: the API process has its own DuckDB database and reads the lake while the test (or a
benchmark's writer) commits to it from another process. Its output goes to a file, so a test can read every log line.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ApiHandle:
    port: int
    process: subprocess.Popen
    log_path: Path
    final_output: str | None = None  # kept when the process stops (its log folder is removed then)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/live"

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far (all of it, after it stopped)."""
        if self.final_output is not None:
            return self.final_output
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_api(env: Mapping[str, str], *args: str, timeout_s: float = 60.0) -> Iterator[ApiHandle]:
    """``cryptoflow serve`` (``python -m cryptoflow_serving``) with ``env`` on top of this process's environment, on a
    free loopback port; stopped (SIGTERM, then kill) on exit."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="cryptoflow-api-") as tmp:
        log_path = Path(tmp) / "api.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "cryptoflow_serving", "--port", str(port), *args],
                env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
            )
        handle = ApiHandle(port, process, log_path)
        try:
            _wait_until_up(handle, timeout_s)
            yield handle
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)
            handle.final_output = log_path.read_text(errors="replace")


def _wait_until_up(api: ApiHandle, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if api.process.poll() is not None:
                raise RuntimeError(f"the API exited with {api.process.returncode}: {api.output()[-2000:]}")
            try:
                if client.get(api.url + "/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"the API did not answer within {timeout_s} s: {api.output()[-2000:]}")
