"""``cryptoflow slo`` on a real lake: trades landed by the sidecar's batcher, ingested by the streaming code, a price jump
alerted and delivered to a local Slack server; every stage's latency is measured from what the lake recorded."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import orjson

from cryptoflow_dagster import lake, slo
from cryptoflow_dagster.alerting.delivery import deliver_pending
from cryptoflow_dagster.alerting.hooks import record_landing_alerts
from cryptoflow_dagster.alerting.slack import SlackPoster
from cryptoflow_dagster.streaming.ingest import ingest_pending
from cryptoflow_core import landing_files
from streaming_sensor.batches import MicroBatcher
from streaming_sensor.feeds import BinanceFeed


def land(settings, prices: list[float], event_ms: int, first_id: int) -> None:
    feed = BinanceFeed("ws://unused", ("BTCUSDT",))
    batcher = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
    for i, price in enumerate(prices):
        frame = orjson.dumps({"stream": "btcusdt@trade", "data": {"e": "trade", "E": event_ms, "s": "BTCUSDT",
                             "t": first_id + i, "p": f"{price:.2f}", "q": "0.5", "T": event_ms, "m": False, "M": True}})
        p = feed.parse(frame)
        batcher.add("binance", p.kind, p.market, p.trade_id, p.event_ms, event_ms * 1000 + 20_000, "s1", frame, None)
    batcher.flush()


def test_slo_reports_each_stage_from_the_lake(settings, slack_server, capsys):
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    event_ms = int(time.time() * 1000) - 2_000  # the trades happened 2 s ago, received 20 ms after
    land(settings, [37_000.0] * 50, event_ms - 60_000, 1)
    land(settings, [37_000.0] * 49 + [39_000.0], event_ms, 51)  # +5.4 %: the BTCUSDT price rule (2 %) fires
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        # as market_alert_sensor does: the rules see the landed files before the streaming run ingests them
        assert record_landing_alerts(con, settings.landing_dir, landing_files.list_files(settings.landing_dir), settings)
        result = ingest_pending(con, settings.landing_dir, "run-1")
        assert result.silver_rows == 100
        deliver_pending(con, SlackPoster("xoxb-test", slack_server.url, "#alerts"), "http://ui.test")
    with lake.session(settings, read_only=True) as con:
        stages = slo.report(con, since)
    assert stages["silver"]["count"] == 100 and stages["alert_delivered"]["count"] >= 1
    received, landed, silver = (stages[s]["p50"] for s in ("received", "landed", "silver"))
    assert 0.019 < received < 0.021  # receive_time was stamped 20 ms after the event
    assert landed > 2.0 and silver >= landed - 0.01  # a trade is committed after its file landed
    assert stages["silver"]["met"] is False  # the first batch is a minute old: p95 over 10 s misses the objective
    assert stages["gold_stats_24h"]["p95"] == stages["silver"]["p95"]
    assert 2.0 < stages["alert_delivered"]["p50"] < 120  # delivered after the 39,000 trade's event time
    # the BTCUSDT alert is a price move: the price-shock objective counts it, and only price moves
    assert stages["price_shock_delivered"]["count"] == 1
    assert stages["price_shock_delivered"]["p50"] == stages["alert_delivered"]["p50"]
    assert stages["price_shock_delivered"]["objective_p95_s"] == 8.0 and stages["alert_delivered"]["objective_p95_s"] is None

    assert slo.main(["--json", "--minutes", "5"]) == 1  # an objective missed: exit code 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["stages"]["silver"]["count"] == 100
