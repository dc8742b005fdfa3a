"""Run the simulator in a subprocess for tests and benchmarks: ``with running_sim(seed=1) as sim: httpx.get(sim.url ...)``.

A subprocess (not a thread) keeps the simulator's CPU work and event loop apart from the code under test, exactly
as in production where the platform talks to a separate exchange.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Iterator

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _to_ms(value: int | str | datetime) -> str:
    if isinstance(value, datetime):
        return str(int(value.timestamp() * 1000))
    return str(value)


@dataclass
class SimHandle:
    host: str
    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def upbit_rest_url(self) -> str:
        return self.url

    @property
    def upbit_ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/websocket/v1"

    @property
    def binance_rest_url(self) -> str:
        return self.url

    @property
    def binance_ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def fear_greed_url(self) -> str:
        return self.url

    @property
    def slack_api_url(self) -> str:
        return f"{self.url}/api/"

    def env(self) -> dict[str, str]:
        """CRYPTOFLOW_* variables that point the platform at this simulator."""
        return {
            "CRYPTOFLOW_UPBIT_REST_URL": self.upbit_rest_url,
            "CRYPTOFLOW_UPBIT_WS_URL": self.upbit_ws_url,
            "CRYPTOFLOW_BINANCE_REST_URL": self.binance_rest_url,
            "CRYPTOFLOW_BINANCE_WS_URL": self.binance_ws_url,
            "CRYPTOFLOW_FEAR_GREED_URL": self.fear_greed_url,
            "CRYPTOFLOW_SLACK_API_URL": self.slack_api_url,
            "CRYPTOFLOW_SIM_HOST": self.host,
            "CRYPTOFLOW_SIM_PORT": str(self.port),
        }

    # ---- /_sim control ----------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = httpx.request(method, self.url + path, timeout=60, **kw)
        r.raise_for_status()
        return r.json()

    def set_faults(self, **faults: Any) -> dict:
        return self._call("POST", "/_sim/faults", json=faults)

    def reset(self) -> None:
        """Clear faults and rate-limit state (a test that tripped 418 leaves none behind)."""
        self._call("POST", "/_sim/reset")

    def shock(self, market: str, pct: float, exchange: str | None = None) -> int:
        params = {"market": market, "pct": pct, **({"exchange": exchange} if exchange else {})}
        return self._call("POST", "/_sim/shock", params=params)["at_ms"]

    def ground_truth(self, market: str, start: int | str | datetime, end: int | str | datetime,
                     exchange: str | None = None) -> list[dict]:
        """Every trade the simulator emitted or will emit in [start, end) (ms, ISO text or datetime)."""
        params = {"market": market, "start": _to_ms(start), "end": _to_ms(end), "format": "ndjson"}
        if exchange:
            params["exchange"] = exchange
        r = httpx.get(self.url + "/_sim/trades", params=params, timeout=120)
        r.raise_for_status()
        return [json.loads(line) for line in r.text.splitlines() if line]

    def malformed_frames(self) -> dict:
        """{"frames": [{serial, exchange, connection, sent_at_ms}], "connections": {id: {exchange, ended_ms, ...}}}"""
        return self._call("GET", "/_sim/malformed")

    def slack_messages(self) -> list[dict]:
        return self._call("GET", "/_sim/slack/messages")["messages"]

    def status(self) -> dict:
        return self._call("GET", "/_sim/status")


def _argv(options: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif key == "faults":
            argv += [flag, json.dumps(value)]
        elif key == "real_csv" and isinstance(value, dict):
            for market, path in value.items():
                argv += [flag, f"{market}={path}"]
        elif isinstance(value, (list, tuple)):
            argv += [flag, ",".join(value)]
        elif isinstance(value, date):
            argv += [flag, value.isoformat()]
        else:
            argv += [flag, str(value)]
    return argv


@contextlib.contextmanager
def running_sim(startup_timeout_s: float = 60.0, **options: Any) -> Iterator[SimHandle]:
    """Start ``python -m exchange_sim`` on a free loopback port with ``options`` as CLI flags; stop it afterwards.

    Options are the CLI flags in Python spelling: seed=7, history_start="2025-09-01", trade_rate=20,
    faults={"ws_duplicate_every": 5}, upbit_rate=2, firehose=True, ...
    """
    host = options.pop("host", "127.0.0.1")
    port = options.pop("port", None) or free_port()
    log = tempfile.NamedTemporaryFile(prefix="exchange_sim_", suffix=".log", delete=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOFLOW_SIM_")}
    cmd = [sys.executable, "-m", "exchange_sim", "--host", host, "--port", str(port), *_argv(options)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    handle = SimHandle(host, port, proc)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"simulator exited with {proc.returncode}: {_tail(log.name)}")
            try:
                if httpx.get(handle.url + "/_sim/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"simulator not ready after {startup_timeout_s} s: {_tail(log.name)}")
            time.sleep(0.1)
        yield handle
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        os.unlink(log.name)


def _tail(path: str, n: int = 4000) -> str:
    with open(path, errors="replace") as fh:
        return fh.read()[-n:]
