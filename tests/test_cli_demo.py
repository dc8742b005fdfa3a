"""`cryptoflow demo` (`make demo`): the real console script starts the simulator, sidecar, a Dagster code server, the
webserver and the daemon, reports ready with the code location LOADED, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import argparse
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import dagster as dg
import httpx

from cryptoflow_dagster.cli.demo import DEMO_SLACK_TOKEN, READY_LINE, plan
from cryptoflow_dagster.cli.services import free_port, port_is_free
from cryptoflow_dagster.defs.streaming.jobs import streaming_ingest_job
from cryptoflow_dagster.webserver import location_statuses

CRYPTOFLOW = str(Path(sys.executable).parent / "cryptoflow")


def demo_args(**overrides) -> argparse.Namespace:
    values = {"ui_host": None, "ui_port": None, "sim_port": None, "history_start": None}
    return argparse.Namespace(**{**values, **overrides})


def test_demo_points_every_part_at_the_simulator_without_touching_the_callers_env(cryptoflow_home):
    base = {"CRYPTOFLOW_HOME": str(cryptoflow_home), "PATH": os.environ["PATH"]}
    demo = plan(demo_args(ui_port=3999, sim_port=8999), base, today=date(2026, 1, 31))
    env = demo.env
    assert demo.history_start == date(2026, 1, 17)
    assert env["CRYPTOFLOW_SIM_HISTORY_START"] == env["CRYPTOFLOW_START_DATE"] == "2026-01-17"
    assert env["CRYPTOFLOW_UPBIT_REST_URL"] == env["CRYPTOFLOW_BINANCE_REST_URL"] == "http://127.0.0.1:8999"
    assert env["CRYPTOFLOW_FEAR_GREED_URL"] == "http://127.0.0.1:8999"
    assert env["CRYPTOFLOW_UPBIT_WS_URL"] == "ws://127.0.0.1:8999/websocket/v1"
    assert env["CRYPTOFLOW_BINANCE_WS_URL"] == "ws://127.0.0.1:8999"
    assert env["CRYPTOFLOW_SLACK_API_URL"] == "http://127.0.0.1:8999/api/"
    assert env["SLACK_BOT_TOKEN"] == DEMO_SLACK_TOKEN
    assert env["CRYPTOFLOW_UI_URL"] == demo.ui_url == "http://127.0.0.1:3999"
    assert env["DAGSTER_HOME"] == str(cryptoflow_home / "dagster_home")
    assert "SLACK_BOT_TOKEN" not in base and "CRYPTOFLOW_UPBIT_REST_URL" not in base  # the caller's env is untouched

    own = plan(demo_args(history_start=date(2025, 9, 1)), {**base, "SLACK_BOT_TOKEN": "xoxb-mine"}, date(2026, 1, 31))
    assert own.env["SLACK_BOT_TOKEN"] == "xoxb-mine"  # a person's own token is kept
    assert own.env["CRYPTOFLOW_START_DATE"] == "2025-09-01"


def _reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _wait_for(lines: queue.Queue, seen: list[str], text: str, timeout_s: float) -> None:
    while True:
        try:
            line = lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no {text!r} within {timeout_s}s:\n" + "\n".join(seen[-30:])) from None
        if line is None:
            raise AssertionError(f"demo exited before {text!r}:\n" + "\n".join(seen[-30:]))
        seen.append(line)
        if text in line:
            return


def _group(pgid: int) -> list[str]:
    """The command lines of the live processes in process group ``pgid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(comm)": state, ppid, pgrp, ...
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return found


def _streaming_run_in_its_loop(instance: dg.DagsterInstance, timeout_s: float) -> str:
    """The id of a streaming run whose op has started (the sidecar lands files, the landing sensor starts the run)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for record in instance.get_run_records(dg.RunsFilter(job_name=streaming_ingest_job.name)):
            run_id = record.dagster_run.run_id
            # resources initialized: the op's body (its loop) runs next; a signal before that still fails the run
            if instance.all_logs(run_id, of_type=dg.DagsterEventType.RESOURCE_INIT_SUCCESS):
                return run_id
        time.sleep(1)
    raise AssertionError(f"no streaming run reached its op within {timeout_s:.0f}s")


def _run_story(instance: dg.DagsterInstance, run_id: str) -> str:
    """A run's events, with a failed step's error, for the assertion message."""
    lines = []
    for e in instance.all_logs(run_id):
        failure = e.dagster_event_type == dg.DagsterEventType.STEP_FAILURE
        lines.append(f"{e.dagster_event_type} {e.message[:300]}"
                     + (f"\n{e.dagster_event.step_failure_data.error.to_string()[-3000:]}" if failure else ""))
    return "\n".join(lines)


def _stop_story(instance: dg.DagsterInstance, run_id: str, home: Path, lines: queue.Queue, seen: list[str]) -> str:
    """What a failed stop left to read: the run's events, its process's stderr and the demo's last lines."""
    while not lines.empty():
        line = lines.get()
        if line is not None:
            seen.append(line)
    stderr = [f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}"
              for f in sorted((home / "dagster_home" / "storage" / run_id).rglob("*.err"))]
    return "\n".join([_run_story(instance, run_id), *stderr, "--- demo output", *seen[-30:]])


def _gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_demo_starts_everything_and_ctrl_c_stops_all_of_it(cryptoflow_home):
    ui_port, sim_port = free_port(), free_port()
    demo = subprocess.Popen(
        [CRYPTOFLOW, "demo", "--ui-port", str(ui_port), "--sim-port", str(sim_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so the test, not a terminal, decides who gets the Ctrl-C
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(demo.stdout, lines), daemon=True).start()
    seen: list[str] = []
    children: dict[str, int] = {}
    try:
        _wait_for(lines, seen, READY_LINE, timeout_s=300)
        for line in seen:
            if m := re.search(r"started (\S+) \(pid (\d+)\)", line):
                children[m.group(1)] = int(m.group(2))
        expected = {"simulator", "sidecar", "dagster-code-server", "dagster-webserver", "dagster-daemon"}
        assert expected <= set(children), seen
        # One standing code server serves the webserver and the daemon; neither starts its own (the daemon's own would
        # be replaced every 60 s, sensors stopped while it loads: ADR 0012).
        code_server = _group(children["dagster-code-server"])
        assert any(" api grpc " in c for c in code_server), code_server
        for name in ("dagster-webserver", "dagster-daemon"):
            group = _group(children[name])
            assert not [c for c in group if " api grpc " in c or " code-server start " in c], (name, group)

        ui = f"http://127.0.0.1:{ui_port}"
        sim = f"http://127.0.0.1:{sim_port}"
        assert [(s.name, s.ok) for s in location_statuses(ui)] == [("cryptoflow", True)]
        assert httpx.get(f"{sim}/v1/market/all", timeout=10).status_code == 200
        assert httpx.get(f"{sim}/_sim/slack", timeout=10).status_code == 200
        _wait_for(lines, seen, "Press Ctrl-C", timeout_s=30)
        banner = "\n".join(seen)
        for where in (ui, sim, f"{sim}/_sim/slack", str(cryptoflow_home)):
            assert where in banner
        assert (cryptoflow_home / "dagster_home" / "dagster.yaml").exists()

        # Stop while a streaming run is in its loop: the run ends in order (SUCCESS), not as a failure that would page
        # someone through the run-failure alert on every stop of the platform.
        instance = dg.DagsterInstance.from_config(str(cryptoflow_home / "dagster_home"))
        stream_run = _streaming_run_in_its_loop(instance, timeout_s=180)
        time.sleep(2)
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=120) == 0, "\n".join(seen)
        final = instance.get_run_by_id(stream_run).status
        assert final == dg.DagsterRunStatus.SUCCESS, _stop_story(instance, stream_run, cryptoflow_home, lines, seen)
        assert any("stopped by a signal" in (e.user_message or "") for e in instance.all_logs(stream_run))
        _wait_for(lines, seen, "demo stopped", timeout_s=10)
        # ...each on its own within the stop timeout: none had to be killed (the market alert sensor's watching tick
        # ends when the code server is told to stop, rather than holding it and the daemon for its remaining ~30 s)
        assert not [line for line in seen if "did not stop within" in line], "\n".join(seen[-20:])
        # every child and everything it started (its process group) is gone, and the ports are free again
        assert {name: _gone(pgid) for name, pgid in children.items()} == {name: True for name in children}
        assert port_is_free("127.0.0.1", ui_port) and port_is_free("127.0.0.1", sim_port)
    finally:
        if demo.poll() is None:
            demo.terminate()
            demo.wait(timeout=60)
        for pgid in children.values():
            if not _gone(pgid):
                os.killpg(pgid, signal.SIGKILL)
