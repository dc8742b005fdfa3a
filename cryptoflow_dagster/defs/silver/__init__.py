"""The `silver` domain: candles and Fear & Greed typed and validated with Polars (candles.py), and the day rebuild of
``silver.trades`` from bronze (trades.py)."""
