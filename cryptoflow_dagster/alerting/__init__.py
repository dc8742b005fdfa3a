"""Alerting logic, free of Dagster: rules, the gold.alerts outbox, Slack delivery, Block Kit messages, the daily digest.

The Dagster side (sensors, the digest job, the Slack resource) lives in ``cryptoflow_dagster/defs/alerts`` and only wires
these pure functions to a schedule, a cursor and a connection.
"""
