"""What the streaming job and gap repair run (their Dagster definitions are in defs/streaming/):

- ``loop``: a run's life: take the pending landing files, then each new one as it lands, for a bounded time;
- ``ingest``: a chunk of landing files -> bronze, dead letters, silver (``silver_trades``), intraday gold and the
  ``ops.ingested_files`` ledger, in one lake transaction;
- ``intraday_gold``: the 1-minute bars, 24-hour stats and Korean premium refreshed for the minutes a chunk touched;
- ``gaps``: trade gaps found (Binance id holes, Upbit disconnect windows, sidecar downtime) and repaired over REST;
- ``day_rebuild``: a day of silver trades and intraday gold recomputed from bronze (the day assets' backfills).
"""
