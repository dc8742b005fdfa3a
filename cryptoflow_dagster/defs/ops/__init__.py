"""Dagster definitions of the `ops` domain."""

import dagster as dg

defs = dg.Definitions()
