"""Dagster definitions of the `streaming` domain: the landing sensor, the streaming job, the day-rebuild
assets, and gap repair."""

import dagster as dg

from cryptoflow_dagster.defs.streaming.jobs import streaming_ingest_job
from cryptoflow_dagster.defs.streaming.repair import gap_repair_job, gap_repair_schedule, no_stale_trade_gaps
from cryptoflow_dagster.defs.streaming.reconcile import reconciles_with_exchange_candles
from cryptoflow_dagster.defs.streaming.rebuild import bronze_trades, intraday_gold_from_trades, silver_trades
from cryptoflow_dagster.defs.streaming.tickers import bronze_tickers
from cryptoflow_dagster.defs.streaming.sensors import landing_files_sensor

defs = dg.Definitions(
    assets=[bronze_trades, bronze_tickers, silver_trades, intraday_gold_from_trades],
    asset_checks=[no_stale_trade_gaps, reconciles_with_exchange_candles],
    jobs=[streaming_ingest_job, gap_repair_job],
    schedules=[gap_repair_schedule],
    sensors=[landing_files_sensor],
)
