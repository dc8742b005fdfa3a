"""Failed asset checks -> Slack. Open-source Dagster has no sensor for these (a Dagster+ feature), so this one walks
each check's execution history in the instance with a cursor of the last record id seen per check."""

import json
from datetime import datetime, timezone

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from cryptoflow_dagster.alerting import outbox
from cryptoflow_dagster.alerting.checks import CheckEvaluation, check_transitions
from cryptoflow_dagster.resources import LakeResource

_DONE = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}
_PAGE = 100
_MAX_PAGES = 10  # a first run on a long history reads at most this many pages per check


def new_evaluations(instance: dg.DagsterInstance, check_key: dg.AssetCheckKey, after_id: int) -> list[CheckEvaluation]:
    """Completed evaluations of one check with a record id above ``after_id``, oldest first."""
    found = []
    cursor = None
    run_partitions: dict[str, str | None] = {}
    for _ in range(_MAX_PAGES):
        page = instance.event_log_storage.get_asset_check_execution_history(
            check_key, limit=_PAGE, cursor=cursor, status=_DONE
        )
        for record in page:
            if record.id <= after_id:
                return found[::-1]
            ev = record.evaluation
            if ev is None:
                continue
            partition = record.partition or ev.partition
            if partition is None:
                # A check without partitions of its own, run for one partition of its asset: the run says which.
                if record.run_id not in run_partitions:
                    run = instance.get_run_by_id(record.run_id)
                    run_partitions[record.run_id] = run.tags.get("dagster/partition") if run else None
                partition = run_partitions[record.run_id]
            found.append(CheckEvaluation(
                asset_path=tuple(check_key.asset_key.path), check_name=check_key.name, partition=partition,
                passed=ev.passed, record_id=record.id, run_id=record.run_id, severity=ev.severity.value,
                description=ev.description,
                metadata={k: str(getattr(v, "value", v)) for k, v in (ev.metadata or {}).items()},
            ))
        if len(page) < _PAGE:
            break
        cursor = page[-1].id
    return found[::-1]


def _key(check_key: dg.AssetCheckKey) -> str:
    return f"{check_key.asset_key.to_user_string()}:{check_key.name}"


@dg.sensor(name="asset_check_alert_sensor", minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="One Slack message per failing asset check and partition, and one when it passes again.")
def asset_check_alert_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    state = json.loads(context.cursor) if context.cursor else {"last_id": {}, "failing": []}
    failing = set(state["failing"])
    last_id: dict[str, int] = state["last_id"]
    evaluations: list[CheckEvaluation] = []
    for check_key in sorted(context.repository_def.asset_graph.asset_check_keys, key=_key):
        new = new_evaluations(context.instance, check_key, last_id.get(_key(check_key), 0))
        if new:
            last_id[_key(check_key)] = new[-1].record_id
            evaluations += new
    failing, alerts = check_transitions(failing, evaluations, datetime.now(timezone.utc))
    if alerts:
        # Recorded before the cursor moves: a crash in between re-derives the same dedupe keys, which the outbox drops.
        with lake.connect() as con:
            outbox.record(con, alerts)
        for alert in alerts:
            context.log.info("%s", alert.message)
    context.update_cursor(json.dumps({"last_id": last_id, "failing": sorted(failing)}))
    return dg.SkipReason(f"{len(evaluations)} new check evaluations, {len(alerts)} alerts, {len(failing)} failing")
