"""The demo stop test, looped under CPU load (`make soak`, or `pytest -m soak -k demo_stop -s`): each round starts the
whole demo while busy loops hold both cores, waits for a streaming run in its loop, checks `cryptoflow doctor` and
`query` in another shell, stops it with SIGINT or SIGTERM (alternately, at a varied moment) and checks that no run
ended in FAILURE or was left in flight, nothing had to be killed, no process was left.

CRYPTOFLOW_STOP_SOAK_RUNS (20), CRYPTOFLOW_STOP_SOAK_BURNERS (one per core) and CRYPTOFLOW_STOP_SOAK_REPORT (a JSON
file of every round's outcome and timings) change it."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_cli_demo import demo_start_and_stop


@pytest.mark.soak
@pytest.mark.timeout(8 * 3600)
def test_demo_stop_passes_every_time_under_cpu_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    runs = int(os.environ.get("CRYPTOFLOW_STOP_SOAK_RUNS", "20"))
    burners = int(os.environ.get("CRYPTOFLOW_STOP_SOAK_BURNERS", str(os.cpu_count() or 2)))
    report_path = Path(os.environ.get("CRYPTOFLOW_STOP_SOAK_REPORT", tmp_path / "demo-stop-soak.json"))
    rng = random.Random(20261207)
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(burners)]
    rounds: list[dict] = []
    try:
        for i in range(runs):
            home = tmp_path / f"round{i:02d}"
            (home / "dagster_home").mkdir(parents=True)
            monkeypatch.setenv("CRYPTOFLOW_HOME", str(home))
            monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster_home"))
            sig = signal.SIGINT if i % 2 == 0 else signal.SIGTERM
            wait = round(rng.uniform(0, 15), 1)  # after the streaming run reached its loop: stops land anywhere
            started = time.monotonic()
            outcome = {"round": i + 1, "signal": sig.name, "extra_wait_s": wait, "load": os.getloadavg()[0]}
            try:
                outcome.update(demo_start_and_stop(home, sig, extra_wait_s=wait), passed=True)
                shutil.rmtree(home, ignore_errors=True)
            except Exception as exc:  # noqa: BLE001 - a round's failure is recorded, the next round runs
                outcome.update(passed=False, error=f"{type(exc).__name__}: {exc}"[-6000:], home=str(home))
            outcome["total_s"] = round(time.monotonic() - started, 1)
            rounds.append(outcome)
            report_path.write_text(json.dumps(rounds, indent=1))
            print(f"round {i + 1}/{runs} {sig.name}: {'PASS' if outcome['passed'] else 'FAIL'} "
                  f"ready {outcome.get('ready_s', 0):.0f}s stop {outcome.get('stop_s', 0):.1f}s "
                  f"total {outcome['total_s']:.0f}s load {outcome['load']:.1f}", flush=True)
    finally:
        for burner in load:
            burner.kill()
            burner.wait()
    passed = sum(r["passed"] for r in rounds)
    stops = sorted(r["stop_s"] for r in rounds if r["passed"])
    print(f"demo stop under load: {passed}/{runs} passed; stop took {stops[0]:.1f}-{stops[-1]:.1f}s "
          f"(median {stops[len(stops) // 2]:.1f}s); report {report_path}" if stops else f"{passed}/{runs} passed")
    assert passed == runs, json.dumps([r for r in rounds if not r["passed"]], indent=1)
