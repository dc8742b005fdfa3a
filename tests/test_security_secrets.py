"""The Slack token never leaves the Authorization header.

A recognizable token is set, a real flow runs on a real (local_temp) Dagster instance: a streaming ingest, the daily
digest job and the alert delivery sensor, delivering to a local Slack-compatible server that first answers 500. Then
every place a secret could leak is scanned: captured logs and output, every event record of the instance (which holds the
materialization metadata), every file the instance wrote (run storage, compute logs), the lake's outbox and the bodies
the Slack server received.
"""

from __future__ import annotations

import logging
import secrets
import time

import dagster as dg
from dagster._serdes import serialize_value

from cryptoflow_dagster import lake
from cryptoflow_dagster.defs.alerts.digest import daily_digest_job
from cryptoflow_dagster.resources import slack_resource
from cryptoflow_dagster.defs.alerts.sensors import alert_delivery_sensor
from cryptoflow_dagster.defs.streaming.jobs import single_pass, streaming_ingest_job
from cryptoflow_dagster.resources import LakeResource, build_resources
from test_stream_job import fill_landing


def test_slack_token_appears_nowhere_but_the_authorization_header(settings, slack_server, monkeypatch, caplog, capfd,
                                                                  tmp_path):
    token = f"xoxb-CANARY-{secrets.token_hex(12)}"
    monkeypatch.setenv("SLACK_BOT_TOKEN", token)
    monkeypatch.setenv("CRYPTOFLOW_SLACK_API_URL", slack_server.url)
    caplog.set_level(logging.DEBUG)
    fill_landing(settings)
    slack_server.fail_next(1, status=500)  # an error path too: its message must not carry the token either

    instance_dir = tmp_path / "instance"
    instance_dir.mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(instance_dir)) as instance:
        assert streaming_ingest_job.execute_in_process(run_config=single_pass(), instance=instance, resources=build_resources()).success
        digest = daily_digest_job.execute_in_process(
            instance=instance, resources={"lake": LakeResource()},
            run_config={"ops": {"send_daily_digest": {"config": {"day": "2026-07-30"}}}})
        assert digest.success
        resources = {"lake": LakeResource(), "slack": slack_resource()}
        for _ in range(3):  # the first attempt meets the 500; the retry is due after a short backoff
            alert_delivery_sensor(dg.build_sensor_context(instance=instance, resources=resources))
            with lake.session(settings, read_only=True) as con:
                pending = con.execute("SELECT count(*) FROM gold.alerts WHERE status <> 'sent'").fetchone()[0]
            if not pending:
                break
            time.sleep(3)

        records = [serialize_value(r) for run in instance.get_runs() for r in instance.all_logs(run.run_id)]
        materializations = [r for r in records if "ASSET_MATERIALIZATION" in r]

    # the flow really ran and really used the token
    assert materializations and len(records) > 20
    assert slack_server.posts, "nothing was delivered"
    assert {c.authorization for c in slack_server.calls} == {f"Bearer {token}"}
    assert any(c.status == 500 for c in slack_server.calls)

    out, err = capfd.readouterr()
    assert token not in out and token not in err
    assert token not in caplog.text
    leaked = [r[:200] for r in records if token in r]
    assert not leaked, leaked
    for path in instance_dir.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), f"token written to {path}"
    for call in slack_server.calls:
        assert token.encode() not in call.raw and token not in str(call.body)
    with lake.session(settings, read_only=True) as con:
        alerts = con.execute("SELECT * FROM gold.alerts").fetchall()
    assert alerts and token not in repr(alerts)
    for path in settings.home.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".log", ".yaml", ".txt"):
            assert token not in path.read_text(errors="replace"), f"token written to {path}"
