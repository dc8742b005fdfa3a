"""Sensors that record alerts (market rules on landed files, sidecar heartbeat, failed runs) and deliver the outbox.

Every source writes gold.alerts (the outbox), and ``alert_delivery_sensor`` delivers and retries what is pending, so
backoff and dedupe live in one place (alerting/delivery.py). Market alerts are the time-critical ones:
``market_alert_sensor`` posts them first and records them after, with their outcomes (alerting/in_flight.py holds them
in between).
"""

import json
import math
import statistics
import threading
import time
from collections import deque
from datetime import datetime, timedelta, timezone

import dagster as dg

from cryptoflow_dagster.alerting import outbox
from cryptoflow_dagster.alerting import in_flight
from cryptoflow_dagster.alerting.delivery import deliver_pending, post_then_record
from cryptoflow_dagster.alerting.hooks import landing_alerts
from cryptoflow_core.heartbeat import heartbeat_files, heartbeat_path, last_beat
from cryptoflow_dagster.alerting.heartbeat import sidecar_transition
from cryptoflow_dagster.alerting.runs import run_failure_alert
from cryptoflow_dagster.resources import SlackAlertsResource
from cryptoflow_dagster.resources import LakeResource
from cryptoflow_core import landing_files

RUNNING = dg.DefaultSensorStatus.RUNNING


# A tick evaluates at most this many files (oldest first): after downtime, the backlog is worked off over a few ticks.
_ALERT_FILES_PER_TICK = 200
# On its first tick the sensor starts this far back, not at the first file ever landed.
_ALERT_START_BACK = timedelta(minutes=2)


# While a tick watches, it looks at the landing folder this often (a listing of names, no lake query).
_WATCH_POLL_S = 0.2
# Dagster's sensor daemon looks at every sensor once a loop, and a loop starts every 5 s (MIN_INTERVAL_LOOP_TIME in
# dagster/_daemon/sensor.py, not configurable); the next tick starts at the first loop after this one ended. A tick
# that ends just before a loop is followed at once; one that ends just after leaves the folder unwatched for up to 5 s.
# The loops keep their phase (measured at 250 markets: tick starts 60.04-60.14 s apart), and the daemon tells each tick
# when it started the previous one (last_tick_completion_time, despite the name): the grid a tick ends on.
_DAEMON_LOOP_S = 5.0
# How long before a loop the tick lets go: the daemon's bookkeeping after the call, and the loops' drift.
_HANDOVER_MARGIN_S = 0.5
# A tick never watches past this (Dagster fails a sensor evaluation after 60 s).
_TICK_LIMIT_S = 55.0
# The batches' recent durations (this process): a batch that would not end before the tick's planned end is not begun.
_recent_batches_s: deque[float] = deque(maxlen=20)
# Per lake, the market alerts this process posted lately: the check before a post counts them as recorded
# (outbox.unrecorded).
_recently_posted: dict[tuple[str, str, str], in_flight.RecentlyPosted] = {}
# When the last tick of this process ended (wall clock), to report the hand-over gap.
_last_tick_end: list[float] = []


@dg.sensor(name="market_alert_sensor", minimum_interval_seconds=1, default_status=RUNNING,
           description="Evaluates the market rules on trade files as soon as they land (before silver), posts what "
                       "fires to Slack at once and records it in gold.alerts. Each tick watches the landing folder "
                       "for about CRYPTOFLOW_ALERT_WATCH_S seconds.")
def market_alert_sensor(context: dg.SensorEvaluationContext, lake: LakeResource, slack: SlackAlertsResource):
    settings = lake.settings()
    root = settings.landing_dir
    if context.cursor:
        new_files = landing_files.NewFiles.from_cursor(root, context.cursor)
    else:
        new_files = landing_files.NewFiles(root, start_after=datetime.now(timezone.utc) - _ALERT_START_BACK)
    # Dagster's sensor daemon starts a tick at most every 5 s (not configurable): a file landing between two ticks
    # waits for the next one. So one tick keeps watching for about alert_watch_s (45 s): files are evaluated within
    # _WATCH_POLL_S of landing and only the hand-over between ticks is blind (ADR 0011), ended just before a daemon
    # loop so that the next tick follows at once. The lake is opened only when there is a file, so other sensors of
    # this code server are not held behind the lake's SQLite session lock while this one waits.
    started, started_wall = time.monotonic(), time.time()
    gap_s = started_wall - _last_tick_end[-1] if _last_tick_end else None
    last_tick = context.last_tick_completion_time  # the daemon's start of the previous tick: on the loops' grid
    grid = started - (started_wall - last_tick) if last_tick and 0 < started_wall - last_tick < 600 else None
    watch = _Watch(started, settings.alert_watch_s, grid)
    in_server = _code_server_running()
    in_flight_file = in_flight.path_for(settings.home)
    recent = _recently_posted.setdefault((str(settings.home), settings.lake_catalog, settings.lake_data_path),
                                         in_flight.RecentlyPosted())
    seen = fired = sent = batches = 0
    slowest_batch_s = 0.0
    while True:
        files = new_files.poll()[:_ALERT_FILES_PER_TICK]
        if files:
            batch_started = time.monotonic()
            with lake.connect() as con:
                # Posted first, recorded after in one commit: each lake commit waits for the writers' turn (behind a
                # streaming chunk), so none stands between the shock and its message (in_flight.py keeps the promise
                # of the outbox meanwhile). The delivery sensor retries what could not go. Without a token they are
                # recorded pending, as elsewhere.
                opened = time.monotonic()
                in_flight.recover(con, in_flight_file)  # what a stopped tick left between its post and its record
                poster = slack.poster()
                took: dict[str, float] = {}
                alerts = landing_alerts(con, root, files, settings, timings=took)
                evaluated = time.monotonic()
                if poster is not None:
                    alerts, report = post_then_record(con, poster, alerts, in_flight_file, slack.base_ui_url(),
                                                      timings=took, recently_posted=recent)
                else:
                    alerts, report = outbox.record(con, alerts), None
            new_files.take(files)
            context.update_cursor(new_files.cursor())
            seen, fired, sent = seen + len(files), fired + len(alerts), sent + (len(report.sent) if report else 0)
            batch_s = time.monotonic() - batch_started
            if alerts:  # where an alert's time went: the session (other sensors of this process), rules, Slack, lake
                context.log.info("market alerts: %d files, %d alerts, sent %d in %.2f s (lake session %.2f s, "
                                 "files read %.2f s, rules %.2f s, posted %.2f s, recorded %.2f s)",
                                 len(files), len(alerts), len(report.sent) if report else 0, batch_s,
                                 opened - batch_started, took.get("read", 0.0), took.get("evaluated", 0.0),
                                 took.get("posted", 0.0), took.get("recorded", time.monotonic() - evaluated))
            batches += 1
            slowest_batch_s = max(slowest_batch_s, batch_s)
            _recent_batches_s.append(batch_s)
        typical_batch_s = statistics.median(_recent_batches_s) if _recent_batches_s else 0.0
        if len(files) == _ALERT_FILES_PER_TICK or not watch.goes_on(time.monotonic(), typical_batch_s):
            break  # a backlog is worked off over the next ticks, each a fresh evaluation with its own cursor commit
        if in_server and not _code_server_running():
            break  # the code server is stopping and waits for this call: let it go; the next server resumes the cursor
        time.sleep(_WATCH_POLL_S)
    context.update_cursor(new_files.cursor())
    _last_tick_end[:] = [time.time()]
    since_last = f"; {gap_s:.2f} s after the last tick" if gap_s is not None else ""
    if not seen:
        return dg.SkipReason("no new trade files" + since_last)
    return dg.SkipReason(f"{seen} files in {batches} batches (slowest {slowest_batch_s:.2f} s), {fired} alerts"
                         + (f", sent {sent}" if fired else "") + since_last)


class _Watch:
    """How long a tick started at ``started`` watches: until just before the first daemon loop ``watch_s`` after its
    start (the loops fall every 5 s from ``grid``, a moment the daemon started a tick; without one, from ``started``).
    It does not look again when a batch as long as the recent ones would run past that moment: ending then, the next
    tick starts at that loop. A batch that still runs past it moves the end to just before the next loop, never past
    _TICK_LIMIT_S. ``watch_s`` 0: one look."""

    def __init__(self, started: float, watch_s: float, grid: float | None = None) -> None:
        self.started, self.once, self.grid = started, watch_s <= 0, started if grid is None else grid
        self.until = self._before_loop(started + watch_s - _HANDOVER_MARGIN_S)

    def _before_loop(self, moment: float) -> float:
        """Just before the first loop that is not before ``moment`` by the margin."""
        loops = math.ceil((moment + _HANDOVER_MARGIN_S - self.grid) / _DAEMON_LOOP_S)
        return self.grid + loops * _DAEMON_LOOP_S - _HANDOVER_MARGIN_S

    def goes_on(self, now: float, batch_s: float = 0.0) -> bool:
        """Whether to look again after a pause of _WATCH_POLL_S (and maybe run a batch of ``batch_s``)."""
        if self.once:
            return False
        if now > self.until:  # a batch ran past the loop this tick meant to end before
            self.until = self._before_loop(now)
        return now + _WATCH_POLL_S + batch_s <= self.until and self.until - self.started <= _TICK_LIMIT_S


# Dagster's gRPC code server keeps a thread by this name for as long as it serves, and ends it when told to stop
# (SIGTERM, ShutdownServer); the server then waits for calls in flight, a watching tick included. Dagster offers no
# public signal for this, so the name is the signal; were it renamed, a stop would wait out the tick's deadline
# (tests/test_cli_demo.py then fails: the demo's stop has to kill the code server and the daemon).
_SERVER_THREAD = "grpc-server-cleanup"


def _code_server_running() -> bool:
    return any(t.name == _SERVER_THREAD for t in threading.enumerate())


@dg.sensor(name="alert_delivery_sensor", minimum_interval_seconds=3, default_status=RUNNING,
           description="Delivers pending gold.alerts rows to Slack (retries with backoff, Retry-After honoured).")
def alert_delivery_sensor(context: dg.SensorEvaluationContext, lake: LakeResource, slack: SlackAlertsResource):
    with lake.connect() as con:
        report = deliver_pending(con, slack.poster(), slack.base_ui_url(), budget_s=20)
    summary = (f"sent {len(report.sent)}, failed {len(report.failed)}, retry later {len(report.retry_later)}, "
               f"expired claims {report.expired_claims}" + (f"; {report.skipped_reason}" if report.skipped_reason else ""))
    if report.sent or report.failed or report.retry_later:
        context.log.info("alert delivery: %s", summary)
    return dg.SkipReason(summary)


@dg.sensor(name="sidecar_heartbeat_sensor", minimum_interval_seconds=10, default_status=RUNNING,
           description="One alert when a sidecar's heartbeat (each shard's) goes stale, one when it is fresh again.")
def sidecar_heartbeat_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    settings = lake.settings()
    states = _heartbeat_states(context.cursor)
    files = heartbeat_files(settings.landing_dir)
    now = datetime.now(timezone.utc)
    alerts, summary = [], []
    for shard in sorted(set(files) | set(states)):  # a shard seen before whose file vanished is down, not forgotten
        state = states.get(shard, {"down": False, "seen": False})
        beat, extra = last_beat(files.get(shard) or heartbeat_path(settings.landing_dir, shard))
        down, alert = sidecar_transition(state["down"], beat, now, settings.heartbeat_stale_s, state["seen"], extra, shard)
        if alert is not None:
            alerts.append(alert)
            context.log.warning("%s", alert.message)
        states[shard] = {"down": down, "seen": state["seen"] or beat is not None}
        summary.append(f"{shard or 'sidecar'} {'down' if down else 'up'}")
    if alerts:
        with lake.connect() as con:
            outbox.record(con, alerts)
    context.update_cursor(json.dumps(states))
    return dg.SkipReason("; ".join(summary) or "no sidecar heartbeat yet")


def _heartbeat_states(cursor: str | None) -> dict[str, dict]:
    """Per shard {"down", "seen"}; a cursor from before shards were watched ({"down", "seen"}) is the unsharded one."""
    if not cursor:
        return {}
    state = json.loads(cursor)
    return {"": state} if "down" in state else state


def _step_error(event: dg.DagsterEvent) -> str:
    data = event.step_failure_data
    if data is not None and data.error is not None:
        error = data.error
        while error.cause is not None:  # Dagster wraps the op's own exception; the innermost one says what happened
            error = error.cause
        return f"{event.step_key}: {error.message.strip()}"
    return event.message or ""


@dg.run_failure_sensor(name="run_failure_alert_sensor", minimum_interval_seconds=10, default_status=RUNNING,
                       description="Every failed run of this code location's jobs becomes one Slack alert.")
def run_failure_alert_sensor(context: dg.RunFailureSensorContext, lake: LakeResource):
    run = context.dagster_run
    step_errors = [_step_error(e) for e in context.get_step_failure_events()]
    alert = run_failure_alert(run.run_id, run.job_name, context.failure_event.message or "run failed", step_errors,
                              datetime.now(timezone.utc), run.tags.get("dagster/partition"))
    with lake.connect() as con:
        outbox.record(con, [alert])
