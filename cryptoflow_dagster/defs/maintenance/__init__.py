"""The `maintenance` domain: scheduled housekeeping jobs (landing_retention.py)."""
