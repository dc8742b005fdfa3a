"""The `gold` domain: the daily marts built by dbt, run automatically after silver updates (dbt.py), and the day
rebuild of the intraday marts the streaming job keeps current (intraday.py)."""
