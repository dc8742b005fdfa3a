"""Dagster definitions of the `alerts` domain."""

import dagster as dg

defs = dg.Definitions()
