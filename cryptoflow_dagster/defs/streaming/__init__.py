"""The `streaming` domain: the landing sensor (sensors.py), the streaming job (jobs.py), gap repair (repair.py), the
reconciliation check (reconcile.py) and the ticker bronze table (tickers.py)."""
