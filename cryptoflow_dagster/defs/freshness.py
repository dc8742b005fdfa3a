"""How fresh each asset must be: Dagster freshness policies, evaluated by the daemon's freshness daemon (every 30 s)
and shown in the UI's asset health; a change to FAIL and back is a Slack alert (defs/alerts/freshness_sensor.py).

ADR 0015 says why these and not freshness asset checks.
"""

from datetime import timedelta

import dagster as dg

# The streaming path (bronze/trades_raw, silver/trades, the intraday gold marts). While files land, a streaming run
# reports its materializations every 30 s (loop.LoopLimits.report_every_s) and lives at most 300 s; when it ends
# (after 300 s, or 30 s without a file) the landing sensor starts the next, which takes 5-10 s to start and reports 30 s
# in. Two materializations are thus at most ~1 min apart while trades flow. WARN after 2 min: a hand-over was slow
# (a gap-repair run took the silver-writer slot, a full run queue). FAIL after 5 min: longer than a whole streaming run
# with nothing ingested, so the sidecar, the landing sensor or the run queue is down.
STREAMING_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=5), warn_window=timedelta(minutes=2))

# The daily path (bronze and silver candles and Fear & Greed, the dbt gold marts). daily_batch runs at 00:10 UTC
# (defs/raw/schedules.py) and gold follows silver within a minute (gold_automation). The policy wants a
# materialization after 00:00 UTC every day by 03:00 UTC: almost three hours of slack for REST retries, rate-limit
# waits and a backfill ahead in the queue. From 03:00 on, an asset not materialized since midnight fails until it is.
DAILY_DEADLINE_CRON = "0 3 * * *"
DAILY_FRESHNESS = dg.FreshnessPolicy.cron(
    deadline_cron=DAILY_DEADLINE_CRON, lower_bound_delta=timedelta(hours=3), timezone="UTC"
)
