"""Collect yesterday once it is complete: 00:10 UTC leaves the exchanges ten minutes to close the day's last candles."""

import dagster as dg

daily_batch_job = dg.define_asset_job(
    "daily_batch",
    # Named keys, not groups: streaming assets share the silver group but are not daily-partitioned.
    selection=dg.AssetSelection.assets(
        ["bronze", "candles_raw"], ["bronze", "fear_greed_raw"],
        ["silver", "candles_1m"], ["silver", "candles_1d"], ["silver", "fear_greed"],
    ),
    description="Bronze and silver for one UTC day (gold follows from its own automation).",
)

# The daily partition of day D only exists once D has ended, so the schedule's newest partition is always yesterday.
daily_batch_schedule = dg.build_schedule_from_partitioned_job(daily_batch_job, hour_of_day=0, minute_of_hour=10)
