"""The Dagster sensor that turns landed micro-batches into streaming runs.

The cursor is the newest landing file name seen. A run is requested only when no streaming (or gap-repair) run is queued or in flight,
and the run itself takes every file not yet in ``ops.ingested_files``, then keeps taking new ones as they land for a
while (streaming/loop.py): runs never pile up behind a fast stream, and exactly-once is the lake transaction's job,
not the cursor's. One exception (ADR 0019): ``CRYPTOFLOW_STREAM_HANDOVER_S`` before the run in flight reaches its
maximum, its successor is requested, so that it is started and waiting when the current run ends (streaming/handover.py).
"""

from __future__ import annotations

import time

import dagster as dg

from cryptoflow_dagster.streaming.ingest import not_ingested
from cryptoflow_dagster.instance import SILVER_WRITER_TAG
from cryptoflow_dagster.resources import LakeResource
from cryptoflow_core import landing_files

STREAMING_JOB = "streaming_ingest"
GAP_REPAIR_JOB = "gap_repair"
# Both jobs insert into silver.trades after an anti-join: run one at a time, or two could each add the same trade.
SILVER_WRITERS = (STREAMING_JOB, GAP_REPAIR_JOB)
# Both jobs carry this tag; the instance's run queue allows one run with it at a time (instance.py), so a gap-repair run
# launched by hand while a streaming run is in flight waits in the queue (and the streaming run ends early for it).
SILVER_WRITER_TAGS = {SILVER_WRITER_TAG: "true"}
# A successor's value of that tag: the queue's limit counts only "true" (instance.py), so the successor starts while
# its predecessor still runs; the silver-writer host lock keeps them from writing at the same time.
HANDOVER_TAGS = {SILVER_WRITER_TAG: "handover"}
# Set by a streaming run when it holds the silver-writer lock (epoch seconds): when it started ingesting.
INGESTING_SINCE_TAG = "cryptoflow/ingesting-since"
SUCCESSOR_OF_TAG = "cryptoflow/successor-of"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def silver_writer_in_flight(instance: dg.DagsterInstance, jobs: tuple[str, ...] = SILVER_WRITERS) -> bool:
    """Is a streaming or gap-repair run queued or running?"""
    return any(instance.get_run_records(dg.RunsFilter(job_name=job, statuses=IN_FLIGHT), limit=1) for job in jobs)


def handover_due(instance: dg.DagsterInstance, max_s: float, handover_s: float, now: float | None = None) -> str | None:
    """The id of the streaming run whose successor should be requested now: the only silver writer in flight, started,
    ingesting for ``max_s - handover_s`` or more. None if none is, or a successor (or a gap-repair run) is on its way."""
    if handover_s <= 0 or max_s <= 0:
        return None
    if instance.get_run_records(dg.RunsFilter(job_name=GAP_REPAIR_JOB, statuses=IN_FLIGHT), limit=1):
        return None  # the gap-repair run goes first; the streaming run ends for it (jobs.py)
    records = instance.get_run_records(dg.RunsFilter(job_name=STREAMING_JOB, statuses=IN_FLIGHT), limit=2)
    if len(records) != 1 or records[0].dagster_run.status != dg.DagsterRunStatus.STARTED:
        return None
    run = records[0].dagster_run
    since = run.tags.get(INGESTING_SINCE_TAG)
    if since is None:
        return None  # still starting, or waiting for its own turn
    now = time.time() if now is None else now
    return run.run_id if now - float(since) >= max_s - handover_s else None


@dg.sensor(
    name="landing_files_sensor",
    job_name=STREAMING_JOB,
    minimum_interval_seconds=1,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a streaming run when new trade micro-batches landed and no streaming run is in flight.",
)
def landing_files_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult | dg.SkipReason:
    files = landing_files.list_files(lake.settings().landing_dir, after=context.cursor, channels=("trade",))
    if not files:
        return dg.SkipReason("no new landing files")
    if silver_writer_in_flight(context.instance):
        settings = lake.settings()
        current = handover_due(context.instance, settings.stream_run_max_s, settings.stream_handover_s)
        if current is not None:
            return dg.SensorResult(run_requests=[dg.RunRequest(
                run_key=f"handover:{current}", tags={**HANDOVER_TAGS, SUCCESSOR_OF_TAG: current})])
        # The cursor stays put: a streaming run in flight takes the files as they land; after a gap-repair run (or
        # if the streaming run ends first), the next tick requests a run for them.
        return dg.SkipReason(f"{len(files)} new files: the streaming or gap-repair run in flight takes them")
    newest = files[-1].name
    # A long-lived run took files as they landed, past this cursor: when it has ended and nothing new came since, a new
    # run would only wait out its idle time holding the silver-writer slot. Asked only with no run in flight (rare).
    with lake.connect() as con:
        pending = not_ingested(con, files, since=files[0].written_at)
    if not pending:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"{len(files)} new files, all ingested by the last run"),
                               cursor=newest)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=newest, tags={"cryptoflow/landing_cursor": newest})],
                           cursor=newest)
