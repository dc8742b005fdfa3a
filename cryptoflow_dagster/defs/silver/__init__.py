"""Dagster definitions of the `silver` domain."""

import dagster as dg

defs = dg.Definitions()
