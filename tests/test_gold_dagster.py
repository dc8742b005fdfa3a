"""The gold dbt assets in Dagster: a real instance materializes them with a real dbt build, dbt tests come back as asset
check evaluations (passing on good data, failing on a duplicated silver row), and gold follows silver updates."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import dagster as dg
import polars as pl
import pytest

from cryptoflow_dagster import lake
from cryptoflow_dagster.dbt_project import dbt_resource
from cryptoflow_core.settings import load_settings
from cryptoflow_dagster.defs.gold.dbt import gold_dbt_assets
from cryptoflow_dagster.resources import LakeResource
from cryptoflow_dagster.defs.gold.translator import gold_asset_key
from cryptoflow_dagster.defs.silver.candles import silver_candle_assets
from cryptoflow_dagster.resources import build_resources

GOLD_MARTS = ("volatility_daily", "volatility_rolling", "indicators_daily", "sentiment_daily")


def _daily(days: int, start: date = date(2025, 9, 1)) -> pl.DataFrame:
    close = [100.0 + (i % 7) - (i % 3) for i in range(days)]
    return pl.DataFrame(
        {
            "exchange": "upbit",
            "market": "KRW-BTC",
            "day": [start + timedelta(days=i) for i in range(days)],
            "open": close,
            "high": [c + 2 for c in close],
            "low": [c - 2 for c in close],
            "close": close,
            "volume": 1.0,
            "quote_volume": close,
        }
    )


def _minutes(n: int) -> pl.DataFrame:
    start = datetime(2025, 9, 1, tzinfo=timezone.utc)
    close = [100.0 + (i % 5) for i in range(n)]
    return pl.DataFrame(
        {
            "exchange": "upbit",
            "market": "KRW-BTC",
            "ts": [start + timedelta(minutes=i) for i in range(n)],
            "open": close,
            "high": [c + 1 for c in close],
            "low": [c - 1 for c in close],
            "close": close,
            "volume": 1.0,
            "quote_volume": close,
        }
    )


@pytest.fixture
def silver_lake(settings):
    fear = pl.DataFrame({"day": [date(2025, 9, 1), date(2025, 9, 2)], "value": [30, 40], "classification": ["Fear"] * 2})
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        lake.write(
            con,
            lambda c: (
                lake.insert(c, "silver.candles_1d", _daily(40)),
                lake.insert(c, "silver.candles_1m", _minutes(30)),
                lake.insert(c, "silver.fear_greed", fear.with_columns(pl.col("value").cast(pl.Int32))),
            ),
        )
    return settings


def _evaluations(result: dg.ExecuteInProcessResult) -> dict[str, list[bool]]:
    by_check: dict[str, list[bool]] = {}
    for evaluation in result.get_asset_check_evaluations():
        key = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        by_check.setdefault(key, []).append(evaluation.passed)
    return by_check


def test_materialize_gold_with_dbt_tests_as_asset_checks(silver_lake, dagster_instance):
    settings = silver_lake
    instance = dagster_instance
    expected_checks = {
        f"{key.asset_key.to_user_string()}:{key.name}" for key in gold_dbt_assets().check_keys
    }
    assert len(expected_checks) >= 20

    good = dg.materialize([gold_dbt_assets()], resources={"dbt": dbt_resource(), "lake": LakeResource()}, instance=instance)
    assert good.success
    materialized = {event.asset_key for event in good.get_asset_materialization_events()}
    assert materialized == {gold_asset_key("model", m) for m in GOLD_MARTS}
    checks = _evaluations(good)
    assert set(checks) == expected_checks
    assert all(all(passed) for passed in checks.values())
    with lake.session(settings, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM gold.indicators_daily").fetchone() == (40,)
    # dbt's artifacts went under the data home, not into the repository's dbt_project/target
    assert list((settings.home / "dbt" / "runs").glob("*/run_results.json"))

    # bad silver data: the same daily candle twice breaks the one-row-per-day grain of the daily marts
    with lake.session(settings) as con:
        lake.write(con, lambda c: lake.insert(c, "silver.candles_1d", _daily(1, start=date(2025, 9, 10))))
    # only the marts that read daily candles: a subset run is `dbt build --select` of those models and their tests
    bad = dg.materialize(
        [gold_dbt_assets()],
        selection=[dg.AssetKey(["gold", "indicators_daily"]), dg.AssetKey(["gold", "sentiment_daily"])],
        resources={"dbt": dbt_resource(), "lake": LakeResource()},
        instance=instance,
        raise_on_error=False,
    )
    assert not bad.success  # an error-severity dbt test fails the run (and so alerts)
    checks = _evaluations(bad)
    failed = {key for key, passed in checks.items() if not all(passed)}
    assert failed == {
        "gold/indicators_daily:unique_combination_indicators_daily_exchange__market__day",
        "gold/sentiment_daily:unique_combination_sentiment_daily_exchange__market__day",
    }
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey(["gold", "indicators_daily"]), "unique_combination_indicators_daily_exchange__market__day"),
        limit=5,
    )
    assert [r.status.value for r in history][:2] == ["FAILED", "SUCCEEDED"]


def test_gold_follows_silver_updates(dagster_instance):
    defs = dg.Definitions(assets=[*silver_candle_assets(load_settings()), gold_dbt_assets()], resources=build_resources())
    instance = dagster_instance
    gold_keys = {gold_asset_key("model", m) for m in GOLD_MARTS}

    quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert quiet.total_requested == 0  # nothing in silver changed

    # one day of 1-minute candles (most days still missing): only the mart built from them follows, once
    instance.report_runless_asset_event(dg.AssetMaterialization(["silver", "candles_1m"], partition="2025-09-02"))
    after_1m = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor)
    assert {key for key in gold_keys if after_1m.get_num_requested(key)} == {
        dg.AssetKey(["gold", "volatility_daily"])
    }

    handled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after_1m.cursor)
    assert handled.total_requested == 0

    instance.report_runless_asset_event(dg.AssetMaterialization(["silver", "candles_1d"], partition="2025-09-02"))
    after_1d = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=handled.cursor)
    assert {key for key in gold_keys if after_1d.get_num_requested(key)} == {
        dg.AssetKey(["gold", m]) for m in ("volatility_rolling", "indicators_daily", "sentiment_daily")
    }

    handled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after_1d.cursor)
    assert handled.total_requested == 0

    instance.report_runless_asset_event(dg.AssetMaterialization(["silver", "fear_greed"], partition="2025-09-02"))
    after_fg = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=handled.cursor)
    assert {key for key in gold_keys if after_fg.get_num_requested(key)} == {
        dg.AssetKey(["gold", "sentiment_daily"])
    }


def test_code_location_runs_gold_automation_for_the_marts():
    from cryptoflow_dagster.definitions import defs as load_code_location
    defs = load_code_location()

    sensor = defs.resolve_sensor_def("gold_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    selected = sensor.asset_selection.resolve(defs.resolve_asset_graph())
    assert selected == {gold_asset_key("model", m) for m in GOLD_MARTS}
