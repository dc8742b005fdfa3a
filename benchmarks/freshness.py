"""Freshness at a steady 1,000 messages/s: event -> received -> landed -> silver -> gold 24h stats -> alert delivered.

The whole platform as ``cryptoflow demo`` runs it: Dagster code server, webserver and daemon (landing sensor, streaming
runs through the run queue, market alert and delivery sensors), the sidecar process, the simulator (REST, Slack sink),
and a paced Binance stream (``paced_stream``: 1,000 msg/s over 4 symbols, a +-4 % step every 10 s so price alerts
fire). After a warm-up, the figures are ``cryptoflow slo`` (``cryptoflow_dagster.slo.report``) over the measured window:
percentiles over every trade, and the p95 of each of five equal slices of the window (median, min, max of those).
Alert rules: the packaged defaults with a 30 s cooldown and a 3 % / 60 s price move, so a few minutes hold many alerts.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import orjson

from benchmarks.common import REPO, Result, python_child
from cryptoflow_dagster import lake
from cryptoflow_dagster.cli import services
from cryptoflow_dagster.cli.children import Children
from cryptoflow_dagster.cli.demo import child_env
from cryptoflow_dagster.instance import prepare_instance
from cryptoflow_core.settings import load_settings
from cryptoflow_dagster.slo import report
from cryptoflow_dagster.webserver import wait_until_loaded
from exchange_sim.testing import free_port, running_sim

RATE = 1000.0
# One symbol's price steps +-4 % this often (rotating over 4 symbols: each every 40 s, past the 30 s cooldown), so a
# 6-minute window holds ~36 price-move alerts to take a p95 over.
SHOCK_EVERY_S = 10.0
RULES = """
defaults:
  cooldown_s: 30
  price_move: {pct: 3.0, window_s: 60}
"""


def _drive(home: Path, minutes: float, warmup_s: float):
    """Run the platform on the paced stream; returns the measured window, the achieved rate and the settings."""
    with running_sim(history_start="2025-09-01") as sim, Children() as children:
        (home / "rules.yaml").write_text(RULES)
        port, stream_port = services.free_port(), free_port()
        base = {**os.environ, **sim.env(), "CRYPTOFLOW_HOME": str(home), "CRYPTOFLOW_UI_PORT": str(port),
                "CRYPTOFLOW_ALERT_RULES": str(home / "rules.yaml"),
                "CRYPTOFLOW_BINANCE_SYMBOLS": "BTCUSDT,ETHUSDT,XRPUSDT,SOLUSDT"}
        base.pop("DAGSTER_HOME", None)
        settings = load_settings(base)
        env = child_env(settings, base, history_start=date(2025, 9, 1))
        env["CRYPTOFLOW_BINANCE_WS_URL"] = f"ws://127.0.0.1:{stream_port}"
        prepare_instance(settings)
        with lake.session(settings) as con:
            lake.ensure_schema(con)
        stream_argv = [sys.executable, "-m", "benchmarks.paced_stream", "--port", str(stream_port), "--rate", str(RATE),
                       "--shock-every", str(SHOCK_EVERY_S)]
        children.start("paced-stream", stream_argv, env=env, cwd=REPO, log_path=home / "logs" / "stream.log")
        web = services.start_dagster(children, env, "127.0.0.1", port, home / "logs")
        wait_until_loaded(f"http://127.0.0.1:{port}", timeout_s=300, still_running=lambda: web.process.poll() is None)
        sidecar = python_child("streaming_sensor", "--exchange", "binance", env=env, log=home / "logs" / "sidecar.log")
        try:
            time.sleep(warmup_s)
            beat0 = orjson.loads(settings.heartbeat_path.read_bytes())["counters"]["messages"]
            since = datetime.now(timezone.utc)
            t0 = time.monotonic()
            time.sleep(minutes * 60)
            until = datetime.now(timezone.utc)
            received = orjson.loads(settings.heartbeat_path.read_bytes())["counters"]["messages"] - beat0
            rate = received / (time.monotonic() - t0)
            time.sleep(30)  # the window's last files get their runs and alerts their delivery
        finally:
            sidecar.terminate()
            sidecar.wait(60)
    return since, until, rate, received, settings


def run(quick: bool, runs: int) -> Result:
    minutes = float(os.environ.get("CRYPTOFLOW_BENCH_FRESH_MINUTES", 3.0 if quick else 6.0))
    warmup_s = 45.0
    slices = max(5, runs)
    result = Result("freshness", f"{RATE:,.0f} msg/s (4 Binance symbols) for {minutes:g} min after {warmup_s:.0f} s "
                                 f"warm-up; Dagster code server + webserver + daemon, sidecar, simulator; "
                                 f"p95 per {slices} slices")
    with tempfile.TemporaryDirectory(prefix="bench-fresh-") as tmp:
        home = Path(tmp)
        since, until, rate, received, settings = _drive(home, minutes, warmup_s)
        # Read once every writer is stopped: the SQLite catalog is not opened read-only beside a committing daemon.
        with lake.session(settings, read_only=True) as con:
            overall = report(con, since, until)
            step = (until - since) / slices
            parts = [report(con, since + i * step, since + (i + 1) * step) for i in range(slices)]
    result.add("stream rate received by the sidecar", "msg/s", [rate], (">=", 0.95 * RATE))
    for stage, target in (("received", None), ("landed", None), ("silver", 10.0), ("gold_stats_24h", 15.0)):
        result.add(f"{stage} p95 (per slice)", "s", [p[stage]["p95"] for p in parts],
                   ("<=", target) if target else None)
    result.add("price shock -> Slack p95 (whole window)", "s", [overall["price_shock_delivered"]["p95"]], ("<=", 8.0),
               None, f"{overall['price_shock_delivered']['count']} price-move alerts")
    result.add("alert delivered p95, all rules (whole window)", "s", [overall["alert_delivered"]["p95"]], None, None,
               f"{overall['alert_delivered']['count']} alerts; bucketed rules count from their bucket's start")
    result.add("alert triggered p95 (whole window)", "s", [overall["alert_triggered"]["p95"]])
    result.details = {"overall": overall, "slices": parts, "since": since.isoformat(), "until": until.isoformat(),
                      "messages_in_window": received}
    return result
