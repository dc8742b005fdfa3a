"""Work that can wait runs at a lower priority than the latency path (ADR 0024): batch runs and the API at
CRYPTOFLOW_BACKGROUND_NICE, the streaming run at the normal priority. Real runs of the code location's jobs (in a
subprocess, since a lowered priority is for good) and a real API process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cryptoflow_core.priority import run_in_background
from cryptoflow_core.settings import SettingsError, load_settings
from cryptoflow_serving.testing import running_api

REPO = Path(__file__).resolve().parents[1]


def run_job(job: str, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "tests.run_priority_probe", job], cwd=REPO, env={**os.environ, **env},
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_batch_runs_lower_their_priority_and_the_streaming_run_keeps_it(settings):
    batch = run_job("landing_retention", {"CRYPTOFLOW_BACKGROUND_NICE": "7"})
    assert batch == {"success": True, "before": 0, "after": 7}
    streaming = run_job("streaming_ingest", {"CRYPTOFLOW_BACKGROUND_NICE": "7"})
    assert streaming == {"success": True, "before": 0, "after": 0}
    assert run_job("landing_retention", {"CRYPTOFLOW_BACKGROUND_NICE": "0"})["after"] == 0  # switched off


def test_the_api_serves_at_the_background_priority_on_every_thread(settings):
    with running_api({"CRYPTOFLOW_BACKGROUND_NICE": "6"}) as api:
        tasks = Path(f"/proc/{api.process.pid}/task")
        nices = {int(t.name): os.getpriority(os.PRIO_PROCESS, int(t.name)) for t in tasks.iterdir()}
        assert len(nices) > 1  # uvicorn's loop, DuckDB's workers and the reader threads
        assert set(nices.values()) == {6}, nices


def test_lowering_never_raises_a_priority_already_lower():
    code = ("import os; os.setpriority(os.PRIO_PROCESS, 0, 9); from cryptoflow_core.priority import run_in_background;"
            "print(run_in_background(5), run_in_background(12))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["9", "12"], out.stderr
    assert run_in_background(0) == os.getpriority(os.PRIO_PROCESS, 0)  # 0 leaves this (the test's) process alone


def test_a_niceness_out_of_range_is_refused(monkeypatch, cryptoflow_home):
    monkeypatch.setenv("CRYPTOFLOW_BACKGROUND_NICE", "20")
    with pytest.raises(SettingsError, match="CRYPTOFLOW_BACKGROUND_NICE=20: expected 0 to 19"):
        load_settings()
