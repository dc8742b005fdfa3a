"""The code location's one entry point: merges the per-domain definitions under ``defs/`` with the shared resources."""

import dagster as dg

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
