"""The Dagster sensor that turns landed micro-batches into streaming runs.

The cursor is the newest landing file name seen. A run is requested only when no streaming (or gap-repair) run is queued or in flight,
and the run itself takes every file not yet in ``ops.ingested_files``, then keeps taking new ones as they land for a
while (streaming/loop.py): runs never pile up behind a fast stream, and exactly-once is the lake transaction's job,
not the cursor's.
"""

from __future__ import annotations

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
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def silver_writer_in_flight(instance: dg.DagsterInstance, jobs: tuple[str, ...] = SILVER_WRITERS) -> bool:
    """Is a streaming or gap-repair run queued or running?"""
    return any(instance.get_run_records(dg.RunsFilter(job_name=job, statuses=IN_FLIGHT), limit=1) for job in jobs)


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
