"""Sidecar liveness from the heartbeat file (pure logic; the killed-sidecar case runs for real in test_alert_e2e.py)."""

import json
import os
from datetime import datetime, timedelta, timezone

from cryptoflow_dagster.alerting.heartbeat import read_heartbeat, sidecar_transition

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


def test_reads_updated_at_and_falls_back_to_mtime(tmp_path):
    path = tmp_path / "_heartbeat.json"
    assert read_heartbeat(path) == (None, {})
    path.write_text(json.dumps({"updated_at": "2026-01-05T11:59:58+00:00", "pid": 42, "streams": {"a": {}}}))
    assert read_heartbeat(path) == (datetime(2026, 1, 5, 11, 59, 58, tzinfo=timezone.utc), {"pid": "42"})
    path.write_text("{not json")  # a shape we do not know still tells its age
    os.utime(path, (NOW.timestamp() - 100, NOW.timestamp() - 100))
    assert read_heartbeat(path)[0] == NOW - timedelta(seconds=100)


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
