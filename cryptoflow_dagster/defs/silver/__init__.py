"""Dagster definitions of the `silver` domain (batch): candles and Fear & Greed typed and validated with Polars."""

import dagster as dg

from cryptoflow_dagster.defs.silver.assets import candles_1d, candles_1m, fear_greed

defs = dg.Definitions(assets=[candles_1m, candles_1d, fear_greed])
