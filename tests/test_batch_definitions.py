"""The batch definitions as Dagster sees them: partitions, backfill policy, groups, the daily schedule, the checks."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

from cryptoflow_dagster.definitions import defs as load_code_location
from cryptoflow_core.settings import load_settings
from cryptoflow_dagster.defs.partitions import backfill_policy, daily_partitions, days_between
from cryptoflow_dagster.defs.raw.schedules import daily_batch_schedule

# The code location as Dagster loads it (the definitions are built when loaded, not at import).
defs = load_code_location()
DAILY, BACKFILL_POLICY = daily_partitions(load_settings()), backfill_policy(load_settings())

BATCH = {("bronze", "candles_raw"): "raw", ("bronze", "fear_greed_raw"): "raw", ("silver", "candles_1m"): "silver",
         ("silver", "candles_1d"): "silver", ("silver", "fear_greed"): "silver"}


def test_batch_assets_are_daily_partitioned_grouped_and_described():
    graph = defs.resolve_asset_graph()
    for path, group in BATCH.items():
        node = graph.get(dg.AssetKey(list(path)))
        assert node.group_name == group
        assert node.partitions_def == DAILY and DAILY.timezone == "UTC"
        assert node.backfill_policy == BACKFILL_POLICY and node.description
    # 90 days are 3 runs under the policy.
    assert -(-90 // BACKFILL_POLICY.max_partitions_per_run) == 3
    blocking = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    assert {("silver/candles_1m", "dead_letter_rate"), ("silver/candles_1d", "matches_1m"),
            ("bronze/candles_raw", "unique_key")} <= blocking


def test_daily_schedule_collects_yesterday_after_0010_utc():
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2025, 9, 15, 0, 10, tzinfo=timezone.utc)
        )
        schedule = defs.resolve_schedule_def(daily_batch_schedule.name)
        requests = list(schedule.evaluate_tick(context).run_requests or [])
    assert [r.partition_key for r in requests] == ["2025-09-14"]
    assert schedule.cron_schedule == "10 0 * * *" and schedule.execution_timezone in (None, "UTC")
    assert days_between(datetime(2025, 9, 1).date(), datetime(2025, 9, 3).date())[-1].isoformat() == "2025-09-02"
