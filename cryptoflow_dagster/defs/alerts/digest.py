"""The daily Slack digest: a one-op job on a schedule (CRYPTOFLOW_DIGEST_CRON, UTC) reporting the previous UTC day."""

from datetime import date, datetime, timedelta, timezone

import dagster as dg
from dagster._check import CheckError
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from cryptoflow_dagster.alerting import outbox
from cryptoflow_dagster.alerting.digest import build_digest
from cryptoflow_dagster.resources import LakeResource
from cryptoflow_core.settings import Settings, load_settings


class DigestConfig(dg.Config):
    day: str = ""  # YYYY-MM-DD; empty: yesterday (UTC)


def gold_check_failure(instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey], day: date) -> str | None:
    """The first gold asset check whose latest evaluation for ``day`` failed with ERROR severity.

    A partitioned check is judged by its evaluation of that day's partition; an unpartitioned one by its latest.
    """
    done = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}
    for key in sorted(check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        if key.asset_key.path[0] != "gold":
            continue
        records = instance.event_log_storage.get_asset_check_execution_history(key, limit=50, status=done)
        latest = next((r for r in records if r.partition == day.isoformat()), None)
        if latest is None and records and records[0].partition is None:
            latest = records[0]
        ev = latest.evaluation if latest else None
        if ev is not None and not ev.passed and ev.severity.value == "ERROR":
            where = f" for {day}" if latest.partition else ""
            return f"asset check {key.asset_key.to_user_string()}:{key.name} failed{where}"
    return None


def _check_keys(context: dg.OpExecutionContext) -> list[dg.AssetCheckKey]:
    try:
        return list(context.repository_def.asset_graph.asset_check_keys)
    except CheckError:  # a bare job run outside a code location (a test, a script): there are no checks to consult
        return []


@dg.op(description="Build the day's digest from gold and write it to the outbox (the delivery sensor sends it).")
def send_daily_digest(context: dg.OpExecutionContext, config: DigestConfig, lake: LakeResource) -> None:
    now = datetime.now(timezone.utc)
    day = date.fromisoformat(config.day) if config.day else now.date() - timedelta(days=1)
    failure = gold_check_failure(context.instance, _check_keys(context), day)
    with lake.connect() as con:
        digest = build_digest(con, day, now, failure)
        recorded = outbox.record(con, [digest])
    reason = digest.details.get("fallback_reason")
    if reason:
        context.log.warning("digest for %s falls back: %s", day, reason)
    context.log.info("digest for %s %s", day, "recorded" if recorded else "was already recorded")


@dg.job(name="daily_digest_job", description="Daily Slack digest of the gold market figures.")
def daily_digest_job() -> None:
    send_daily_digest()


def digest_schedule(settings: Settings) -> dg.ScheduleDefinition:
    @dg.schedule(name="daily_digest_schedule", cron_schedule=settings.digest_cron, job=daily_digest_job,
                 execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING)
    def daily_digest_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = (context.scheduled_execution_time.astimezone(timezone.utc) - timedelta(days=1)).date()
        return dg.RunRequest(run_key=f"digest-{day}",
                             run_config={"ops": {"send_daily_digest": {"config": {"day": day.isoformat()}}}})

    return daily_digest_schedule


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[daily_digest_job], schedules=[digest_schedule(load_settings())])
