"""The batch layers' one partitioning: UTC days from CRYPTOFLOW_START_DATE (markets are run config: docs/decisions/0002)."""

from datetime import date, timedelta

import dagster as dg

from cryptoflow_core.settings import load_settings

_SETTINGS = load_settings()

DAILY = dg.DailyPartitionsDefinition(start_date=_SETTINGS.start_date.isoformat(), timezone="UTC")

# A backfill of N days becomes ceil(N / CRYPTOFLOW_BACKFILL_DAYS_PER_RUN) runs (31 by default): 90 days is 3 runs, each
# rebuilding its days one transaction at a time and logging progress, instead of 90 runs each paying Dagster's per-run
# start-up. Fewer days per run spread a backfill over more runs at once, within the instance's run limits
# (docs/decisions/0008-backfill-concurrency.md).
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=_SETTINGS.backfill_days_per_run)


def days_between(start: date, end: date) -> list[date]:
    """Days in [start, end)."""
    return [start + timedelta(days=i) for i in range((end - start).days)]


def partition_days(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> list[date]:
    """The UTC days this run covers: one for a single partition, a range under the backfill policy."""
    window = context.partition_time_window
    return days_between(window.start.date(), window.end.date())
