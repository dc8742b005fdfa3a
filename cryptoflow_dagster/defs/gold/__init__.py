"""The `gold` domain: the daily marts built by dbt, run automatically after silver updates (dbt.py), and the day
rebuild of the intraday marts the streaming job keeps current (intraday.py), and the volatility forecasts with their
out-of-sample evaluation (forecast.py, ADR 0022)."""
