"""The streaming run's loop: ingest landing files as they land, for a bounded time, then hand over to the next run.

Why a loop and not one pass per run: a Dagster run costs seconds before its first line of work (queue, a new process
that imports the code location), far more than ingesting one micro-batch. One pass per run put silver 20-30 s behind
the exchange (docs/decisions/0006-long-lived-streaming-run.md); a run that keeps polling the landing folder ingests a
file within about a poll interval of its rename.

Why bounded: a run lives at most ``max_s`` (a redeploy's code takes over at the next run) and ends early after
``idle_s`` without a new file (a stopped stream does not hold a run slot). Everything the loop does is the same
exactly-once ``ingest_pending`` a single pass does, so a run killed at any point loses and doubles nothing.

Why no gap between runs (ADR 0019, handover.py): past ``max_s`` the loop ends only once the next run, started ahead of
time, waits for the silver-writer lock (or ``2 x handover_s`` later, if none comes); it hands that run its landing cursor.

While a run is in flight it is the only silver writer (the sensor and the gap-repair schedule wait for it), so it also
detects and repairs trade gaps every ``repair_every_s``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cryptoflow_dagster.streaming.handover import Handover, StopWaiting
from cryptoflow_dagster.streaming.ingest import CHUNK_FILES, IngestResult, ingest_pending
from cryptoflow_dagster.defs.streaming.tickers import ingest_tickers
from cryptoflow_core import landing_files

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class LoopLimits:
    max_s: float  # 0: one pass over what is pending, then return
    idle_s: float
    poll_s: float
    repair_every_s: float
    report_every_s: float = 30.0  # how often the run reports materializations (the UI plots them over time)
    handover_s: float = 0.0  # > 0: past max_s, keep going until the next run waits to take over (at most 2 x this)

    @classmethod
    def from_settings(cls, settings) -> LoopLimits:
        return cls(max_s=settings.stream_run_max_s, idle_s=settings.stream_run_idle_s, poll_s=settings.stream_poll_s,
                   repair_every_s=settings.stream_gap_repair_s, handover_s=settings.stream_handover_s)

    def done(self, ran_s: float, successor_ready: Callable[[], bool]) -> bool:
        """Has a run that ingested for ``ran_s`` reached its end (idle aside)?"""
        if ran_s < self.max_s:
            return False
        if self.handover_s <= 0 or self.max_s <= 0:
            return True
        return ran_s >= self.max_s + 2 * self.handover_s or successor_ready()


def merge(into: IngestResult, part: IngestResult) -> None:
    into.files += part.files
    into.bronze_rows += part.bronze_rows
    into.silver_rows += part.silver_rows
    into.dead_letters += part.dead_letters
    into.skipped_files += part.skipped_files
    into.ticker_rows += part.ticker_rows
    for key, value in part.gold.items():
        into.gold[key] = into.gold.get(key, 0) + value
    into.days |= part.days


def run_ingest_loop(
    con: duckdb.DuckDBPyConnection,
    root: Path,
    run_id: str | None,
    limits: LoopLimits,
    *,
    repair: Callable[[], None] | None = None,
    report: Callable[[IngestResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    handover: Handover | None = None,
    on_turn: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> IngestResult:
    """Ingest pending files, then every new one, until a limit is reached. Returns the run's totals.

    ``repair`` runs every ``limits.repair_every_s``, ``report`` gets what was ingested since its last call (at most every
    ``limits.report_every_s``, and once at the end), ``should_stop`` is asked between looks (another silver writer waits).
    SIGTERM or SIGINT ends the loop after the lake transaction or gap-repair pass in flight (:class:`StopRequested`).
    ``handover``: the silver-writer lock is taken first (waiting for the run before, which then ends, handover.py),
    ``on_turn()`` is called once it is held, and it is handed on with the landing cursor at the end.
    """
    total, unreported = IngestResult(), IngestResult()
    with _stop_signals_deferred() as stop_signal:
        cursor = None
        if handover is not None:
            try:
                cursor = handover.take_turn(lambda: bool(stop_signal))
            except StopWaiting:
                raise StopRequested(stop_signal.signum) from None
            if on_turn is not None:
                on_turn()
        new_files = landing_files.NewFiles(root, channels=landing_files.CHANNELS)
        if cursor is not None:  # the last run's reader state: no listing of the whole landing folder at start
            new_files = landing_files.NewFiles.from_cursor(root, cursor)
            new_files.channels = landing_files.CHANNELS
        start = last_new = last_repair = last_report = clock()
        successor_ready = handover.successor_ready if handover is not None else (lambda: False)
        try:
            while not stop_signal:
                # The first look lists every file (a backlog is taken in one go); later ones only names near the newest.
                files = new_files.poll()
                if files:
                    trades = [f for f in files if f.channel == "trade"]
                    part = IngestResult()
                    # one chunk (one lake transaction) per call, so that a stop signal ends the loop between two
                    for first in range(0, len(trades), CHUNK_FILES):
                        if stop_signal:
                            break
                        merge(part, ingest_pending(con, root, run_id, files=trades[first:first + CHUNK_FILES]))
                    if not stop_signal:
                        part.ticker_rows, dead = ingest_tickers(con, files, run_id)
                        part.dead_letters += dead
                        new_files.take(files)
                    merge(total, part)
                    merge(unreported, part)
                    if part.files or part.ticker_rows:
                        last_new = clock()
                if stop_signal:
                    break
                now = clock()
                # No repair pass in the run's last handover_s: one can hold the loop for seconds (detection scans
                # silver, fetching has its budget), and a pass in flight at the end delays the hand-over (ADR 0019);
                # the successor's passes take over.
                near_end = limits.handover_s > 0 and now - start >= limits.max_s - limits.handover_s
                if repair is not None and limits.max_s > 0 and not near_end and now - last_repair >= limits.repair_every_s:
                    _guarded(repair, "gap repair")
                    last_repair = clock()
                due = now - last_report >= limits.report_every_s
                if report is not None and (unreported.files or unreported.ticker_rows) and due:
                    report(unreported)
                    unreported, last_report = IngestResult(), now
                stop = should_stop is not None and should_stop()
                if limits.done(now - start, successor_ready) or now - last_new >= limits.idle_s or stop or stop_signal:
                    break
                sleep(limits.poll_s)
        finally:
            if handover is not None:  # also on a stop signal or an error: the next writer starts where this one ended
                handover.hand_over(new_files.cursor())
            # also when the loop ends on a stop signal or an error: what it counted so far is reported
            if report is not None and (unreported.files or unreported.ticker_rows):
                report(unreported)
    if stop_signal:
        raise StopRequested(stop_signal.signum)
    return total


class StopRequested(KeyboardInterrupt):
    """The loop ended on SIGTERM/SIGINT after finishing the lake transaction it was in (see _stop_signals_deferred).

    A KeyboardInterrupt, so whoever runs the loop treats it as the stop signal it is (jobs.py: an orderly end, or a
    cancellation when the run was terminated from the UI or by ``cryptoflow demo``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signal.Signals(signum).name}")
        self.signum = signum


class _StopSignal:
    signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextmanager
def _stop_signals_deferred() -> Iterator[_StopSignal]:
    """While the loop runs, SIGTERM and SIGINT are noted, not raised: the loop ends at its next step.

    Dagster turns a stop signal into an exception raised wherever the run's main thread is, which is usually inside a
    DuckDB query. That is not safe: DuckDB 1.5 can spin forever cleaning up a query interrupted that way (the
    connection's next statement never returns: the run then outlives every stop timeout and is killed), and an
    interrupt surfacing as some other error fails the run. Deferred, a stop costs at most the chunk in flight (one
    lake transaction, which commits) or a gap-repair pass, and the run ends in order every time. Outside the main
    thread (signals cannot be handled there) nothing changes.
    """
    noted = _StopSignal()
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return

    def note(signum: int, frame: object) -> None:
        if noted.signum is None:
            noted.signum = signum
            log.warning("stop signal %s: the streaming loop ends after the step in flight",
                        signal.Signals(signum).name)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, note)
    try:
        yield noted
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python


def _guarded(fn: Callable[[], None], what: str) -> None:
    """A failing side task (gap repair) is logged and retried next time; it never stops ingestion."""
    try:
        fn()
    except Exception:
        log.exception("%s failed inside the streaming run; ingestion goes on and the next pass retries", what)
