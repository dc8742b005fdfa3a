"""Which work gets the CPU first when the machine is saturated (docs/decisions/0024-cpu-priority.md).

The latency path (the sidecar, the streaming run, the code server's alert sensor) keeps the normal priority; work
that can wait (batch runs: backfills, dbt builds, maintenance, forecasts, digests; and the API's readers) lowers its
own with :func:`run_in_background`. On an idle machine this changes nothing; on a saturated one the scheduler gives
the latency path about three times the CPU of a background process at nice 5.
"""

from __future__ import annotations

import os
from pathlib import Path

_TASKS = Path("/proc/self/task")


def run_in_background(nice: int) -> int:
    """Lower this process's priority to niceness ``nice`` (0: leave it) and return the niceness it runs at.

    Never raises the priority (an unprivileged process cannot). Linux keeps a niceness per thread and a new thread
    takes its creator's, so every thread already running is lowered too (Dagster's and uvicorn's helpers); threads
    and processes started later (DuckDB's workers, the dbt CLI) inherit it.
    """
    if nice <= 0:
        return os.getpriority(os.PRIO_PROCESS, 0)
    threads = [int(t.name) for t in _TASKS.iterdir()] if _TASKS.is_dir() else [0]
    for tid in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:  # a thread that ended since the listing
            continue
    return os.getpriority(os.PRIO_PROCESS, 0)
