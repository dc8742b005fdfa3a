"""The Dagster side of alerting on a real instance: failed/recovered asset checks, failed runs, the delivery sensor with
the token from dg.EnvVar, through the outbox to a local Slack-compatible server."""


import json
import logging
from pathlib import Path

import dagster as dg
import pytest

from cryptoflow_dagster import lake
from cryptoflow_dagster.alerting.delivery import deliver_pending
from cryptoflow_dagster.alerting.slack import SlackPoster
from cryptoflow_dagster.defs.alerts.check_sensor import asset_check_alert_sensor
from cryptoflow_dagster.resources import SlackAlertsResource
from cryptoflow_dagster.defs.alerts.sensors import alert_delivery_sensor, run_failure_alert_sensor
from cryptoflow_dagster.resources import LakeResource

TOKEN = "xoxb-9999-8888-AlsoNotARealToken"
DAYS = dg.StaticPartitionsDefinition(["2026-01-01", "2026-01-02"])


def closes_defs(source: Path) -> dg.Definitions:
    """A partitioned gold asset whose closes come from ``source`` and a check that they are positive."""

    @dg.asset(key=["gold", "demo_close"], partitions_def=DAYS)
    def demo_close(context: dg.AssetExecutionContext) -> list[float]:
        return json.loads(source.read_text())[context.partition_key]

    @dg.asset_check(asset=demo_close, name="closes_positive", partitions_def=DAYS)
    def closes_positive(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        bad = [c for c in json.loads(source.read_text())[context.partition_key] if c <= 0]
        return dg.AssetCheckResult(passed=not bad, metadata={"bad_rows": len(bad), "sample": str(bad[:3])})

    return dg.Definitions(assets=[demo_close], asset_checks=[closes_positive], sensors=[asset_check_alert_sensor])


def tick(instance, defs, cursor):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources={"lake": LakeResource()})
    asset_check_alert_sensor(ctx)
    return ctx.cursor


def rules_in_outbox(settings) -> list[tuple[str, str]]:
    with lake.session(settings) as con:
        return con.execute("SELECT rule, message FROM gold.alerts ORDER BY triggered_at, alert_id").fetchall()


@pytest.fixture
def instance(cryptoflow_home):
    (cryptoflow_home / "dagster_instance").mkdir()
    with dg.DagsterInstance.local_temp(str(cryptoflow_home / "dagster_instance")) as inst:
        yield inst


# A partitioned asset check (a Dagster preview API) is what makes Dagster record a partition per evaluation: this test
# covers that branch of our code. Production defs declare no partitioned check, so the warning is accepted here only.
@pytest.mark.filterwarnings("ignore:Specifying a partitions_def on an AssetCheckSpec:dagster.PreviewWarning")
def test_failing_check_one_message_per_partition_and_one_recovery(settings, instance, slack_server, tmp_path):
    source = tmp_path / "closes.json"
    defs = closes_defs(source)
    job = defs.resolve_implicit_global_asset_job_def()

    def run(partition: str, data: dict) -> None:
        source.write_text(json.dumps(data))
        result = job.execute_in_process(instance=instance, partition_key=partition)
        assert result.success

    bad = {"2026-01-01": [100.0, -1.0], "2026-01-02": [0.0, 5.0]}
    good = {"2026-01-01": [100.0, 101.0], "2026-01-02": [1.0, 5.0]}
    run("2026-01-01", bad)
    cursor = tick(instance, defs, None)
    run("2026-01-01", bad)  # still failing: no second message
    cursor = tick(instance, defs, cursor)
    run("2026-01-02", bad)  # another partition: its own message
    cursor = tick(instance, defs, cursor)
    run("2026-01-01", good)  # passes again: recovered
    cursor = tick(instance, defs, cursor)
    assert json.loads(cursor)["failing"] == ["gold/demo_close:closes_positive|2026-01-02"]
    # A lost cursor re-reads all history: the same dedupe keys come out and the outbox drops them.
    tick(instance, defs, None)
    assert [r[0] for r in rules_in_outbox(settings)] == ["check_failed", "check_failed", "check_recovered"]

    with lake.session(settings) as con:
        deliver_pending(con, SlackPoster(TOKEN, slack_server.url, "#alerts"), "http://dagster.test")
    texts = [c.body["text"] for c in slack_server.posts]
    assert len(texts) == 3
    assert "Check failed" in texts[0] and "[2026-01-01]" in texts[0]
    assert "Check failed" in texts[1] and "[2026-01-02]" in texts[1]
    assert "Recovered" in texts[2] and "[2026-01-01]" in texts[2]
    first = json.dumps(slack_server.posts[0].body["blocks"])
    assert "*bad_rows*\\n1" in first and "-1.0" in first  # the check's metadata
    assert "<http://dagster.test/assets/gold/demo_close?view=checks|Open in Dagster>" in first


def test_failed_run_becomes_one_alert_with_a_link(settings, instance, slack_server):
    @dg.op
    def fetch_candles() -> None:
        raise RuntimeError("exchange answered 418 for KRW-BTC")

    @dg.job(name="candles_job")
    def candles_job() -> None:
        fetch_candles()

    result = candles_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    for _ in range(2):  # the sensor seeing the same failure twice still makes one alert
        ctx = dg.build_run_status_sensor_context(
            sensor_name="run_failure_alert_sensor", dagster_event=result.get_run_failure_event(),
            dagster_instance=instance, dagster_run=result.dagster_run, resources={"lake": LakeResource()},
        ).for_run_failure()
        run_failure_alert_sensor(ctx)
    assert [r[0] for r in rules_in_outbox(settings)] == ["run_failure"]
    with lake.session(settings) as con:
        deliver_pending(con, SlackPoster(TOKEN, slack_server.url, "#alerts"), "http://dagster.test")
    (post,) = slack_server.posts
    blocks = json.dumps(post.body["blocks"])
    assert "candles_job" in post.body["text"] and "exchange answered 418" in blocks
    assert f"http://dagster.test/runs/{result.run_id}" in blocks


def test_delivery_sensor_uses_the_env_token_and_never_shows_it(settings, instance, slack_server, monkeypatch, caplog):
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    from cryptoflow_dagster.alerting import outbox
    from cryptoflow_dagster.alerting.runs import run_failure_alert
    from datetime import datetime, timezone

    with lake.session(settings) as con:
        lake.ensure_schema(con)
        outbox.record(con, [run_failure_alert("r1", "daily_job", "boom", [], datetime.now(timezone.utc))])
    slack = SlackAlertsResource(token=dg.EnvVar("SLACK_BOT_TOKEN"), api_url=slack_server.url, channel="#ops",
                                ui_url="http://dagster.test")
    ctx = dg.build_sensor_context(instance=instance, resources={"lake": LakeResource(), "slack": slack})
    skip = alert_delivery_sensor(ctx)
    assert "sent 1" in skip.skip_message
    (post,) = slack_server.posts
    assert post.authorization == f"Bearer {TOKEN}" and post.body["channel"] == "#ops"
    assert TOKEN not in post.raw.decode() and TOKEN not in caplog.text and TOKEN not in skip.skip_message


def test_platform_definitions_carry_the_alerting_pieces(cryptoflow_home):
    from cryptoflow_dagster.definitions import defs as load_code_location
    defs = load_code_location()

    repo = defs.get_repository_def()
    names = {s.name for s in repo.sensor_defs}
    assert {"alert_delivery_sensor", "sidecar_heartbeat_sensor", "run_failure_alert_sensor",
            "asset_check_alert_sensor"} <= names
    assert repo.get_schedule_def("daily_digest_schedule").cron_schedule == "0 1 * * *"
    assert "slack" in repo.get_top_level_resources()
