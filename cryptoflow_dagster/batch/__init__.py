"""The batch half's pure logic: what a REST response becomes in bronze, bronze in silver, and what the checks measure.

Dagster code in ``defs/raw``, ``defs/silver`` and ``defs/checks`` only wires these to the lake and the clients.
"""
