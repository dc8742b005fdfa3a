"""Stale assets -> Slack, through the outbox like a failed check.

Dagster's freshness daemon (part of ``dagster-daemon``, on by default, every 30 s) evaluates each asset's freshness
policy (defs/freshness.py) and records every change of state as a ``FRESHNESS_STATE_CHANGE`` event; the UI shows the
state. Open-source Dagster sends nothing on it, so this sensor reads those events after a cursor (their storage id)
and records an ``asset_stale`` alert when an asset turns FAIL and an ``asset_fresh`` one when it passes again;
``alert_delivery_sensor`` delivers them with the other alerts.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import dagster as dg
from dagster._core.definitions.freshness import CronFreshnessPolicy, FreshnessPolicy, TimeWindowFreshnessPolicy

from cryptoflow_dagster.alerting import outbox
from cryptoflow_dagster.alerting.freshness import FAIL, FreshnessChange, freshness_alerts
from cryptoflow_dagster.resources import LakeResource

_PAGE = 200  # state changes read per tick; a backlog is worked off over the next ticks


def describe(policy: FreshnessPolicy | None) -> str | None:
    """A freshness policy in words, for the message."""
    if isinstance(policy, TimeWindowFreshnessPolicy):
        text = f"materialized at least every {_span(policy.fail_window.to_timedelta().total_seconds())}"
        if policy.warn_window:
            text += f" (warn after {_span(policy.warn_window.to_timedelta().total_seconds())})"
        return text
    if isinstance(policy, CronFreshnessPolicy):
        return (f"materialized within {_span(policy.lower_bound_delta.total_seconds())} before each "
                f"'{policy.deadline_cron}' ({policy.timezone}) deadline")
    return None


def _span(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 and seconds % 3600 == 0 else f"{seconds / 60:g} min"


def _change(instance: dg.DagsterInstance, graph, key: dg.AssetKey, previous: str, new: str,
            changed_at: float) -> FreshnessChange:
    node = graph.get(key) if graph.has(key) else None
    latest = instance.get_latest_materialization_event(key)
    return FreshnessChange(
        asset_path=tuple(key.path), previous=previous, new=new,
        changed_at=datetime.fromtimestamp(changed_at, timezone.utc),
        policy=describe(node.freshness_policy_or_from_metadata) if node is not None else None,
        last_materialized=datetime.fromtimestamp(latest.timestamp, timezone.utc) if latest else None,
    )


def _filter(after: int | None = None) -> dg.EventRecordsFilter:
    return dg.EventRecordsFilter(event_type=dg.DagsterEventType.FRESHNESS_STATE_CHANGE, after_cursor=after)


def new_changes(context: dg.SensorEvaluationContext) -> tuple[list[FreshnessChange], int | None]:
    """The freshness state changes after the cursor, and the new cursor.

    Without a cursor (the first tick, or a lost one) the history is not replayed: only assets whose latest state is
    FAIL count, as changes into FAIL, with the same dedupe keys their events give (the outbox drops repeats).
    """
    instance, graph = context.instance, context.repository_def.asset_graph
    storage = instance.event_log_storage
    if context.cursor:
        records = storage.get_event_records(_filter(int(context.cursor)), limit=_PAGE, ascending=True)
        changes = []
        for record in records:
            data = record.event_log_entry.get_dagster_event().asset_freshness_state_change_data
            changes.append(_change(instance, graph, data.key, data.previous_state.value, data.new_state.value,
                                   data.state_change_timestamp))
        return changes, (records[-1].storage_id if records else int(context.cursor))
    latest = storage.get_event_records(_filter(), limit=1, ascending=False)
    if not latest:
        return [], None
    keys = [node.key for node in graph.asset_nodes if node.freshness_policy_or_from_metadata is not None]
    changes = [
        _change(instance, graph, key, "UNKNOWN", FAIL, state.updated_at.timestamp())
        for key, state in instance.get_freshness_state_records(keys).items()
        if state.freshness_state.value == FAIL
    ]
    return changes, latest[0].storage_id


@dg.sensor(name="asset_freshness_alert_sensor", minimum_interval_seconds=15,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="One Slack message when an asset's freshness policy fails (stale), one when it passes again.")
def asset_freshness_alert_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    changes, cursor = new_changes(context)
    alerts = freshness_alerts(changes, datetime.now(timezone.utc))
    if alerts:
        # Recorded before the cursor moves: a crash in between re-derives the same dedupe keys, which the outbox drops.
        with lake.connect() as con:
            outbox.record(con, alerts)
        for alert in alerts:
            context.log.info("%s", alert.message)
    if cursor is not None:
        context.update_cursor(str(cursor))
    summary = {c.asset: f"{c.previous}->{c.new}" for c in changes}
    return dg.SkipReason(f"{len(changes)} freshness changes, {len(alerts)} alerts" +
                         (f": {json.dumps(summary)[:500]}" if summary else ""))
