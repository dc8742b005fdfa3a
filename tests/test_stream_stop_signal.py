"""A stop signal ends the streaming run in order, never inside a DuckDB query.

Dagster raises a stop signal wherever the run's main thread is, usually inside a DuckDB query; DuckDB 1.5 can then spin
forever cleaning up the interrupted query (the run outlives every stop timeout), or the interrupt surfaces as another
error and fails the run. The loop notes SIGTERM/SIGINT and ends after the step in flight: SUCCESS when the platform
stops, CANCELED when the run was terminated (UI, `cryptoflow demo`'s stop)."""

from __future__ import annotations

import os
import signal
import threading
import time

import dagster as dg
import pytest

from cryptoflow_dagster import lake
from cryptoflow_dagster.defs.streaming.jobs import streaming_ingest_job
from cryptoflow_dagster.streaming.loop import LoopLimits, StopRequested, run_ingest_loop
from cryptoflow_dagster.resources import build_resources
from streaming_sensor.batches import MicroBatcher
from tests.test_stream_job import query
from tests.test_stream_loop import binance_batch

LONG = LoopLimits(max_s=120, idle_s=120, poll_s=0.05, repair_every_s=0.0)


@pytest.fixture
def settings(settings):
    with lake.session(settings) as con:
        lake.ensure_schema(con)
    return settings


def test_a_signal_during_a_query_is_acted_on_after_it_and_the_loop_reports_and_raises(settings):
    b = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
    binance_batch(b, 1)()
    done = []

    def repair() -> None:  # a lake query in flight when the signal arrives
        os.kill(os.getpid(), signal.SIGTERM)
        with lake.session(settings, read_only=True) as con:
            done.append(con.execute("SELECT count(*) FROM range(30000000) t(i) WHERE i % 7 = 3").fetchone()[0])

    reports = []
    before = signal.getsignal(signal.SIGTERM)
    with lake.session(settings) as con, pytest.raises(StopRequested) as stopped:
        run_ingest_loop(con, settings.landing_dir, "run-1", LONG, repair=repair, report=reports.append)
    assert stopped.value.signum == signal.SIGTERM
    assert done == [30000000 // 7]  # the query finished: it was not interrupted
    assert [r.files for r in reports] == [1]  # what the loop ingested is reported on the way out
    assert query(settings, "SELECT count(*) FROM ops.ingested_files") == [(1,)]
    assert signal.getsignal(signal.SIGTERM) is before  # the process's own handlers are back


def _when_the_loop_runs(then) -> threading.Thread:
    """Call ``then`` once the streaming loop has taken over the stop signals (its op is past its start-up)."""
    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            handler = signal.getsignal(signal.SIGTERM)
            if "_stop_signals_deferred" in getattr(handler, "__qualname__", ""):
                time.sleep(0.5)
                then()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _run_streaming_job(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    config = {"ops": {"ingest_landing_files": {"config": {"max_seconds": 120, "idle_seconds": 120}}}}
    return streaming_ingest_job.execute_in_process(run_config=config, instance=instance, resources=build_resources(),
                                                   raise_on_error=False)


def test_the_platform_stopping_ends_the_streaming_run_as_success(settings):
    b = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
    binance_batch(b, 1)()
    with dg.instance_for_test() as instance:
        watcher = _when_the_loop_runs(lambda: os.kill(os.getpid(), signal.SIGTERM))
        result = _run_streaming_job(instance)
        watcher.join()
        assert result.success
        assert any("stopped by a signal" in (e.message or "") for e in instance.all_logs(result.run_id))
    assert query(settings, "SELECT count(*) FROM ops.ingested_files") == [(1,)]


def test_a_terminated_streaming_run_ends_canceled_not_failed(settings):
    """`cryptoflow demo`'s stop and the UI's Terminate: the run is CANCELING, then its process gets SIGINT."""
    b = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
    binance_batch(b, 1)()
    with dg.instance_for_test() as instance:
        def terminate() -> None:
            (record,) = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
            instance.report_run_canceling(record.dagster_run)
            os.kill(os.getpid(), signal.SIGINT)

        watcher = _when_the_loop_runs(terminate)
        result = _run_streaming_job(instance)
        watcher.join()
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.CANCELED
