"""Dagster side of gap repair: a job run every minute, and the asset check that no gap stays open too long."""

from datetime import datetime, timedelta, timezone

import dagster as dg

from cryptoflow_dagster.clients.resources import BinanceResource, UpbitResource
from cryptoflow_dagster.streaming.gaps import detect_and_repair
from cryptoflow_dagster.streaming.handover import LOCK, lock_dir
from cryptoflow_core.host_lock import HostLock
from cryptoflow_dagster.defs.silver.trades import SILVER_TRADES
from cryptoflow_dagster.resources import LakeResource
from cryptoflow_dagster.defs.streaming.sensors import GAP_REPAIR_JOB, SILVER_WRITER_TAGS, silver_writer_in_flight

OPEN_GAP_LIMIT = timedelta(minutes=15)  # a few repair runs, with REST retries and rate-limit waits, fit in it


@dg.op(description="Record new trade gaps (Binance id holes, Upbit disconnect windows) and fill open ones over REST.")
def repair_trade_gaps(context: dg.OpExecutionContext, lake: LakeResource, upbit: UpbitResource, binance: BinanceResource) -> None:
    settings = lake.settings()
    # the streaming runs' lock (streaming/handover.py): never writing silver beside one, whatever the run queue does
    with HostLock(lock_dir(settings.home) / LOCK), lake.connect() as con, upbit.client() as up, binance.client() as bn:
        report = detect_and_repair(con, settings.landing_dir, up, bn, context.run_id,
                                   budget_s=settings.gap_repair_budget_s)
    context.log.info(f"gaps: {report.detected} new, {report.repaired} repaired ({report.rows} trades back), "
                     f"{report.failed} failed, {report.deferred} left for the next run (fetch budget)")
    if report.failed:
        raise dg.Failure(f"{report.failed} gap repairs failed; they stay open and are retried next run")


@dg.job(name=GAP_REPAIR_JOB, executor_def=dg.in_process_executor, tags=SILVER_WRITER_TAGS,
        description="Trade gap detection and REST repair (while no streaming run is in flight; that run repairs too).")
def gap_repair_job() -> None:
    repair_trade_gaps()


@dg.schedule(job=gap_repair_job, cron_schedule="* * * * *", default_status=dg.DefaultScheduleStatus.RUNNING)
def gap_repair_schedule(context: dg.ScheduleEvaluationContext):
    """Every minute, unless a silver writer is in flight (the next minute's tick tries again)."""
    if silver_writer_in_flight(context.instance):
        return dg.SkipReason("a streaming or gap-repair run is in flight")
    return dg.RunRequest()


def open_gaps_older_than(con, limit: timedelta, now: datetime) -> list[tuple]:
    return con.execute(
        "SELECT gap_id, detected_at FROM ops.gaps WHERE repaired_at IS NULL AND detected_at < ? ORDER BY detected_at",
        [now - limit],
    ).fetchall()


@dg.asset_check(asset=SILVER_TRADES, name="no_stale_trade_gaps", description="No trade gap left unrepaired for 15 minutes.")
def no_stale_trade_gaps(lake: LakeResource) -> dg.AssetCheckResult:
    with lake.connect() as con:
        stale = open_gaps_older_than(con, OPEN_GAP_LIMIT, datetime.now(timezone.utc))
        open_total = con.execute("SELECT count(*) FROM ops.gaps WHERE repaired_at IS NULL").fetchone()[0]
    return dg.AssetCheckResult(
        passed=not stale,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"stale_gaps": len(stale), "open_gaps": open_total, "oldest": [g[0] for g in stale[:10]]},
    )
