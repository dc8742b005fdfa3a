"""Dagster definitions of the `alerts` domain: alert sensors, outbox delivery, the daily digest, the ``slack`` resource.

Run failures use ``dg.run_failure_sensor`` with our outbox rather than dagster-slack's
``make_slack_on_run_failure_sensor``: that one builds its own WebClient without a base URL (so the demo's and the tests'
local Slack could not receive it) and posts outside the outbox (no retries, no dedupe). See docs/decisions/0005.
"""

import dagster as dg

from cryptoflow_dagster.defs.alerts.check_sensor import asset_check_alert_sensor
from cryptoflow_dagster.defs.alerts.digest import daily_digest_job, digest_schedule
from cryptoflow_dagster.defs.alerts.resources import slack_resource
from cryptoflow_dagster.defs.alerts.sensors import (
    alert_delivery_sensor,
    market_alert_sensor,
    run_failure_alert_sensor,
    sidecar_heartbeat_sensor,
)

defs = dg.Definitions(
    sensors=[market_alert_sensor, alert_delivery_sensor, sidecar_heartbeat_sensor, run_failure_alert_sensor, asset_check_alert_sensor],
    jobs=[daily_digest_job],
    schedules=[digest_schedule()],
    resources={"slack": slack_resource()},
)
