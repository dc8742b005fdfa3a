"""The hand-over between streaming runs (ADR 0019): the next run is started ahead of time, waits for the silver-writer
lock, and the run in flight ends only once it waits; it hands over its landing cursor; nothing is lost or doubled.

Real processes (the run in flight is a separate Python process with its own lake connection), a real DuckLake, real
landing files, a real Dagster instance for the sensor's decision.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import dagster as dg
import pytest

from cryptoflow_dagster import lake
from cryptoflow_dagster.defs.streaming.jobs import streaming_ingest_job
from cryptoflow_dagster.defs.streaming.repair import gap_repair_job
from cryptoflow_dagster.defs.streaming.sensors import INGESTING_SINCE_TAG, handover_due
from cryptoflow_dagster.streaming.handover import NEXT, Handover, StopWaiting, lock_dir
from cryptoflow_dagster.streaming.loop import LoopLimits, run_ingest_loop
from streaming_sensor.batches import MicroBatcher
from tests.test_stream_job import T0, binance, land, query

RUN_IN_FLIGHT = r"""
import sys
from cryptoflow_core.settings import load_settings
from cryptoflow_dagster import lake
from cryptoflow_dagster.streaming.handover import Handover, lock_dir
from cryptoflow_dagster.streaming.loop import LoopLimits, run_ingest_loop

settings = load_settings()
limits = LoopLimits(max_s=float(sys.argv[1]), idle_s=600, poll_s=0.1, repair_every_s=1e9, handover_s=600)
with lake.session(settings) as con:
    total = run_ingest_loop(con, settings.landing_dir, "run-1", limits, handover=Handover(lock_dir(settings.home), "run-1"),
                            on_turn=lambda: print("turn", flush=True))
print("done", total.files, flush=True)
"""


def batch(b: MicroBatcher, first: int, n: int = 50) -> int:
    for i in range(first, first + n):
        land(b, "binance", "BTCUSDT", i, T0 + i, binance("BTCUSDT", i, T0 + i, "70000.0", "0.001"))
    b.flush()
    return first + n


def test_the_run_in_flight_ends_only_when_its_successor_waits_and_hands_it_the_cursor(settings):
    with lake.session(settings) as con:
        lake.ensure_schema(con)
    b = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
    n = batch(b, 0)
    with subprocess.Popen([sys.executable, "-c", RUN_IN_FLIGHT, "1"], stdout=subprocess.PIPE, text=True,
                          env=os.environ.copy()) as first:
        assert first.stdout.readline().strip() == "turn"
        for _ in range(6):  # files keep landing past its 1 s maximum: with no successor, it keeps ingesting them
            n = batch(b, n)
            time.sleep(0.5)
        assert first.poll() is None, "the run in flight ended before a successor took over"

        successor = Handover(lock_dir(settings.home), "run-2")
        landing_meanwhile = threading.Thread(target=lambda: [batch(b, start) for start in (n, n + 50)])
        with lake.session(settings) as con:
            # max_s 0: once it holds the lock, one pass over what the cursor has not taken yet
            limits = LoopLimits(max_s=0, idle_s=600, poll_s=0.1, repair_every_s=1e9, handover_s=600)
            landing_meanwhile.start()
            second = run_ingest_loop(con, settings.landing_dir, "run-2", limits, handover=successor)
        landing_meanwhile.join()
        n += 100
        out, _ = first.communicate(timeout=60)
    assert first.returncode == 0
    first_files = int(out.split()[-1])
    assert successor.waited_s > 0  # it waited for the run in flight, which then ended
    # the successor's pass took what the first run had not, and nothing twice: a second pass finds nothing
    with lake.session(settings) as con:
        limits = LoopLimits(max_s=0, idle_s=600, poll_s=0.1, repair_every_s=1e9)
        rest = run_ingest_loop(con, settings.landing_dir, "run-3", limits)
    files = b.files_written
    assert first_files + second.files + rest.files == files, (first_files, second.files, rest.files, files)
    assert query(settings, "SELECT count(*), count(DISTINCT trade_id) FROM silver.trades") == [(n, n)]
    assert query(settings, "SELECT count(*) FROM ops.ingested_files") == [(files,)]
    assert not (lock_dir(settings.home) / NEXT).exists()  # the successor withdrew its announcement


def test_a_successor_announces_itself_and_takes_the_cursor_left_for_it(tmp_path):
    current, successor = Handover(tmp_path, "run-1"), Handover(tmp_path, "run-2")
    assert current.take_turn(lambda: False) is None  # the lock was free: a cold start, no cursor
    assert not current.successor_ready()
    got: list = []
    waiting = threading.Thread(target=lambda: got.append(successor.take_turn(lambda: False)))
    waiting.start()
    deadline = time.monotonic() + 30
    while not current.successor_ready() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert current.successor_ready()
    current.hand_over('{"after": "x", "taken": []}')
    waiting.join(30)
    assert got == ['{"after": "x", "taken": []}'] and successor.lock.held
    successor.hand_over(None)


def test_a_waiting_successor_stops_on_a_signal_and_a_dead_one_is_not_waited_for(tmp_path):
    current = Handover(tmp_path, "run-1")
    current.take_turn(lambda: False)
    stopping = threading.Event()
    waiting = Handover(tmp_path, "run-2")
    raised: list = []

    def wait() -> None:
        try:
            waiting.take_turn(stopping.is_set)
        except StopWaiting as exc:
            raised.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    deadline = time.monotonic() + 30
    while not current.successor_ready() and time.monotonic() < deadline:
        time.sleep(0.01)
    stopping.set()
    thread.join(30)
    assert raised and not waiting.lock.held and not current.successor_ready()
    # an announcement by a process that died is no successor
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / NEXT).write_text(f"{dead.stdout.strip()} run-9")
    assert not current.successor_ready()
    current.hand_over(None)


@pytest.mark.parametrize("ran_s, ready, handover_s, done", [
    (9, True, 30, False),  # before its maximum: never
    (10, False, 30, False),  # at it, no successor yet: keeps ingesting
    (10, True, 30, True),  # a successor waits: ends
    (70, False, 30, True),  # no successor after 2 x handover_s: ends (the sensor starts one the cold way)
    (10, False, 0, True),  # hand-over off: ends at its maximum, as before ADR 0019
])
def test_a_run_ends_past_its_maximum_once_its_successor_waits(ran_s, ready, handover_s, done):
    limits = LoopLimits(max_s=10, idle_s=30, poll_s=0.25, repair_every_s=60, handover_s=handover_s)
    assert limits.done(ran_s, lambda: ready) is done


def _started_run(instance, job: dg.JobDefinition, tags: dict) -> str:
    run = instance.create_run_for_job(job, run_id=str(uuid.uuid4()), tags=tags)
    instance.handle_run_event(run.run_id, dg.DagsterEvent(
        event_type_value=dg.DagsterEventType.RUN_START.value, job_name=run.job_name, message="started"))
    return run.run_id


def test_the_sensor_asks_for_a_successor_handover_s_before_the_run_in_flight_reaches_its_maximum(dagster_instance):
    instance, now = dagster_instance, time.time()
    current = _started_run(instance, streaming_ingest_job, {INGESTING_SINCE_TAG: f"{now - 200:.3f}"})
    assert handover_due(instance, 300, 45, now) is None  # 200 s in: not yet
    assert handover_due(instance, 300, 45, now + 60) == current  # 260 s in: 45 s before its end
    assert handover_due(instance, 300, 0, now + 60) is None  # hand-over off
    _started_run(instance, streaming_ingest_job, {})  # the successor, started: no second one
    assert handover_due(instance, 300, 45, now + 60) is None


def test_no_successor_while_a_gap_repair_run_waits_for_the_slot(dagster_instance):
    instance, now = dagster_instance, time.time()
    _started_run(instance, streaming_ingest_job, {INGESTING_SINCE_TAG: f"{now - 290:.3f}"})
    assert handover_due(instance, 300, 45, now) is not None
    _started_run(instance, gap_repair_job, {})
    assert handover_due(instance, 300, 45, now) is None


def test_the_platform_stopping_while_a_successor_waits_ends_it_as_success_having_written_nothing(settings):
    """Stopping never fails a run (ADR 0006): a successor waiting for its turn ends SUCCESS, withdraws its
    announcement, and leaves the landed files to whoever writes next."""
    from tests.test_stream_stop_signal import _run_streaming_job, _when_the_loop_runs

    with lake.session(settings) as con:
        lake.ensure_schema(con)
    b = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
    batch(b, 0)
    current = Handover(lock_dir(settings.home), "run-1")
    current.take_turn(lambda: False)  # the run in flight holds the lock and never hands it over here

    def when_announced() -> None:
        deadline = time.monotonic() + 60
        while not current.successor_ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    with dg.instance_for_test() as instance:
        watcher = _when_the_loop_runs(when_announced)
        result = _run_streaming_job(instance)
        watcher.join()
        assert result.success
        assert any("stopped by a signal" in (e.message or "") for e in instance.all_logs(result.run_id))
    assert not current.successor_ready() and not (lock_dir(settings.home) / NEXT).exists()
    assert query(settings, "SELECT count(*) FROM ops.ingested_files") == [(0,)]
    current.hand_over(None)


def test_no_gap_repair_pass_starts_in_the_runs_last_handover_seconds(settings):
    """A pass can hold the loop for seconds; one in flight at the run's end would delay the hand-over."""
    repairs: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    limits = LoopLimits(max_s=100, idle_s=1000, poll_s=5, repair_every_s=10, handover_s=30)
    run_ingest_loop(None, settings.landing_dir, "run-1", limits, repair=lambda: repairs.append(now[0]),
                    clock=lambda: now[0], sleep=sleep)
    assert repairs and max(repairs) < 70 <= now[0]  # passes every 10 s until 30 s before the end, none after
    assert len(repairs) == 6
