"""The batch layers' one partitioning: UTC days from CRYPTOFLOW_START_DATE (markets are run config: docs/decisions/0002).

Built from settings when the code location loads (the definitions' factories call these), never at import.
"""

from datetime import date, timedelta

import dagster as dg

from cryptoflow_core.settings import Settings


def daily_partitions(settings: Settings, *, through_today: bool = False) -> dg.DailyPartitionsDefinition:
    """UTC days from the start date through yesterday; ``through_today`` adds today, which the stream writes as it
    goes, so a rebuild of today (after a repair, say) is possible before the day is over."""
    return dg.DailyPartitionsDefinition(
        start_date=settings.start_date.isoformat(), timezone="UTC", end_offset=1 if through_today else 0
    )


def backfill_policy(settings: Settings) -> dg.BackfillPolicy:
    """A backfill of N days becomes ceil(N / CRYPTOFLOW_BACKFILL_DAYS_PER_RUN) runs (31 by default): 90 days is 3 runs,
    each rebuilding its days one transaction at a time and logging progress, instead of 90 runs each paying Dagster's
    per-run start-up. Fewer days per run spread a backfill over more runs at once, within the instance's run limits
    (docs/decisions/0008-backfill-concurrency.md)."""
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=settings.backfill_days_per_run)


def days_between(start: date, end: date) -> list[date]:
    """Days in [start, end)."""
    return [start + timedelta(days=i) for i in range((end - start).days)]


def partition_days(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> list[date]:
    """The UTC days this run covers: one for a single partition, a range under the backfill policy."""
    window = context.partition_time_window
    return days_between(window.start.date(), window.end.date())
