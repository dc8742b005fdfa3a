"""Dagster definitions of the `raw` domain."""

import dagster as dg

defs = dg.Definitions()
