"""Sidecar liveness from the heartbeat file (pure logic; the killed-sidecar case runs for real in test_alert_e2e.py)."""

import json
import os
from datetime import datetime, timedelta, timezone

from cryptoflow_core.heartbeat import last_beat
from cryptoflow_dagster.alerting.heartbeat import sidecar_transition

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


def test_reads_updated_at_and_falls_back_to_mtime(tmp_path):
    path = tmp_path / "_heartbeat.json"
    assert last_beat(path) == (None, {})
    path.write_text(json.dumps({"updated_at": "2026-01-05T11:59:58+00:00", "pid": 42, "streams": {"a": {}}}))
    assert last_beat(path) == (datetime(2026, 1, 5, 11, 59, 58, tzinfo=timezone.utc), {"pid": "42"})
    path.write_text("{not json")  # a shape we do not know still tells its age
    os.utime(path, (NOW.timestamp() - 100, NOW.timestamp() - 100))
    assert last_beat(path)[0] == NOW - timedelta(seconds=100)


def test_one_alert_going_down_one_coming_back_none_while_unchanged():
    fresh, stale = NOW - timedelta(seconds=5), NOW - timedelta(seconds=90)
    assert sidecar_transition(False, fresh, NOW, 30, True) == (False, None)
    down, alert = sidecar_transition(False, stale, NOW, 30, True)
    assert down and alert.rule == "sidecar_down" and "last heartbeat 90s ago" in alert.message
    assert sidecar_transition(True, stale, NOW + timedelta(seconds=60), 30, True) == (True, None)
    up, back = sidecar_transition(True, NOW, NOW, 30, True)
    assert not up and back.rule == "sidecar_recovered"
    # The file vanishing after it was seen is down too; a sidecar never seen at all is not paged about.
    assert sidecar_transition(False, None, NOW, 30, True)[1].dedupe_key == "sidecar_down:missing"
    assert sidecar_transition(False, None, NOW, 30, False) == (False, None)


def test_sharded_sidecars_are_watched_one_by_one(settings, dagster_instance):
    """Two shards: the one that stops is paged about by name, the live one is not; a pre-shard cursor carries over."""
    import dagster as dg

    from cryptoflow_dagster import lake
    from cryptoflow_core.heartbeat import heartbeat_files
    from cryptoflow_dagster.defs.alerts.sensors import sidecar_heartbeat_sensor
    from cryptoflow_dagster.resources import LakeResource

    landing = settings.landing_dir
    landing.mkdir(parents=True)
    now = datetime.now(timezone.utc)

    def beat(shard: str, age_s: float) -> None:
        (landing / f"_heartbeat.{shard}.json").write_text(json.dumps({"updated_at": (now - timedelta(seconds=age_s)).isoformat()}))

    beat("kr", 1)
    beat("global", 1)
    (landing / "_heartbeat.json").write_text(json.dumps({"updated_at": now.isoformat()}))  # an unsharded one too
    (landing / "_heartbeat.EVIL;.json").write_text("{}")  # not a shard name: ignored
    assert set(heartbeat_files(landing)) == {"", "kr", "global"}
    instance = dagster_instance
    resources = {"lake": LakeResource()}
    cursor = json.dumps({"down": False, "seen": True})  # written by the sensor before it knew shards

    def tick() -> str:
        nonlocal cursor
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        message = sidecar_heartbeat_sensor(ctx).skip_message
        cursor = ctx.cursor
        return message

    assert tick() == "sidecar up; global up; kr up"
    beat("kr", 3600)  # shard kr stopped an hour ago
    assert tick() == "sidecar up; global up; kr down"
    assert tick() == "sidecar up; global up; kr down"  # still down: no second alert
    with lake.session(settings, read_only=True) as con:
        rows = con.execute("SELECT rule, message FROM gold.alerts ORDER BY triggered_at").fetchall()
    assert len(rows) == 1 and rows[0][0] == "sidecar_down" and "(shard kr)" in rows[0][1]
    beat("kr", 0)
    assert tick() == "sidecar up; global up; kr up"
    with lake.session(settings, read_only=True) as con:
        assert con.execute("SELECT rule FROM gold.alerts ORDER BY triggered_at").fetchall() == [("sidecar_down",),
                                                                                             ("sidecar_recovered",)]
