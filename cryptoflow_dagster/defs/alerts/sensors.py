"""Sensors that record alerts (sidecar heartbeat, failed runs) and the one that delivers the outbox to Slack.

Only ``alert_delivery_sensor`` talks to Slack: every other source just writes gold.alerts, so retries, backoff and
dedupe live in one place.
"""

import json
from datetime import datetime, timezone

import dagster as dg

from cryptoflow_dagster.alerting import outbox
from cryptoflow_dagster.alerting.delivery import deliver_pending
from cryptoflow_dagster.alerting.heartbeat import read_heartbeat, sidecar_transition
from cryptoflow_dagster.alerting.runs import run_failure_alert
from cryptoflow_dagster.defs.alerts.resources import SlackAlertsResource
from cryptoflow_dagster.resources import LakeResource
from cryptoflow_dagster.settings import load_settings

RUNNING = dg.DefaultSensorStatus.RUNNING


@dg.sensor(name="alert_delivery_sensor", minimum_interval_seconds=3, default_status=RUNNING,
           description="Delivers pending gold.alerts rows to Slack (retries with backoff, Retry-After honoured).")
def alert_delivery_sensor(context: dg.SensorEvaluationContext, lake: LakeResource, slack: SlackAlertsResource):
    with lake.connect() as con:
        report = deliver_pending(con, slack.poster(), slack.base_ui_url(), budget_s=20)
    summary = (f"sent {len(report.sent)}, failed {len(report.failed)}, retry later {len(report.retry_later)}, "
               f"expired claims {report.expired_claims}" + (f"; {report.skipped_reason}" if report.skipped_reason else ""))
    if report.sent or report.failed or report.retry_later:
        context.log.info("alert delivery: %s", summary)
    return dg.SkipReason(summary)


@dg.sensor(name="sidecar_heartbeat_sensor", minimum_interval_seconds=10, default_status=RUNNING,
           description="One alert when the sidecar's heartbeat goes stale, one when it is fresh again.")
def sidecar_heartbeat_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    settings = load_settings()
    state = json.loads(context.cursor) if context.cursor else {"down": False, "seen": False}
    beat, extra = read_heartbeat(settings.heartbeat_path)
    now = datetime.now(timezone.utc)
    down, alert = sidecar_transition(state["down"], beat, now, settings.heartbeat_stale_s, state["seen"], extra)
    if alert is not None:
        with lake.connect() as con:
            outbox.record(con, [alert])
        context.log.warning("%s", alert.message)
    context.update_cursor(json.dumps({"down": down, "seen": state["seen"] or beat is not None}))
    return dg.SkipReason(f"sidecar {'down' if down else 'up'}; last heartbeat {beat.isoformat() if beat else 'none'}")


def _step_error(event: dg.DagsterEvent) -> str:
    data = event.step_failure_data
    if data is not None and data.error is not None:
        error = data.error
        while error.cause is not None:  # Dagster wraps the op's own exception; the innermost one says what happened
            error = error.cause
        return f"{event.step_key}: {error.message.strip()}"
    return event.message or ""


@dg.run_failure_sensor(name="run_failure_alert_sensor", minimum_interval_seconds=10, default_status=RUNNING,
                       description="Every failed run of this code location's jobs becomes one Slack alert.")
def run_failure_alert_sensor(context: dg.RunFailureSensorContext, lake: LakeResource):
    run = context.dagster_run
    step_errors = [_step_error(e) for e in context.get_step_failure_events()]
    alert = run_failure_alert(run.run_id, run.job_name, context.failure_event.message or "run failed", step_errors,
                              datetime.now(timezone.utc), run.tags.get("dagster/partition"))
    with lake.connect() as con:
        outbox.record(con, [alert])
