"""The code location's resources and default executor, built from the settings when it loads."""

import dagster as dg

from cryptoflow_core.settings import load_settings
from cryptoflow_dagster.resources import build_resources


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        resources=build_resources(load_settings()),
        # Every job without an executor of its own (the asset jobs behind UI materializations and backfills,
        # daily_batch, the maintenance jobs) runs its steps in the run's process: a process per step imported Dagster
        # and the definitions again, which took longer than the steps themselves (docs/decisions/0008). dbt still
        # runs in a process of its own (dagster-dbt starts the dbt CLI).
        executor=dg.in_process_executor,
    )
