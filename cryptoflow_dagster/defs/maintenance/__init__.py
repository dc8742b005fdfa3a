"""The `maintenance` domain: scheduled housekeeping jobs (landing_retention.py; lake.py, ADR 0017)."""
