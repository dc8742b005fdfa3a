"""Dagster definitions of the `raw` domain: bronze assets collected over REST, and the daily collection schedule."""

import dagster as dg

from cryptoflow_dagster.defs.raw.assets import candles_raw, fear_greed_raw
from cryptoflow_dagster.defs.raw.schedules import daily_batch_job, daily_batch_schedule

defs = dg.Definitions(assets=[candles_raw, fear_greed_raw], jobs=[daily_batch_job], schedules=[daily_batch_schedule])
