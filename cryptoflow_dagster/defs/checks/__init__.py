"""Dagster definitions of the `checks` domain.

The batch checks (batch.py) are declared on the bronze/silver assets that evaluate them, so nothing is registered here.
"""

import dagster as dg

defs = dg.Definitions()
