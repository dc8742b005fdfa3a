"""The code location's one entry point: every definition under ``defs/``, found by ``dg.load_from_defs_folder``."""

from pathlib import Path

import dagster as dg

# dagster-dbt (and dbt under it) imported first, before any platform module: imported from inside the platform's module
# chain the same import measured 0.2-0.3 s slower, a third of what the code location added over its dagster +
# dagster-dbt floor (benchmarks/dagster_overhead.py; BENCHMARKS.md). Which part of dbt's import-time work is sensitive
# to that is not pinned down.
import dagster_dbt  # noqa: F401

from cryptoflow_core.settings import load_env_files


@dg.definitions
def defs() -> dg.Definitions:
    # A code server started by hand (dagster dev, dg) reads the same .env files as every other command.
    load_env_files()
    return dg.load_from_defs_folder(path_within_project=Path(__file__).resolve().parent)
