"""Dagster definitions by domain: each subpackage exposes ``defs`` (a ``dg.Definitions``); definitions.py merges them."""
