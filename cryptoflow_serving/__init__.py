"""The market-data API (``cryptoflow serve``): a process of its own that reads the lake through
``cryptoflow_dagster.lake`` and never loads Dagster (docs/api.md, ADR 0020).

- ``app``: the FastAPI application factory; ``routes``: the /v1 read endpoints; ``queries``: the parameterized SQL of
  each resource; ``params``: parsing and checking of the shared query parameters; ``formats``: JSON, CSV, Arrow IPC and
  Parquet answers; ``reads``: read-only lake sessions; ``live``: the WebSocket push; ``auth``: API keys and the
  per-key rate limit; ``errors``: the JSON error answers; ``health``: what the lake says about freshness.
"""
