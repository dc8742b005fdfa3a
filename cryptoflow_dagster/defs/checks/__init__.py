"""Dagster definitions of the `checks` domain."""

import dagster as dg

defs = dg.Definitions()
