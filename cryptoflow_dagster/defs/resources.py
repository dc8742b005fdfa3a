"""The code location's resources and default executor, built from the settings when it loads."""

import dagster as dg

from cryptoflow_core.priority import run_in_background
from cryptoflow_core.settings import load_settings
from cryptoflow_dagster.resources import build_resources


@dg.executor(name="in_process_background", config_schema=dg.in_process_executor.config_schema)
def background_executor(init_context: dg.InitExecutorContext):
    """Every step in the run's process, at CRYPTOFLOW_BACKGROUND_NICE: work that can wait."""
    # Created in the run's own process (a run worker), before any step: the steps, their DuckDB threads and the dbt
    # CLI all run at the lowered priority. execute_in_process (tests, materialize()) uses an executor of its own.
    run_in_background(load_settings().background_nice)
    return dg.in_process_executor.executor_creation_fn(init_context)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        resources=build_resources(load_settings()),
        # Every job without an executor of its own (the asset jobs behind UI materializations and backfills,
        # daily_batch, the maintenance jobs) runs its steps in the run's process: a process per step imported Dagster
        # and the definitions again, which took longer than the steps themselves (docs/decisions/0008). dbt still
        # runs in a process of its own (dagster-dbt starts the dbt CLI). They run in the background (ADR 0024); the
        # jobs on the latency path (streaming ingest, gap repair) name the normal in-process executor.
        executor=background_executor,
    )
