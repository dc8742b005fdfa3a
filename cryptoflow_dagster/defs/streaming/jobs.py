"""The streaming job: one in-process op that ingests landing files as they land, for a bounded time (see loop.py).

In-process executor and one op: Dagster's per-run start-up is most of a short run's cost (stack-notes: about 2 s in
process against 3.5 s with a step subprocess), so there is nothing to fan out.
"""

import time
from datetime import date, datetime, timezone

import dagster as dg
import duckdb

from cryptoflow_dagster.clients.resources import BinanceResource, UpbitResource
from cryptoflow_dagster.streaming.gaps import detect_and_repair
from cryptoflow_dagster.streaming.handover import Handover, lock_dir
from cryptoflow_dagster.streaming.ingest import IngestResult
from cryptoflow_dagster.streaming.loop import LoopLimits, run_ingest_loop
from cryptoflow_dagster.defs.gold.intraday import GOLD_KEYS
from cryptoflow_dagster.defs.lake_tables import row_count_metadata, row_counts, table_of, table_rows
from cryptoflow_dagster.defs.silver.trades import BRONZE_TRADES, SILVER_TRADES
from cryptoflow_dagster.defs.streaming.tickers import BRONZE_TICKERS
from cryptoflow_dagster.resources import LakeResource
from cryptoflow_dagster.defs.streaming.sensors import (
    GAP_REPAIR_JOB,
    IN_FLIGHT,
    INGESTING_SINCE_TAG,
    SILVER_WRITER_TAGS,
    STREAMING_JOB,
)

# How often the loop asks the instance whether a gap-repair run waits for the silver-writer slot this run holds.
_YIELD_CHECK_S = 5.0


class StreamingRunConfig(dg.Config):
    """Per-run overrides of the CRYPTOFLOW_STREAM_* settings (None: the setting)."""

    max_seconds: float | None = None
    idle_seconds: float | None = None


@dg.op(description="Landing files -> bronze.trades_raw, dead letters, silver.trades, intraday gold, exactly once per "
                   "file, as they land, for up to CRYPTOFLOW_STREAM_RUN_MAX_S; trade gaps repaired on the way.")
def ingest_landing_files(context: dg.OpExecutionContext, config: StreamingRunConfig, lake: LakeResource,
                         upbit: UpbitResource, binance: BinanceResource) -> None:
    settings = lake.settings()
    limits = LoopLimits.from_settings(settings)
    limits = LoopLimits(
        max_s=limits.max_s if config.max_seconds is None else config.max_seconds,
        idle_s=limits.idle_s if config.idle_seconds is None else config.idle_seconds,
        poll_s=limits.poll_s, repair_every_s=limits.repair_every_s, handover_s=limits.handover_s,
    )
    handover = Handover(lock_dir(settings.home), context.run_id)

    def took_turn() -> None:
        # the landing sensor times the next run's request from this tag (ADR 0019), not from the run's start: a run
        # that waited for its turn has ingested for less than it has lived
        context.instance.add_run_tags(context.run_id, {INGESTING_SINCE_TAG: f"{time.time():.3f}"})
        if handover.waited_s:
            context.log.info(f"took over the silver-writer lock after waiting {handover.waited_s:.1f} s")

    next_yield_check = 0.0

    def gap_repair_waits() -> bool:
        nonlocal next_yield_check
        now = datetime.now(timezone.utc).timestamp()
        if now < next_yield_check:
            return False
        next_yield_check = now + _YIELD_CHECK_S
        # queued behind this run's tag, or started and waiting for the silver-writer lock behind a hand-over
        queued = context.instance.get_run_records(dg.RunsFilter(job_name=GAP_REPAIR_JOB, statuses=IN_FLIGHT), limit=1)
        if queued:
            context.log.info("a gap-repair run waits for the silver-writer slot: ending this streaming run")
        return bool(queued)

    try:
        with lake.connect() as con, upbit.client() as up, binance.client() as bn:
            def report(part: IngestResult) -> None:
                context.log.info(
                    f"ingested {part.files} files: {part.bronze_rows} bronze rows, {part.silver_rows} new silver rows, "
                    f"{part.dead_letters} dead letters, {part.ticker_rows} tickers, gold {part.gold} "
                    f"({part.skipped_files} files already ingested)"
                )
                metadata = {"files": part.files, "bronze_rows": part.bronze_rows, "silver_rows": part.silver_rows,
                            "dead_letters": part.dead_letters}
                counts = stream_row_counts(context, con, part.days, tickers=bool(part.ticker_rows))
                if part.ticker_rows:
                    context.log_event(dg.AssetMaterialization(
                        asset_key=BRONZE_TICKERS, metadata={"rows": part.ticker_rows, **counts.get((BRONZE_TICKERS, None), {})}))
                # The days a run touched are the partitions it updated: lineage shows them as materialized by this run.
                for day in sorted(part.days):
                    for key in STREAMED_KEYS:
                        context.log_event(dg.AssetMaterialization(
                            asset_key=key, partition=day.isoformat(), metadata={**metadata, **counts.get((key, day), {})}))

            def repair() -> None:
                gaps = detect_and_repair(con, settings.landing_dir, up, bn, context.run_id,
                                         budget_s=settings.gap_repair_budget_s)
                if gaps.detected or gaps.repaired or gaps.failed or gaps.deferred:
                    context.log.info(f"gaps: {gaps.detected} new, {gaps.repaired} repaired ({gaps.rows} trades back), "
                                     f"{gaps.failed} failed, {gaps.deferred} left for the next pass (fetch budget)")

            total = run_ingest_loop(con, settings.landing_dir, context.run_id, limits, repair=repair, report=report,
                                    should_stop=gap_repair_waits, handover=handover, on_turn=took_turn)
    except BaseException as exc:
        # SIGTERM/SIGINT reach the run when the platform stops (its process group is signalled) or a deployment
        # replaces it. The loop defers the signal to the end of the lake transaction in flight (streaming/loop.py:
        # DuckDB 1.5 can spin after a query interrupted mid-way), so every chunk is committed whole or not started.
        # That is an orderly end, not a failure (which would page someone through the run-failure alert); a
        # termination asked for in the UI, or by the demo's orderly stop through the instance, ends it canceled.
        if not _stop_signal(exc):
            raise
        run = context.instance.get_run_by_id(context.run_id)
        if run is not None and run.status in (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED):
            raise
        context.log.warning("streaming run stopped by a signal (the platform is stopping) after its chunk in flight "
                            "committed; the next streaming run ingests the files still pending")
        return
    context.log.info(f"streaming run done: {total.files} files, {total.silver_rows} new silver rows, "
                     f"{total.dead_letters} dead letters")


# The day-partitioned tables every streamed chunk writes (tickers apart: bronze/tickers_raw is not partitioned).
STREAMED_KEYS = (BRONZE_TRADES, SILVER_TRADES, *GOLD_KEYS)


def stream_row_counts(context: dg.OpExecutionContext, con: duckdb.DuckDBPyConnection, days, *, tickers: bool
                      ) -> dict[tuple[dg.AssetKey, date | None], dict[str, int]]:
    """``dagster/row_count`` (the table) and ``dagster/partition_row_count`` (the day) of each streamed table as the
    lake holds them after the chunks being reported, by (asset key, day). Counted once per report (at most every 30 s,
    loop.py), not per chunk: a day's count scans that day (~40 ms per 10 M trades), the table's comes from DuckLake's
    file statistics. A failed count (a stop signal mid-query) leaves the figures out; the materializations still go."""
    counts: dict[tuple[dg.AssetKey, date | None], dict[str, int]] = {}
    started = time.monotonic()
    try:
        for key in STREAMED_KEYS:
            total, per_day = row_counts(con, table_of(key), days)
            for day, n in per_day.items():
                counts[(key, day)] = row_count_metadata(total, n)
        if tickers:
            counts[(BRONZE_TICKERS, None)] = row_count_metadata(table_rows(con, table_of(BRONZE_TICKERS)))
    except Exception as exc:  # metadata only: never fail or hold up ingestion over a count
        context.log.warning(f"row counts left out of this report: {exc}")
        return {}
    context.log.debug(f"row counts of {len(counts)} tables and days in {time.monotonic() - started:.3f}s")
    return counts


def _stop_signal(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a stop signal: as Dagster raises it, or as DuckDB reports it when it arrived mid-query
    (a RuntimeError "Query interrupted" caused by Dagster's interrupt)."""
    while exc is not None:
        if isinstance(exc, (KeyboardInterrupt, dg.DagsterExecutionInterruptedError, duckdb.InterruptException)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@dg.job(name=STREAMING_JOB, executor_def=dg.in_process_executor, tags=SILVER_WRITER_TAGS,
        description="Near-real-time ingest of landed trades (one long-lived run at a time, started by the landing sensor).")
def streaming_ingest_job() -> None:
    ingest_landing_files()


def single_pass() -> dict:
    """Run config for one pass over the pending files (tests, and an operator draining the folder by hand)."""
    return {"ops": {"ingest_landing_files": {"config": {"max_seconds": 0}}}}
