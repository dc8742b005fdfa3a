"""The long-lived streaming run: its loop takes files as they land, ends on its limits, repairs and reports on the way.

Real DuckLake, real landing files from the sidecar's MicroBatcher, the real Dagster job; time is driven by the test
(the loop's clock and sleep are parameters), so "files land while the run sleeps" is exact, not a race.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from datetime import datetime, timedelta, timezone

import dagster as dg

from cryptoflow_dagster import lake
from cryptoflow_dagster.resources import slack_resource
from cryptoflow_dagster.defs.alerts.sensors import market_alert_sensor
from cryptoflow_dagster.streaming.ingest import IngestResult
from cryptoflow_dagster.defs.streaming.jobs import streaming_ingest_job
from cryptoflow_dagster.streaming.loop import LoopLimits, run_ingest_loop
from cryptoflow_dagster.resources import LakeResource, build_resources
from cryptoflow_dagster.instance import SILVER_WRITER_TAG, instance_config
from cryptoflow_core import landing_files
from streaming_sensor.batches import MicroBatcher
from tests.test_stream_job import T0, binance, land, query, upbit


class FakeTime:
    """The loop's clock and sleep: each sleep advances time and may land the next micro-batch first."""

    def __init__(self, batches: list) -> None:
        self.now = 0.0
        self.sleeps = 0
        self.batches = batches

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if self.batches:
            self.batches.pop(0)()
        self.now += seconds


def binance_batch(b: MicroBatcher, first_id: int, n: int = 10):
    def write() -> None:
        for i in range(first_id, first_id + n):
            land(b, "binance", "BTCUSDT", i, T0 + i, binance("BTCUSDT", i, T0 + i, "70000.0", "0.001"))
        b.flush()
    return write


def test_the_loop_ingests_files_landing_while_it_runs_then_ends_when_idle(settings):
    b = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
    binance_batch(b, 0)()  # pending before the run starts
    time = FakeTime([binance_batch(b, 10), lambda: None, binance_batch(b, 20)])  # a quiet look between two batches
    reports: list[IngestResult] = []
    repairs: list[float] = []
    limits = LoopLimits(max_s=100, idle_s=3, poll_s=1, repair_every_s=2, report_every_s=0)
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        total = run_ingest_loop(con, settings.landing_dir, "loop-run", limits, repair=lambda: repairs.append(time.now),
                                report=reports.append, clock=time.clock, sleep=time.sleep)
    assert (total.files, total.silver_rows) == (3, 30)
    assert query(settings, "SELECT count(DISTINCT trade_id), min(trade_id), max(trade_id) FROM silver.trades") == [(30, 0, 29)]
    assert query(settings, "SELECT DISTINCT run_id FROM ops.ingested_files") == [("loop-run",)]  # one run took all three
    assert [r.files for r in reports] == [1, 1, 1]  # each batch reported as it went in
    # idle: the last file came in at t=3 (after the third sleep), the run ended 3 s later
    assert time.now == 6 and time.sleeps == 6
    assert repairs == [2, 4, 6]


def test_the_loop_stops_at_its_lifetime_or_when_asked_and_zero_means_one_pass(settings):
    b = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
    busy = FakeTime([binance_batch(b, i * 10) for i in range(50)])  # a file lands before every look: never idle
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        total = run_ingest_loop(con, settings.landing_dir, "r1", LoopLimits(max_s=5, idle_s=3, poll_s=1, repair_every_s=60),
                                clock=busy.clock, sleep=busy.sleep)
        assert busy.now == 5 and total.files == 5  # the lifetime ends a run that is never idle
        asked = FakeTime([binance_batch(b, 1000 + i * 10) for i in range(50)])
        looks = iter([False, False, True])
        total = run_ingest_loop(con, settings.landing_dir, "r2", LoopLimits(max_s=100, idle_s=30, poll_s=1, repair_every_s=60),
                                should_stop=lambda: next(looks), clock=asked.clock, sleep=asked.sleep)
        assert total.files == 2 and asked.sleeps == 2  # a waiting gap-repair run ends it at the third look
        binance_batch(b, 2000)()
        once = FakeTime([binance_batch(b, 3000)])
        repairs = []
        total = run_ingest_loop(con, settings.landing_dir, "r3", LoopLimits(max_s=0, idle_s=30, poll_s=1, repair_every_s=0),
                                repair=lambda: repairs.append(1), clock=once.clock, sleep=once.sleep)
        assert total.files == 1 and once.sleeps == 0 and repairs == []  # one pass: what was pending, no repair
    assert query(settings, "SELECT count(*), count(DISTINCT trade_id) FROM silver.trades") == [(80, 80)]


def test_new_files_takes_a_shards_late_file_with_an_older_name_and_survives_a_cursor(settings):
    root = settings.landing_dir
    base = datetime(2026, 7, 30, 7, 4, tzinfo=timezone.utc)

    def put(when: datetime, session: str) -> landing_files.LandingFile:
        path = landing_files.landing_path(root, "binance", "trade", when, session, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        return landing_files.parse(path, root)

    a1 = put(base, "aaaaaaaa")
    reader = landing_files.NewFiles(root)
    assert reader.poll() == [a1]
    reader.take([a1])
    a2 = put(base + timedelta(seconds=2), "aaaaaaaa")
    late = put(base + timedelta(seconds=1), "bbbbbbbb")  # shard b flushed before a2 but its rename came after
    resumed = landing_files.NewFiles.from_cursor(root, reader.cursor())
    assert resumed.poll() == [late, a2]
    resumed.take([late, a2])
    assert resumed.poll() == []
    # a cursor cannot smuggle a path outside the landing contract
    hostile = landing_files.NewFiles.from_cursor(root, json.dumps({"after": None, "taken": ["../../etc/passwd"]}))
    assert hostile.taken == {}


def test_market_alert_sensor_alerts_on_landed_files_with_history_not_yet_in_silver(settings, slack_server, monkeypatch,
                                                                                    dagster_instance):
    monkeypatch.setenv("CRYPTOFLOW_SLACK_API_URL", slack_server.url)
    monkeypatch.setenv("CRYPTOFLOW_ALERT_WATCH_S", "0")  # one look per tick: each call below sees what landed before it
    now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    b = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
    land(b, "upbit", "KRW-BTC", 1, now_ms - 60_000, upbit("KRW-BTC", 1, now_ms - 60_000, 100_000_000.0, 0.1))
    b.flush()
    resources = {"lake": LakeResource(), "slack": slack_resource()}
    instance = dagster_instance
    ctx = dg.build_sensor_context(instance=instance, cursor=None, resources=resources)
    assert "0 alerts" in market_alert_sensor(ctx).skip_message
    # +5% against a trade that is landed but not in silver (no streaming run yet): still a price move
    land(b, "upbit", "KRW-BTC", 2, now_ms, upbit("KRW-BTC", 2, now_ms, 105_000_000.0, 0.1))
    b.flush()
    ctx = dg.build_sensor_context(instance=instance, cursor=ctx.cursor, resources=resources)
    assert "1 alerts, sent 1" in market_alert_sensor(ctx).skip_message
    assert query(settings, "SELECT count(*) FROM silver.trades") == [(0,)]
    assert query(settings, "SELECT rule, market, status FROM gold.alerts") == [("price_move", "KRW-BTC", "sent")]
    assert len([c for c in slack_server.posts if "KRW-BTC moved +5.00%" in c.body.get("text", "")]) == 1
    ctx = dg.build_sensor_context(instance=instance, cursor=ctx.cursor, resources=resources)
    assert "no new trade files" in market_alert_sensor(ctx).skip_message  # the cursor moved past both files


def test_streaming_and_gap_repair_share_one_silver_writer_slot(cryptoflow_home, settings, dagster_instance):
    limits = instance_config(settings)["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": SILVER_WRITER_TAG, "value": "true", "limit": 1} in limits  # a "handover" successor overlaps
    assert streaming_ingest_job.tags[SILVER_WRITER_TAG] == "true"
    result = streaming_ingest_job.execute_in_process(
        instance=dagster_instance, resources=build_resources(),
        run_config={"ops": {"ingest_landing_files": {"config": {"max_seconds": 30, "idle_seconds": 0}}}})
    assert result.success  # with nothing landed and idle 0, a long-lived run ends at once
    assert os.environ["CRYPTOFLOW_HOME"] == str(settings.home)


def test_market_alert_sensor_tick_watches_and_alerts_on_a_file_landing_during_the_tick(settings, slack_server, monkeypatch,
                                                                                         dagster_instance):
    """Dagster starts a sensor tick at most every 5 s: the tick itself watches the landing folder, so a shock landing
    while it runs is alerted and delivered by that tick, not by the next one."""
    monkeypatch.setenv("CRYPTOFLOW_SLACK_API_URL", slack_server.url)
    monkeypatch.setenv("CRYPTOFLOW_ALERT_WATCH_S", "8")  # generous: under heavy load the writer thread is slow to land
    now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    b = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
    land(b, "upbit", "KRW-BTC", 1, now_ms - 60_000, upbit("KRW-BTC", 1, now_ms - 60_000, 100_000_000.0, 0.1))
    b.flush()
    landed_at: list[float] = []

    def shock_soon() -> None:
        time.sleep(0.5)
        land(b, "upbit", "KRW-BTC", 2, now_ms, upbit("KRW-BTC", 2, now_ms, 105_000_000.0, 0.1))
        b.flush()
        landed_at.append(time.monotonic())

    ctx = dg.build_sensor_context(instance=dagster_instance, cursor=None,
                                  resources={"lake": LakeResource(), "slack": slack_resource()})
    writer = threading.Thread(target=shock_soon)
    started = time.monotonic()
    writer.start()
    result = market_alert_sensor(ctx)
    ended = time.monotonic()
    writer.join()
    assert landed_at and started < landed_at[0] < ended, "the shock must land while the tick runs"
    assert re.fullmatch(r"2 files in [12] batches \(slowest \d+\.\d\d s\), 1 alerts, sent 1"
                        r"(; \d+\.\d\d s after the last tick)?", result.skip_message)
    assert len([c for c in slack_server.posts if "KRW-BTC moved +5.00%" in c.body.get("text", "")]) == 1
    assert json.loads(ctx.cursor)["taken"], "the tick's cursor holds both files"


def test_an_alert_tick_ends_just_before_a_daemon_loop_and_a_batch_past_it_waits_for_the_next():
    """The daemon starts the next tick at its first loop (every 5 s, on the grid of the previous tick's start) after
    this one ended: a tick that ended just after a loop would leave the folder unwatched for up to 5 s. So a tick ends
    just before a loop, does not begin a batch (as long as the recent ones) that would run past it, and when a batch
    still does, watches on until just before the next loop, within Dagster's 60 s evaluation limit."""
    from cryptoflow_dagster.defs.alerts.sensors import _HANDOVER_MARGIN_S, _WATCH_POLL_S, _Watch

    margin = _HANDOVER_MARGIN_S
    # the daemon started the previous tick at 1.3 (loops at 1.3, 6.3, ...) and this one's code runs from 101.6
    watch = _Watch(101.6, 30, grid=1.3)
    assert watch.until == 131.3 + 5 - margin  # the first loop at least 30 s after the start: 136.3
    assert watch.goes_on(135.0, batch_s=0.2)
    assert not watch.goes_on(134.0, batch_s=2.0), "a 2 s batch begun at 134.2 would run past the loop"
    assert _Watch(0.0, 30).until == 30 - margin and _Watch(0.0, 4).until == 5 - margin  # no grid: from the start
    late = _Watch(0.0, 30)
    assert late.goes_on(30.4)  # a batch ended 0.9 s past the tick's planned end: watch on until before the next loop
    assert late.until == 35 - margin and not late.goes_on(35 - margin)
    assert not _Watch(0.0, 0).goes_on(0.0)  # 0: one look
    longest = _Watch(0.0, 45)
    assert longest.goes_on(51.0) and longest.until == 55 - margin
    assert not longest.goes_on(55.0), "past 55 s the next loop's end would be too close to Dagster's 60 s limit"
    assert not _Watch(0.0, 45).goes_on(45 - margin - _WATCH_POLL_S / 2)
