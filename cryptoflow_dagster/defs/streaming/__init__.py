"""Dagster definitions of the `streaming` domain: the landing sensor, the streaming job, and the day-rebuild assets."""

import dagster as dg

from cryptoflow_dagster.defs.streaming.jobs import streaming_ingest_job
from cryptoflow_dagster.defs.streaming.rebuild import bronze_trades, intraday_gold_from_trades, silver_trades
from streaming_sensor.sensor import landing_files_sensor

defs = dg.Definitions(
    assets=[bronze_trades, silver_trades, intraday_gold_from_trades],
    jobs=[streaming_ingest_job],
    sensors=[landing_files_sensor],
)
