"""Housekeeping the platform runs on a schedule (the Dagster jobs are in defs/maintenance/)."""
