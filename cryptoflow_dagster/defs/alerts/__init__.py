"""The `alerts` domain: market, heartbeat, run-failure and outbox delivery sensors (sensors.py), the failed-check
sensor (check_sensor.py), the stale-asset sensor (freshness_sensor.py) and the daily digest (digest.py). The ``slack``
resource is built with the others in defs/resources.py.

Run failures use ``dg.run_failure_sensor`` with our outbox rather than dagster-slack's
``make_slack_on_run_failure_sensor``: that one posts outside the outbox (no retries, no dedupe). See docs/decisions/0005.
"""
