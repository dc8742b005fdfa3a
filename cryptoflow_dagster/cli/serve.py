"""``cryptoflow serve``: the market-data API (docs/api.md). A process of its own (``cryptoflow_serving``, which never
loads Dagster), handed every argument like ``sim`` and ``stream``: ``cryptoflow serve --help`` is answered by its own
parser."""

from __future__ import annotations

from cryptoflow_dagster.cli.delegated import Delegated

SERVE = Delegated(
    "serve",
    "cryptoflow_serving.server",
    "the market-data API (cryptoflow serve)",
    "serve the market-data API (REST + live WebSocket) over the lake",
    "Serve the read-only market-data API on CRYPTOFLOW_API_HOST:CRYPTOFLOW_API_PORT (127.0.0.1:8000): prices, bars, "
    "24h stats, indicators, volatility, premium, sentiment, alerts and data health under /v1, live push at /v1/live, "
    "OpenAPI at /docs (docs/api.md). Arguments after `serve` go to cryptoflow_serving.server: `cryptoflow serve "
    "--help` lists them.",
)
