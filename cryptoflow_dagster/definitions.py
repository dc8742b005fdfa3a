"""The code location's one entry point: merges the per-domain definitions under ``defs/`` with the shared resources."""

import dagster as dg

# dagster-dbt (and dbt under it) imported first, before any platform module: imported from inside the platform's module
# chain (defs.alerts -> resources -> dbt_project) the same import measured 0.2-0.3 s slower, a third of what the code
# location added over its dagster + dagster-dbt floor (benchmarks/dagster_overhead.py; BENCHMARKS.md). Which part of
# dbt's import-time work is sensitive to that is not pinned down.
import dagster_dbt  # noqa: F401

from cryptoflow_dagster.defs import alerts, checks, gold, ops, raw, silver, streaming
from cryptoflow_dagster.resources import build_resources

defs = dg.Definitions.merge(
    raw.defs,
    silver.defs,
    gold.defs,
    checks.defs,
    streaming.defs,
    alerts.defs,
    ops.defs,
    # Every job without an executor of its own (the asset jobs behind UI materializations and backfills, daily_batch,
    # the ops jobs) runs its steps in the run's process: a process per step imported Dagster and the definitions
    # again, which took longer than the steps themselves (docs/decisions/0008-backfill-concurrency.md). dbt still runs
    # in a process of its own (dagster-dbt starts the dbt CLI).
    dg.Definitions(resources=build_resources(), executor=dg.in_process_executor),
)
