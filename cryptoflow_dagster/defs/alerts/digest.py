"""The daily Slack digest: a one-op job on a schedule (CRYPTOFLOW_DIGEST_CRON, UTC) reporting the previous UTC day."""

from datetime import date, datetime, timedelta, timezone

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from cryptoflow_dagster.alerting import outbox
from cryptoflow_dagster.alerting.digest import build_digest
from cryptoflow_dagster.resources import LakeResource
from cryptoflow_dagster.settings import load_settings


class DigestConfig(dg.Config):
    day: str = ""  # YYYY-MM-DD; empty: yesterday (UTC)


def gold_check_failure(instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey], day: date) -> str | None:
    """The first gold asset check whose latest evaluation for ``day``'s partition failed with ERROR severity."""
    for key in sorted(check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        if key.asset_key.path[0] != "gold":
            continue
        for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=50):
            if record.partition != day.isoformat() or record.status == AssetCheckExecutionRecordStatus.PLANNED:
                continue
            ev = record.evaluation
            if record.status == AssetCheckExecutionRecordStatus.FAILED and ev is not None and ev.severity.value == "ERROR":
                return f"asset check {key.asset_key.to_user_string()}:{key.name} failed for {day}"
            break  # the latest evaluation for that day passed
    return None


@dg.op(description="Build the day's digest from gold and write it to the outbox (the delivery sensor sends it).")
def send_daily_digest(context: dg.OpExecutionContext, config: DigestConfig, lake: LakeResource) -> None:
    now = datetime.now(timezone.utc)
    day = date.fromisoformat(config.day) if config.day else now.date() - timedelta(days=1)
    repo = context.repository_def
    failure = gold_check_failure(context.instance, list(repo.asset_graph.asset_check_keys), day) if repo else None
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


def digest_schedule() -> dg.ScheduleDefinition:
    @dg.schedule(name="daily_digest_schedule", cron_schedule=load_settings().digest_cron, job=daily_digest_job,
                 execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING)
    def daily_digest_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = (context.scheduled_execution_time.astimezone(timezone.utc) - timedelta(days=1)).date()
        return dg.RunRequest(run_key=f"digest-{day}",
                             run_config={"ops": {"send_daily_digest": {"config": {"day": day.isoformat()}}}})

    return daily_digest_schedule
