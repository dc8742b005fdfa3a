"""`cryptoflow demo` (`make demo`): the real console script starts the simulator, sidecar, a Dagster code server, the
webserver and the daemon, reports ready with the code location LOADED, writes its settings to $CRYPTOFLOW_HOME/.env so
that `cryptoflow doctor` and `query` in another shell talk to it, restarts a part that dies (logged and alerted), and
Ctrl-C or SIGTERM ends every run in order (none FAILURE, none left STARTED) and leaves no process behind.

The stop test is looped under CPU load by tests/test_cli_demo_soak.py (`make soak`)."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import httpx

from cryptoflow_dagster.cli.children import group_alive
from cryptoflow_dagster.cli.demo import DEMO_SLACK_TOKEN, ENV_FILE_HEADER, READY_LINE, plan
from cryptoflow_dagster.cli.demo_process import CRYPTOFLOW, DemoProcess
from cryptoflow_dagster.cli.services import REPO_ROOT, port_is_free
from cryptoflow_dagster.defs.streaming.jobs import streaming_ingest_job
from cryptoflow_dagster.webserver import location_statuses

CHILDREN = {"simulator", "sidecar", "dagster-code-server", "dagster-webserver", "dagster-daemon", "api"}
# What an orderly stop must never leave: a failed run pages Slack; a STARTED one is a run nobody will ever end.
NOT_IN_ORDER = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.CANCELING)


def demo_args(**overrides) -> argparse.Namespace:
    values = {"ui_host": None, "ui_port": None, "sim_port": None, "api_port": None, "history_start": None}
    return argparse.Namespace(**{**values, **overrides})


def test_demo_points_every_part_at_the_simulator_without_touching_the_callers_env(cryptoflow_home):
    base = {"CRYPTOFLOW_HOME": str(cryptoflow_home), "PATH": os.environ["PATH"]}
    demo = plan(demo_args(ui_port=3999, sim_port=8999, api_port=8998), base, today=date(2026, 1, 31))
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
    assert env["CRYPTOFLOW_API_PORT"] == "8998" and demo.api_url == "http://127.0.0.1:8998"
    assert env["DAGSTER_HOME"] == str(cryptoflow_home / "dagster_home")
    assert "SLACK_BOT_TOKEN" not in base and "CRYPTOFLOW_UPBIT_REST_URL" not in base  # the caller's env is untouched

    own = plan(demo_args(history_start=date(2025, 9, 1)), {**base, "SLACK_BOT_TOKEN": "xoxb-mine"}, date(2026, 1, 31))
    assert own.env["SLACK_BOT_TOKEN"] == "xoxb-mine"  # a person's own token is kept
    assert own.env["CRYPTOFLOW_START_DATE"] == "2025-09-01"


# ---- a demo process, as a person starts it ------------------------------------------------------------------------


class Demo(DemoProcess):
    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home / "dagster_home"))


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


def streaming_run_in_its_loop(instance: dg.DagsterInstance, timeout_s: float) -> str:
    """The id of a streaming run whose op has started (the sidecar lands files, the landing sensor starts the run)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for record in instance.get_run_records(dg.RunsFilter(job_name=streaming_ingest_job.name)):
            run_id = record.dagster_run.run_id
            if record.dagster_run.status == dg.DagsterRunStatus.STARTED and instance.all_logs(
                    run_id, of_type=dg.DagsterEventType.RESOURCE_INIT_SUCCESS):
                return run_id
        time.sleep(1)
    raise AssertionError(f"no streaming run reached its op within {timeout_s:.0f}s")


def run_story(instance: dg.DagsterInstance, run_id: str, home: Path) -> str:
    """A run's events, with a failed step's error, and its process's stderr: for an assertion message."""
    lines = []
    for e in instance.all_logs(run_id):
        failure = e.dagster_event_type == dg.DagsterEventType.STEP_FAILURE
        lines.append(f"{e.dagster_event_type} {e.message[:300]}"
                     + (f"\n{e.dagster_event.step_failure_data.error.to_string()[-3000:]}" if failure else ""))
    stderr = [f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}"
              for f in sorted((home / "dagster_home" / "storage" / run_id).rglob("*.err"))]
    return "\n".join([*lines, *stderr])


def ready(demo: Demo) -> dict[str, int]:
    """Wait for the demo's ready banner; check every part is up and serving; return the children's pids."""
    demo.wait_for(READY_LINE, timeout_s=400)
    demo.wait_for("Press Ctrl-C", timeout_s=30)
    children = demo.children()
    assert CHILDREN <= set(children), demo.tail()
    # One standing code server serves the webserver and the daemon; neither starts its own (the daemon's own would
    # be replaced every 60 s, sensors stopped while it loads: ADR 0012).
    code_server = _group(children["dagster-code-server"])
    assert any(" api grpc " in c for c in code_server), code_server
    for name in ("dagster-webserver", "dagster-daemon"):
        group = _group(children[name])
        assert not [c for c in group if " api grpc " in c or " code-server start " in c], (name, group)
    assert [(s.name, s.ok) for s in location_statuses(demo.ui)] == [("cryptoflow", True)]
    assert httpx.get(f"{demo.sim}/v1/market/all", timeout=10).status_code == 200
    assert httpx.get(f"{demo.sim}/_sim/slack", timeout=10).status_code == 200
    assert httpx.get(f"{demo.api}/v1/markets", timeout=10).status_code == 200
    assert httpx.get(f"{demo.api}/dashboard/", timeout=10).status_code == 200
    banner = "\n".join(demo.seen)
    for where in (demo.ui, demo.sim, f"{demo.sim}/_sim/slack", str(demo.home), str(demo.home / ".env"),
                  f"{demo.api}/docs", f"{demo.api}/dashboard/"):
        assert where in banner
    assert (demo.home / "dagster_home" / "dagster.yaml").exists()
    return children


def stop_in_order(demo: Demo, sig: signal.Signals, children: dict[str, int], timeout_s: float = 300) -> float:
    """Send ``sig`` and check the stop was orderly: exit 0, no run FAILURE or left in flight, no process killed for
    not stopping, no process left, ports free, the demo's .env gone. Returns the seconds the stop took."""
    started = time.monotonic()
    demo.process.send_signal(sig)
    try:
        code = demo.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the demo did not stop within {timeout_s}s:\n{demo.tail()}") from None
    took = time.monotonic() - started
    demo.wait_for("demo stopped", timeout_s=10)
    demo.drain()
    assert code == 0, demo.tail()
    with demo.instance() as instance:
        records = instance.get_run_records()
        bad = [r.dagster_run for r in records if r.dagster_run.status in NOT_IN_ORDER]
        assert not bad, "\n\n".join(f"{r.job_name} {r.status}:\n{run_story(instance, r.run_id, demo.home)}"
                                    for r in bad) + "\n--- demo output\n" + demo.tail()
    # ...and each part stopped on its own within the stop timeout, every run ended when asked: nothing forced
    forced = [line for line in demo.seen if "did not stop within" in line or "did not end within" in line]
    assert not forced, demo.tail()
    # every child and everything it started (its process group) is gone, and the ports are free again
    assert {name: group_alive(pgid) for name, pgid in children.items()} == {name: False for name in children}
    assert port_is_free("127.0.0.1", demo.ui_port) and port_is_free("127.0.0.1", demo.sim_port)
    assert port_is_free("127.0.0.1", demo.api_port)
    assert not (demo.home / ".env").exists()  # the demo's settings go with it
    return took


def _eventually(check, timeout_s: float, what: str, demo: Demo) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f}s\n{demo.tail()}"
        time.sleep(1)


def _simulator_serving(demo: Demo, pid: int) -> bool:
    try:
        return httpx.get(f"{demo.sim}/v1/market/all", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _sidecar_serving(demo: Demo, pgid: int) -> bool:
    """The heartbeat is written by a process of the new sidecar's group, and it has received messages."""
    try:
        beat = json.loads((demo.home / "landing" / "_heartbeat.json").read_text())
        return os.getpgid(beat["pid"]) == pgid and beat["counters"]["messages"] > 0
    except (OSError, ValueError, KeyError):
        return False


def _slack(demo: Demo) -> list[dict]:
    try:
        return httpx.get(f"{demo.sim}/_sim/slack/messages", timeout=10).json()["messages"]
    except httpx.HTTPError:
        return []


def beside(demo: Demo, *args: str) -> subprocess.CompletedProcess:
    """A command typed in another shell: the project as working directory, CRYPTOFLOW_HOME and nothing else."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "CRYPTOFLOW_HOME": str(demo.home)}
    return subprocess.run([CRYPTOFLOW, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)


# ---- the demo stop test: also looped under load by tests/test_cli_demo_soak.py --------------------------------------


def demo_start_and_stop(home: Path, sig: signal.Signals = signal.SIGINT, *, extra_wait_s: float = 2.0,
                        beside_checks: bool = True) -> dict[str, float]:
    """Start the demo, wait for a streaming run in its loop, stop it with ``sig`` and check the stop was orderly.
    Returns the timings (ready, stop)."""
    started = time.monotonic()
    # No first-start backfill: its runs would be in flight at the stop, and a run busy inside DuckDB or a REST batch
    # on a loaded machine can outlast the stop's wait (then it is marked CANCELED: see the history test below).
    demo = Demo.start(home, "--no-history")
    try:
        children = ready(demo)
        ready_s = time.monotonic() - started
        env_file = (home / ".env").read_text()
        assert env_file.startswith(ENV_FILE_HEADER), env_file
        assert f"CRYPTOFLOW_UPBIT_REST_URL='{demo.sim}'" in env_file
        assert f"CRYPTOFLOW_SIM_PORT='{demo.sim_port}'" in env_file
        assert "SLACK_BOT_TOKEN" not in env_file and DEMO_SLACK_TOKEN not in env_file  # no token, not even the dummy
        with demo.instance() as instance:
            stream_run = streaming_run_in_its_loop(instance, timeout_s=300)
        if beside_checks:
            # Commands in another shell find the demo's settings: doctor checks the simulator and the sink, green.
            doctor = beside(demo, "doctor")
            assert doctor.returncode == 0, doctor.stdout + doctor.stderr
            assert f"{demo.sim}/v1/market/all" in doctor.stdout and f"sink at {demo.sim}/api/" in doctor.stdout
            # ...and query reads the demo's lake (the trades the streaming run has ingested)
            deadline = time.monotonic() + 180
            while True:
                query = beside(demo, "query", "--format", "json", "SELECT count(*) AS n FROM silver.trades")
                assert query.returncode == 0, query.stdout + query.stderr
                if json.loads(query.stdout)[0]["n"] > 0:
                    break
                assert time.monotonic() < deadline, "no trades in the demo's lake through `cryptoflow query`"
                time.sleep(3)
        time.sleep(extra_wait_s)
        stop_s = stop_in_order(demo, sig, children)
        with demo.instance() as instance:
            final = instance.get_run_by_id(stream_run).status
        # Asked to end by the platform's stop, the run ends as a terminated run does; its chunk in flight committed.
        assert final in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.SUCCESS), final
        if os.environ.get("CRYPTOFLOW_DEMO_TEST_VERBOSE"):
            print(demo.tail(60))
        return {"ready_s": ready_s, "stop_s": stop_s}
    finally:
        demo.kill_all()


def test_demo_starts_everything_and_ctrl_c_stops_all_of_it(cryptoflow_home):
    timings = demo_start_and_stop(cryptoflow_home, signal.SIGINT)
    print(f"demo ready in {timings['ready_s']:.1f}s, stopped in order in {timings['stop_s']:.1f}s")


def test_demo_restarts_a_part_that_dies_logs_and_alerts_it_and_sigterm_stops_in_order(cryptoflow_home):
    """kill -9 the sidecar and the simulator: each comes back (a new pid, serving), the restart is logged, and a
    service_restarted alert reaches the Slack sink through the outbox. Then SIGTERM stops everything in order."""
    demo = Demo.start(cryptoflow_home, "--no-history")
    try:
        children = ready(demo)
        # the simulator first: the Slack sink keeps its messages in memory, so each alert is looked for after it
        for name, serving in (("simulator", _simulator_serving), ("sidecar", _sidecar_serving)):
            old = children[name]
            os.killpg(old, signal.SIGKILL)
            demo.wait_for(re.compile(rf"{name} \(pid {old}\) exited unexpectedly with code -9 .* restarting it in 1s"),
                          timeout_s=30)
            line = demo.wait_for(re.compile(rf"restarted {name} \(pid \d+\)"), timeout_s=30)
            new = int(re.search(r"\(pid (\d+)\)", line).group(1))
            assert new != old and group_alive(new)
            children[name] = new
            _eventually(lambda: serving(demo, new), 120, f"the restarted {name} serving", demo)
            # alerted: recorded in the outbox by the demo, delivered to the simulator's Slack sink by the sensor
            _eventually(lambda: any(f"{name} restarted" in m["text"] for m in _slack(demo)), 240,
                        f"a {name} restart alert in Slack", demo)
        # the sidecar's log says it was restarted
        assert "restarting sidecar (exit code -9)" in (cryptoflow_home / "logs" / "sidecar.log").read_text()
        stop_in_order(demo, signal.SIGTERM, children)
    finally:
        demo.kill_all()


def test_demo_first_start_builds_its_history_and_a_later_start_launches_none(cryptoflow_home):
    """A first start finds the demo's days missing from silver and launches a backfill of them, visible in the UI's
    backfills; gold follows (the automation sensor), the banner's progress lines say so, and the API serves the
    history. A later start (its history step, run against the same demo) finds the days there and launches nothing.
    Two days of history keep it short."""
    from cryptoflow_core.settings import load_settings
    from cryptoflow_dagster.cli import demo_history

    start = (datetime.now(timezone.utc) - timedelta(days=2)).date()
    end = start + timedelta(days=1)
    demo = Demo.start(cryptoflow_home, "--history-start", start.isoformat())
    try:
        children = ready(demo)
        assert any("backfill" in line and "of 2 days launched" in line for line in demo.seen), demo.tail()
        demo.wait_for("history ready: 2 days in silver and gold", timeout_s=600)
        with demo.instance() as instance:
            assert [b.title for b in instance.get_backfills()] == [f"{demo_history.TITLE} {start}..{end}"]
        daily = httpx.get(f"{demo.api}/v1/volatility/daily", params={"exchange": "upbit", "market": "KRW-BTC"},
                          timeout=30).json()["data"]
        assert sorted({row["day"] for row in daily}) == [start.isoformat(), end.isoformat()]
        assert all(row["yang_zhang"] > 0 for row in daily)

        settings = load_settings({"CRYPTOFLOW_HOME": str(cryptoflow_home)})
        launched, note = demo_history.ensure_backfill(settings, demo.ui, start, end)
        assert (launched, note) == (None, "2 days in silver, 2 in gold (built on an earlier start)")
        with demo.instance() as instance:
            assert len(instance.get_backfills()) == 1
        stop_in_order(demo, signal.SIGINT, children)
    finally:
        demo.kill_all()
