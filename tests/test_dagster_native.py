"""Dagster-native observability: freshness policies on the streaming and daily assets, a stale asset alerting through
the outbox to Slack (Dagster's own freshness daemon on a real instance), and table metadata (row counts as the lake
holds them, column schemas from the lake's DDL) on every table asset."""

from __future__ import annotations

import json
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import httpx
import pytest
from dagster._core.definitions.freshness import CronFreshnessPolicy, FreshnessState, TimeWindowFreshnessPolicy
from dagster._core.test_utils import freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._daemon.freshness import FreshnessDaemon

from cryptoflow_dagster import lake
from cryptoflow_dagster.defs.alerts.freshness_sensor import asset_freshness_alert_sensor
from cryptoflow_dagster.defs.alerts.sensors import alert_delivery_sensor
from cryptoflow_dagster.defs.lake_tables import column_schema
from cryptoflow_dagster.definitions import defs as load_code_location
from cryptoflow_dagster.resources import LakeResource, SlackAlertsResource
from tests.test_gold_dagster import GOLD_MARTS, silver_lake  # noqa: F401 (silver_lake is a fixture)

REPO = Path(__file__).resolve().parents[1]
STREAMING = ["bronze/trades_raw", "silver/trades", "gold/ohlcv_1m_from_trades", "gold/market_stats_24h",
             "gold/kimchi_premium_1m"]
DAILY = ["bronze/candles_raw", "bronze/fear_greed_raw", "silver/candles_1m", "silver/candles_1d", "silver/fear_greed",
         "gold/volatility_daily", "gold/volatility_rolling", "gold/indicators_daily", "gold/sentiment_daily"]
PYTHON_TABLES = ["bronze/trades_raw", "bronze/candles_raw", "bronze/tickers_raw", "bronze/fear_greed_raw",
                 "silver/trades", "silver/candles_1m", "silver/candles_1d", "silver/fear_greed", "gold/alerts",
                 "gold/ohlcv_1m_from_trades", "gold/market_stats_24h", "gold/kimchi_premium_1m", "ops/ingested_files",
                 "ops/gaps"]


def key(path: str) -> dg.AssetKey:
    return dg.AssetKey(path.split("/"))


def test_freshness_policies_on_the_streaming_and_daily_assets(cryptoflow_home):
    graph = load_code_location().resolve_asset_graph()
    for path in STREAMING:
        policy = graph.get(key(path)).freshness_policy
        assert isinstance(policy, TimeWindowFreshnessPolicy), path
        assert policy.warn_window.to_timedelta() == timedelta(minutes=2), path
        assert policy.fail_window.to_timedelta() == timedelta(minutes=5), path
    for path in DAILY:
        policy = graph.get(key(path)).freshness_policy
        assert isinstance(policy, CronFreshnessPolicy), path
        # due by 03:00 UTC, materialized since 00:00 UTC: the 00:10 daily run plus almost three hours of slack
        assert (policy.deadline_cron, policy.lower_bound_delta, policy.timezone) == (
            "0 3 * * *", timedelta(hours=3), "UTC"), path
    with_policy = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).freshness_policy}
    assert with_policy == set(STREAMING) | set(DAILY)


def test_column_schemas_from_the_ddl_equal_the_lake_tables(settings):
    """The definition metadata is parsed from the DDL text; the lake built from that DDL must describe the same."""
    graph = load_code_location().resolve_asset_graph()
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        for path in PYTHON_TABLES:
            table = path.replace("/", ".")
            schema_name, name = table.split(".")
            described = con.execute(
                "SELECT column_name, data_type, is_nullable FROM duckdb_columns() WHERE database_name = 'lake' "
                "AND schema_name = ? AND table_name = ? ORDER BY column_index", [schema_name, name]).fetchall()
            metadata = graph.get(key(path)).metadata
            assert metadata["dagster/table_name"] == f"lake.{table}"
            schema = metadata["dagster/column_schema"]
            schema = getattr(schema, "schema", schema)
            assert schema == column_schema(table)
            assert [(c.name, c.type, c.constraints.nullable) for c in schema.columns] == described, path


def test_daily_batch_reports_each_days_row_count_as_the_lake_holds_it(sim_session, settings, monkeypatch, dagster_instance):
    for name, value in sim_session.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CRYPTOFLOW_UPBIT_MARKETS", "KRW-BTC")
    monkeypatch.setenv("CRYPTOFLOW_BINANCE_SYMBOLS", "BTCUSDT")
    today = datetime.now(timezone.utc).date()
    days = [today - timedelta(days=2), today - timedelta(days=1)]
    tags = {"dagster/asset_partition_range_start": str(days[0]), "dagster/asset_partition_range_end": str(days[-1])}
    result = load_code_location().resolve_job_def("daily_batch").execute_in_process(
        instance=dagster_instance, tags=tags)
    assert result.success
    events = result.get_asset_materialization_events()
    with lake.session(settings, read_only=True) as con:
        for path in ("bronze/candles_raw", "bronze/fear_greed_raw", "silver/candles_1m", "silver/candles_1d",
                     "silver/fear_greed"):
            table = path.replace("/", ".")
            total = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            per_day = dict(con.execute(f"SELECT day, count(*) FROM {table} GROUP BY day").fetchall())
            assert total > 0 and set(per_day) == set(days), path
            mine = {e.partition: e.materialization.metadata for e in events if e.asset_key == key(path)}
            assert set(mine) == {str(d) for d in days}, path  # one materialization per day of the range run
            for day in days:
                assert mine[str(day)]["dagster/partition_row_count"].value == per_day[day], (path, day)
                assert mine[str(day)]["dagster/row_count"].value == total, (path, day)
    assert per_day[days[0]] == 1  # silver/fear_greed: one entry a day


def test_dbt_marts_report_row_counts_and_columns_from_the_lake(silver_lake, dagster_instance):
    """dagster-dbt's fetch_row_counts() cannot open this profile's lake (see defs/gold/dbt.py): the asset counts."""
    from cryptoflow_dagster.dbt_project import dbt_resource
    from cryptoflow_dagster.defs.gold.dbt import gold_dbt_assets

    result = dg.materialize([gold_dbt_assets()], resources={"dbt": dbt_resource(), "lake": LakeResource()},
                            instance=dagster_instance)
    assert result.success
    events = {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert set(events) == set(GOLD_MARTS)
    with lake.session(silver_lake, read_only=True) as con:
        for mart, metadata in events.items():
            assert metadata["dagster/row_count"].value == con.execute(
                f"SELECT count(*) FROM gold.{mart}").fetchone()[0] > 0, mart
            described = con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = 'lake' AND schema_name = 'gold' "
                "AND table_name = ? ORDER BY column_index", [mart]).fetchall()
            columns = metadata["dagster/column_schema"].value.columns
            assert [(c.name, c.type) for c in columns] == described, mart


def _land_stream(settings):
    """The streaming test's landing files, plus two Upbit ticker frames."""
    from tests.test_landing_retention import ticker
    from tests.test_stream_job import T0, fill_landing

    batcher = fill_landing(settings)
    now_us = int(time.time() * 1e6)
    batcher.add("upbit", "ticker", "KRW-BTC", None, T0, now_us, "s1", ticker("KRW-BTC", T0, 100_000_000.0), None)
    batcher.add("upbit", "ticker", "KRW-ETH", None, T0 + 5, now_us, "s1", ticker("KRW-ETH", T0 + 5, 5_000_000.0), None)
    batcher.flush()
    return batcher


def _run_stream(instance) -> dg.ExecuteInProcessResult:
    from cryptoflow_dagster.defs.streaming.jobs import single_pass, streaming_ingest_job
    from cryptoflow_dagster.resources import build_resources

    result = streaming_ingest_job.execute_in_process(run_config=single_pass(), instance=instance,
                                                     resources=build_resources())
    assert result.success
    return result


def _check_stream_row_counts(settings, result, expected=frozenset({*STREAMING, "bronze/tickers_raw"})) -> None:
    events = result.get_asset_materialization_events()
    seen = set()
    with lake.session(settings, read_only=True) as con:
        for event in events:
            table = ".".join(event.asset_key.path)
            metadata = event.materialization.metadata
            total = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            assert metadata["dagster/row_count"].value == total > 0, table
            if event.partition is not None:
                day = date.fromisoformat(event.partition)
                # market_stats_24h holds one row per market as of now, no day: its day figure is the table's
                where = "" if table == "gold.market_stats_24h" else " WHERE day = ?"
                rows = con.execute(f"SELECT count(*) FROM {table}{where}", [day] if where else []).fetchone()[0]
                assert metadata["dagster/partition_row_count"].value == rows, table
            seen.add(event.asset_key.to_user_string())
    assert seen == set(expected)


def test_day_rebuilds_report_the_partitions_row_counts(settings, dagster_instance):
    from cryptoflow_dagster.defs.gold.intraday import intraday_gold_assets
    from cryptoflow_dagster.defs.silver.trades import trade_assets
    from cryptoflow_dagster.resources import build_resources

    _land_stream(settings)
    instance = dagster_instance
    _run_stream(instance)
    result = dg.materialize([trade_assets(settings)[1], intraday_gold_assets(settings)], partition_key="2026-07-30",
                            resources=build_resources(), instance=instance)
    assert result.success
    _check_stream_row_counts(settings, result, {"silver/trades", *STREAMING[2:]})


def _freshness_workspace(instance) -> WorkspaceProcessContext:
    """The code location loaded in this process, as the daemon loads it (no gRPC server)."""
    origin = LoadableTargetOrigin(executable_path=sys.executable, module_name="cryptoflow_dagster.definitions",
                                  attribute="defs", working_directory=str(REPO))
    return WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(InProcessCodeLocationOrigin(origin)))


def _states(instance) -> dict[str, str]:
    records = instance.get_freshness_state_records([key(p) for p in STREAMING])
    return {k.to_user_string(): r.freshness_state.value for k, r in records.items()}


@pytest.fixture
def instance(cryptoflow_home):
    (cryptoflow_home / "dagster_instance").mkdir()
    with dg.DagsterInstance.local_temp(str(cryptoflow_home / "dagster_instance")) as inst:
        yield inst


def test_streaming_row_counts_and_a_stale_stream_alerts_through_the_outbox(settings, instance, slack_server):
    """A streaming run reports the lake's row counts; Dagster's freshness daemon then finds the streamed assets
    stale 6 minutes later (time frozen for Dagster), the sensor records one alert per asset, delivery posts them to
    Slack, and the next streaming run makes them fresh again: one more message each, nothing twice."""
    batcher = _land_stream(settings)
    _check_stream_row_counts(settings, _run_stream(instance))

    defs = load_code_location()
    daemon = FreshnessDaemon()
    lake_resource = {"lake": LakeResource()}
    slack = SlackAlertsResource(api_url=slack_server.url, channel="#alerts", ui_url="http://dagster.test")

    def sensor_tick(cursor):
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=lake_resource)
        skip = asset_freshness_alert_sensor(ctx)
        return ctx.cursor, skip.skip_message

    def deliver():
        ctx = dg.build_sensor_context(instance=instance, resources={**lake_resource, "slack": slack})
        return alert_delivery_sensor(ctx).skip_message

    def alerts():
        with lake.session(settings, read_only=True) as con:
            return con.execute("SELECT rule, message, status FROM gold.alerts ORDER BY triggered_at, message").fetchall()

    with _freshness_workspace(instance) as workspace:
        list(daemon.run_iteration(workspace))
        assert set(_states(instance).values()) == {"PASS"}
        cursor, _ = sensor_tick(None)  # first tick: nothing stale, the cursor starts at the newest state change
        with freeze_time(datetime.now(timezone.utc) + timedelta(minutes=6)):
            list(daemon.run_iteration(workspace))
        assert set(_states(instance).values()) == {FreshnessState.FAIL.value}
        cursor, summary = sensor_tick(cursor)
        assert "5 alerts" in summary, summary
        assert "sent 5" in deliver()

        stale = alerts()
        assert [r[0] for r in stale] == ["asset_stale"] * 5 and {r[2] for r in stale} == {"sent"}
        texts = [p.body["text"] for p in slack_server.posts]
        assert sum("Stale: silver.trades" in t for t in texts) == 1, texts
        post = json.dumps(next(p.body["blocks"] for p in slack_server.posts if "silver.trades" in p.body["text"]))
        assert "materialized at least every 5 min (warn after 2 min)" in post
        assert "<http://dagster.test/assets/silver/trades|Open in Dagster>" in post

        # still stale on the next evaluation: no new state change, no new message; a lost cursor repeats nothing
        with freeze_time(datetime.now(timezone.utc) + timedelta(minutes=7)):
            list(daemon.run_iteration(workspace))
        cursor, summary = sensor_tick(cursor)
        assert "0 alerts" in summary
        sensor_tick(None)
        assert len(alerts()) == 5

        # the stream flows again: a new file, a streaming run, fresh on the next evaluation
        from tests.test_stream_job import T0, land, upbit

        land(batcher, "upbit", "KRW-BTC", 14, T0 + 62_000, upbit("KRW-BTC", 14, T0 + 62_000, 99_500_000.0, 0.1))
        batcher.flush()
        _run_stream(instance)
        list(daemon.run_iteration(workspace))
        assert set(_states(instance).values()) == {"PASS"}
        cursor, summary = sensor_tick(cursor)
        assert "5 alerts" in summary, summary
        assert "sent 5" in deliver()
    rules = [r[0] for r in alerts()]
    assert rules.count("asset_stale") == 5 and rules.count("asset_fresh") == 5
    texts = [p.body["text"] for p in slack_server.posts]
    assert len(texts) == 10 and sum("Fresh again: silver.trades" in t for t in texts) == 1, texts


def test_dagster_dev_shows_the_freshness_policies_and_runs_the_freshness_daemon(dagster_ui):
    query = """{
      assetNodes { assetKey { path } internalFreshnessPolicy {
        __typename
        ... on TimeWindowFreshnessPolicy { failWindowSeconds warnWindowSeconds }
        ... on CronFreshnessPolicy { deadlineCron lowerBoundDeltaSeconds timezone } } }
      instance { daemonHealth { allDaemonStatuses { daemonType required } } }
    }"""
    data = httpx.post(f"{dagster_ui}/graphql", json={"query": query}, timeout=30).json()["data"]
    policies = {"/".join(n["assetKey"]["path"]): n["internalFreshnessPolicy"] for n in data["assetNodes"]}
    assert policies["silver/trades"] == {"__typename": "TimeWindowFreshnessPolicy", "failWindowSeconds": 300,
                                         "warnWindowSeconds": 120}
    assert policies["gold/indicators_daily"] == {"__typename": "CronFreshnessPolicy", "deadlineCron": "0 3 * * *",
                                                 "lowerBoundDeltaSeconds": 10800, "timezone": "UTC"}
    daemons = {d["daemonType"]: d["required"] for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]}
    assert daemons.get("FRESHNESS_DAEMON") is True  # dagster-daemon evaluates the policies: no flag needed
