"""Dagster definitions of the `streaming` domain."""

import dagster as dg

defs = dg.Definitions()
