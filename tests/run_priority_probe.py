"""Runs one job of the code location the way a run worker does (``dg.execute_job``: the run's own process creates the
job's executor) and prints the niceness the process ran it at. Used by tests/test_cpu_priority.py in a subprocess,
since the background executor lowers the priority of the process it runs in for good."""

from __future__ import annotations

import json
import os
import sys

import dagster as dg

from cryptoflow_dagster.defs.streaming.jobs import single_pass


def _job(name: str) -> dg.JobDefinition:
    from cryptoflow_dagster.definitions import defs

    return defs().get_job_def(name)


def landing_retention() -> dg.JobDefinition:
    return _job("landing_retention")


def streaming_ingest() -> dg.JobDefinition:
    from cryptoflow_dagster.defs.streaming.jobs import STREAMING_JOB

    return _job(STREAMING_JOB)


if __name__ == "__main__":
    name = sys.argv[1]
    before = os.getpriority(os.PRIO_PROCESS, 0)
    config = single_pass() if name == "streaming_ingest" else None
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.execute_job(dg.reconstructable(globals()[name]), instance=instance, run_config=config)
        print(json.dumps({"success": result.success, "before": before, "after": os.getpriority(os.PRIO_PROCESS, 0)}))
