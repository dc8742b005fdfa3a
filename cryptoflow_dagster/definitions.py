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
    dg.Definitions(resources=build_resources()),
)
