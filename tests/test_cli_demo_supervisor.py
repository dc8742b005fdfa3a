"""The demo's service-manager parts without a whole demo: the $CRYPTOFLOW_HOME/.env it writes (and never clobbers),
restarts with capped backoff, and ending the runs in flight through the Dagster instance (never FAILURE or STARTED)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

import dagster as dg
from dagster._core.events import EngineEventData

from cryptoflow_core.settings import load_env_files, load_settings
from cryptoflow_dagster.cli import demo as demo_cli
from cryptoflow_dagster.cli.children import Children, Exited, Restarted, RestartPolicy
from cryptoflow_dagster.cli.demo import (
    DEMO_SLACK_TOKEN, ENV_BLOCK_BEGIN, ENV_BLOCK_END, ENV_FILE_HEADER, demo_env_values, plan, remove_env_file,
    stale_demo_values, write_env_file,
)
from cryptoflow_dagster.cli.services import end_runs
from cryptoflow_dagster.defs.streaming.jobs import streaming_ingest_job

NOW = datetime(2026, 2, 1, 12, 0, tzinfo=timezone.utc)


def _plan(home: Path, **env):
    args = argparse.Namespace(ui_host=None, ui_port=3999, sim_port=8999, history_start=None)
    return plan(args, {"CRYPTOFLOW_HOME": str(home), **env}, today=date(2026, 1, 31))


def _read(home: Path, environ: dict | None = None) -> dict:
    environ = {"CRYPTOFLOW_HOME": str(home)} if environ is None else environ
    load_env_files(environ)
    return environ


def test_the_env_file_points_another_shell_at_the_demo_and_holds_no_token(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home with 'quotes' and $HOME"
    home.mkdir()
    demo = _plan(home, SLACK_BOT_TOKEN="xoxb-a-real-secret")
    path = write_env_file(home, demo_env_values(demo), NOW)
    text = path.read_text()
    assert text.startswith(f"{ENV_FILE_HEADER} at 2026-02-01 12:00:00 UTC")
    assert "SLACK_BOT_TOKEN" not in text and "xoxb" not in text and DEMO_SLACK_TOKEN not in text
    seen = _read(home)
    settings = load_settings(seen)
    assert settings.home == home.resolve()  # quotes and $ survive: single-quoted values are never expanded
    assert settings.upbit_rest_url == settings.binance_rest_url == settings.fear_greed_url == "http://127.0.0.1:8999"
    assert settings.slack_api_url == "http://127.0.0.1:8999/api/" and settings.ui_port == 3999
    # the process environment still wins, as for every .env
    assert load_settings(_read(home, {"CRYPTOFLOW_HOME": str(home), "CRYPTOFLOW_UI_PORT": "4000"})).ui_port == 4000

    remove_env_file(home, demo_env_values(demo))
    assert not path.exists()


def test_a_persons_own_env_file_is_kept_and_the_demo_adds_then_removes_a_marked_block(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    own = "# mine\nSLACK_BOT_TOKEN=xoxb-mine-secret\nCRYPTOFLOW_SLACK_CHANNEL=#desk\nCRYPTOFLOW_SIM_PORT=7000\n"
    path = home / ".env"
    path.write_text(own)
    path.chmod(0o600)
    first = _plan(home, SLACK_BOT_TOKEN="xoxb-mine-secret")
    write_env_file(home, demo_env_values(first), NOW)
    text = path.read_text()
    assert text.startswith(own) and text.count(ENV_BLOCK_BEGIN) == 1 and text.rstrip().endswith(ENV_BLOCK_END)
    assert text.count("xoxb-mine-secret") == 1  # the person's line, never copied into the block
    assert path.stat().st_mode & 0o777 == 0o600  # the file keeps its mode
    seen = _read(home)
    assert seen["CRYPTOFLOW_SIM_PORT"] == "8999"  # the block wins while the demo runs
    assert seen["CRYPTOFLOW_SLACK_CHANNEL"] == "#desk" and seen["SLACK_BOT_TOKEN"] == "xoxb-mine-secret"

    # a later demo replaces its block, it does not stack another
    second = _plan(home)
    second = demo_cli.DemoPlan(second.settings, second.history_start, {**second.env, "CRYPTOFLOW_UI_PORT": "3998"},
                               second.logs_dir)
    write_env_file(home, demo_env_values(second), NOW)
    assert path.read_text().count(ENV_BLOCK_BEGIN) == 1 and "CRYPTOFLOW_UI_PORT='3998'" in path.read_text()
    remove_env_file(home, demo_env_values(first))  # not what is there now (another demo's): left alone
    assert "CRYPTOFLOW_UI_PORT='3998'" in path.read_text()
    remove_env_file(home, demo_env_values(second))
    assert path.read_text() == own  # byte for byte what the person wrote


def test_a_symlinked_env_file_is_not_written_through(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    target = tmp_path / "shared.env"
    target.write_text("CRYPTOFLOW_SIM_PORT=7000\n")
    (home / ".env").symlink_to(target)
    write_env_file(home, demo_env_values(_plan(home)), NOW)
    assert target.read_text() == "CRYPTOFLOW_SIM_PORT=7000\n" and (home / ".env").is_symlink()


def test_a_killed_demos_leftover_settings_are_not_inherited_by_the_next(tmp_path, monkeypatch):
    """A demo killed with SIGKILL leaves its .env; the next demo's CLI reads it, but plans from scratch."""
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    old = _plan(home)
    write_env_file(home, demo_env_values(old), NOW)
    assert stale_demo_values(home)["CRYPTOFLOW_SIM_PORT"] == "8999"
    environ = _read(home)  # what `cryptoflow demo` has after the CLI read the .env files
    fresh = demo_cli._without_stale_demo_values(environ)
    assert "CRYPTOFLOW_SIM_PORT" not in fresh and "CRYPTOFLOW_SLACK_API_URL" not in fresh
    assert fresh["CRYPTOFLOW_HOME"] == str(home)
    monkeypatch.setattr(demo_cli, "_exec_environment", lambda: {"CRYPTOFLOW_SIM_PORT"})  # exported by the person
    assert demo_cli._without_stale_demo_values(environ)["CRYPTOFLOW_SIM_PORT"] == "8999"


def test_backoff_doubles_to_its_cap_and_resets_after_a_healthy_run():
    policy = RestartPolicy(first_delay_s=1, max_delay_s=8, healthy_after_s=60)
    delays, previous = [], 0.0
    for _ in range(6):
        previous = policy.next_delay(previous, uptime_s=0.5)
        delays.append(previous)
    assert delays == [1, 2, 4, 8, 8, 8]
    assert policy.next_delay(8, uptime_s=61) == 1


def test_a_child_that_keeps_crashing_is_restarted_with_backoff_not_in_a_hot_loop(tmp_path):
    policy = RestartPolicy(first_delay_s=0.2, max_delay_s=0.8, healthy_after_s=30)
    log_path = tmp_path / "crasher.log"
    with Children(stop_timeout_s=5) as children:
        child = children.start("crasher", [sys.executable, "-c", "print('up'); raise SystemExit(3)"],
                               env=os.environ, log_path=log_path)
        exits, starts = [], [(time.monotonic(), child.process.pid)]
        deadline = time.monotonic() + 20
        while len(exits) < 5 and time.monotonic() < deadline:
            for event in children.supervise(policy):
                if isinstance(event, Exited):
                    assert event.returncode == 3
                    exits.append((time.monotonic(), event.delay_s))
                elif isinstance(event, Restarted):
                    starts.append((time.monotonic(), event.child.process.pid))
            time.sleep(0.02)
        assert [round(d, 1) for _, d in exits] == [0.2, 0.4, 0.8, 0.8, 0.8]
        # each restart waited at least its delay after the exit, and every start is a new process
        for (exited_at, delay), (started_at, _) in zip(exits, starts[1:]):
            assert started_at - exited_at >= delay - 0.05
        assert len({pid for _, pid in starts}) == len(starts)
        assert child.restarts == len(starts) - 1
    text = log_path.read_text()
    assert text.count("up") == len(starts) and "restarting crasher (exit code 3)" in text


def test_a_stop_ends_runs_in_flight_as_canceled_never_failure_or_started(cryptoflow_home):
    """Runs the instance holds in flight when the platform stops: one not started yet is canceled at once, so is one
    whose process is gone; one whose process does not end when asked is marked canceled after the timeout (and
    named) and its process killed. None is left STARTED, none ends FAILURE; one not in flight is left alone."""
    home = cryptoflow_home / "dagster_home"
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time\n"
                                 "signal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(120)"])
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            starting = instance.create_run_for_job(streaming_ingest_job, status=dg.DagsterRunStatus.STARTING)
            orphan = instance.create_run_for_job(streaming_ingest_job, status=dg.DagsterRunStatus.STARTED)
            instance.report_engine_event("Started process for run (pid: 999999999).", orphan,
                                         EngineEventData.in_process(999999999))
            hung = instance.create_run_for_job(streaming_ingest_job, status=dg.DagsterRunStatus.STARTED)
            instance.report_engine_event(f"Started process for run (pid: {stubborn.pid}).", hung,
                                         EngineEventData.in_process(stubborn.pid))
            waiting = instance.create_run_for_job(streaming_ingest_job, status=dg.DagsterRunStatus.NOT_STARTED)
        began = time.monotonic()
        forced = end_runs(home, timeout_s=3, poll_s=0.1)
        assert time.monotonic() - began < 30
        assert forced == [hung.run_id]
        assert stubborn.wait(timeout=10) == -9  # asked (SIGINT, ignored), then killed
        with dg.DagsterInstance.from_config(str(home)) as instance:
            runs = (starting, orphan, hung, waiting)
            status = {r.run_id: instance.get_run_by_id(r.run_id).status for r in runs}
            assert status == {starting.run_id: dg.DagsterRunStatus.CANCELED,
                              orphan.run_id: dg.DagsterRunStatus.CANCELED,
                              hung.run_id: dg.DagsterRunStatus.CANCELED,
                              waiting.run_id: dg.DagsterRunStatus.NOT_STARTED}  # not in flight (queued ones too)
            messages = {r.run_id: " ".join(e.message or "" for e in instance.all_logs(r.run_id)) for r in runs}
            assert "did not end within 3s" in messages[hung.run_id]
            assert "process was already gone" in messages[orphan.run_id]
    finally:
        stubborn.kill()
        stubborn.wait()
