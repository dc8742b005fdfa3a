"""Dagster definitions of the `checks` domain."""

import dagster as dg

from cryptoflow_dagster.defs.checks.batch import checks as batch_checks

defs = dg.Definitions(asset_checks=batch_checks)
