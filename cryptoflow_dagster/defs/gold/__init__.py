"""Dagster definitions of the `gold` domain."""

import dagster as dg

defs = dg.Definitions()
