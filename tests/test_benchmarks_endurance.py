"""The endurance benchmark's pure parts on constructed inputs (the hour itself is `make endurance`, never a test):
shock -> Slack matching on messages built by the platform's own alert and message code, whole-window percentiles
against numpy, the sample summarizer's last/first figures, silver-vs-truth counts, and the shock planner's respect
of the packaged alert rules' cooldowns."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from benchmarks.endurance import (
    HISTORY_IN_SILVER,
    PriceMoveMessage,
    ProcessSampler,
    Shock,
    Options,
    ShockPlan,
    _env,
    alert_stages,
    compare_window,
    match_shocks,
    price_move_messages,
    summarize_samples,
    window_stats,
)
from cryptoflow_core.settings import load_settings
from cryptoflow_dagster.alerting import market as market_rules
from cryptoflow_dagster.alerting.messages import alert_message
from cryptoflow_dagster.alerting.rules import PACKAGED_RULES, load_rules

T0 = 1_800_000_000.0


def sink_message(rule: str, exchange: str, market: str, ts: float) -> dict:
    """A message as the simulator's Slack sink keeps it, built the way the platform builds and sends an alert
    (alerting/market.py ``_alert``, messages.py ``alert_message``, delivery.py's metadata)."""
    mr = load_rules(PACKAGED_RULES).for_market(exchange, market)
    event = datetime.fromtimestamp(ts - 2, timezone.utc)
    alert = market_rules._alert(mr, rule, event, 8.1, 3.0, f"{exchange} {market} moved +8.10% within 300s", event,
                                {"Move": "+8.10%"})
    row = {"alert_id": alert.alert_id, "rule": alert.rule, "message": alert.message, "event_time": event,
           "details_json": json.dumps(alert.details, default=str, sort_keys=True)}
    text, blocks = alert_message(row, "http://127.0.0.1:3000")
    return {"channel": "C1", "type": "message", "text": text, "ts": f"{ts:.6f}", "blocks": blocks,
            "metadata": {"event_type": "cryptoflow_alert", "event_payload": {"alert_id": alert.alert_id, "rule": rule}}}


def test_price_move_messages_are_read_from_what_the_platform_sends():
    sent = [sink_message("price_move", "binance", "BTCUSDT", T0 + 3),
            sink_message("volume_spike", "upbit", "KRW-BTC", T0),
            sink_message("price_move", "upbit", "KRW-XRP", T0 + 9),
            {"channel": "C1", "text": "service restarted: sidecar", "ts": f"{T0:.6f}"}]
    got = price_move_messages(sent)
    assert [(m.exchange, m.market, m.ts) for m in got] == [("binance", "BTCUSDT", T0 + 3), ("upbit", "KRW-XRP", T0 + 9)]
    assert all(m.alert_id and len(m.alert_id) == 24 for m in got)


def test_each_shock_takes_the_first_message_of_its_market_once_and_the_rest_are_false_positives():
    shocks = [Shock("binance", "BTCUSDT", 8, T0 + 10), Shock("upbit", "KRW-ETH", -8, T0 + 20),
              Shock("binance", "BTCUSDT", -8, T0 + 100), Shock("upbit", "KRW-SOL", 8, T0 + 200)]
    messages = [
        PriceMoveMessage("binance", "ETHUSDT", T0 + 5),     # no shock on this market: a false positive
        PriceMoveMessage("binance", "BTCUSDT", T0 + 8),     # before the shock: not caused by it, a false positive
        PriceMoveMessage("binance", "BTCUSDT", T0 + 12.5),  # the first shock's
        PriceMoveMessage("upbit", "KRW-ETH", T0 + 23),      # the second's
        PriceMoveMessage("binance", "BTCUSDT", T0 + 101),   # the third's (the first is taken already)
        PriceMoveMessage("upbit", "KRW-SOL", T0 + 200 + 61),  # past the wait: the fourth shock is missed
        PriceMoveMessage("upbit", "KRW-BTC", T0 - 30),      # before the measured window: not counted at all
    ]
    match = match_shocks(shocks, messages, since_s=T0, max_wait_s=60)
    assert [(s.market, m.ts - T0) for s, m in match.matched] == [("BTCUSDT", 12.5), ("KRW-ETH", 23), ("BTCUSDT", 101)]
    assert match.latencies_s == pytest.approx([2.5, 3.0, 1.0])
    assert [s.market for s in match.missed] == ["KRW-SOL"]
    assert sorted((m.market, m.ts - T0) for m in match.unexplained) == [
        ("BTCUSDT", 8), ("ETHUSDT", 5), ("KRW-SOL", 261)]
    summary = match.summary()
    assert summary["recall"] == 0.75 and summary["false_positives"] == 3 and summary["matched"] == 3
    assert summary["latency_s"]["max"] == pytest.approx(3.0)
    assert match_shocks([], [], T0, 60).recall is None


def test_a_shocks_latency_splits_into_the_simulators_wait_ingest_and_delivery():
    shock = Shock("binance", "BTCUSDT", 8, T0)
    message = PriceMoveMessage("binance", "BTCUSDT", T0 + 9.0, "a" * 24)
    other = (Shock("upbit", "KRW-ETH", 8, T0), PriceMoveMessage("upbit", "KRW-ETH", T0 + 5, "b" * 24))
    stages = alert_stages([(shock, message), other], {"a" * 24: (T0 + 0.5, T0 + 6.5, T0 + 8.9)})
    assert stages["shock_to_event"]["p50"] == pytest.approx(0.5) and stages["shock_to_event"]["count"] == 1
    assert stages["event_to_triggered"]["p50"] == pytest.approx(6.0)
    assert stages["triggered_to_slack"]["p50"] == pytest.approx(2.5)
    assert stages["event_to_slack"]["max"] == pytest.approx(8.5)  # the message without a gold.alerts row is left out


def test_window_percentiles_equal_numpys_linear_interpolation():
    rng = np.random.default_rng(7)
    values = list(rng.lognormal(0.5, 0.8, size=997))
    stats = window_stats([*values, None])
    assert stats["count"] == 997 and stats["max"] == max(values)
    for q in (50, 95, 99):
        assert stats[f"p{q}"] == pytest.approx(np.percentile(values, q), rel=1e-12)
    assert window_stats([4.0]) == {"count": 1, "p50": 4.0, "p95": 4.0, "p99": 4.0, "max": 4.0}
    assert window_stats([])["p95"] is None


def _sample(chunk_p50, silver_p95, rss, lasting=500.0):
    return {"chunks": {"seconds": {"p50": chunk_p50}}, "freshness": {"silver": {"p95": silver_p95}},
            "processes": {"total": {"rss_mib": rss}, "long_lived": {"rss_mib": lasting}}}


def test_the_summary_compares_the_last_window_with_the_first():
    samples = [_sample(0.20, 2.0, 1000.0), _sample(0.22, None, 1100.0), _sample(0.30, 2.2, 1150.0, 550.0)]
    s = summarize_samples(samples)
    assert s["chunk_median_s"] == {"first": 0.20, "last": 0.30, "last_over_first": pytest.approx(1.5), "max": 0.30}
    assert s["silver_p95_s"]["last_over_first"] == pytest.approx(1.1)  # a window without trades is skipped
    assert s["rss_total_mib"]["last_over_first"] == pytest.approx(1.15) and s["rss_total_mib"]["max"] == 1150.0
    assert s["rss_long_lived_mib"]["last_over_first"] == pytest.approx(1.1)
    assert summarize_samples([_sample(None, None, 0.0)])["rss_total_mib"]["last_over_first"] is None


def _trades(rows):
    return pl.DataFrame(rows, schema={"exchange": pl.Utf8, "market": pl.Utf8, "trade_id": pl.Int64, "ts": pl.Int64,
                                      "price": pl.Float64, "volume": pl.Float64, "side": pl.Utf8}, orient="row")


def test_silver_against_the_truth_counts_lost_extra_doubled_and_altered_trades_per_market():
    truth = _trades([("upbit", "KRW-BTC", i, 1000 + i, 100.0 + i, 0.5, "buy") for i in range(1, 6)]
                    + [("binance", "BTCUSDT", 7, 2000, 60_000.0, 0.01, "sell"),
                       ("binance", "BTCUSDT", 8, 2001, 60_000.1, 0.02, "buy")])
    silver = _trades([("upbit", "KRW-BTC", 1, 1001, 101.0, 0.5, "buy"),
                      ("upbit", "KRW-BTC", 2, 1002, 102.0, 0.5, "buy"),
                      ("upbit", "KRW-BTC", 2, 1002, 102.0, 0.5, "buy"),                # doubled
                      ("upbit", "KRW-BTC", 3, 1003, 103.0 * (1 + 1e-9), 0.5, "buy"),  # altered price
                      ("upbit", "KRW-BTC", 4, 1004, 104.0 * (1 + 1e-15), 0.5, "buy"),  # text round trip: same
                      ("upbit", "KRW-BTC", 9, 1009, 109.0, 0.5, "buy"),                # invented; 5 is lost
                      ("binance", "BTCUSDT", 7, 2000, 60_000.0, 0.01, "sell"),
                      ("binance", "BTCUSDT", 8, 2001, 60_000.1, 0.02, "sell")])        # side differs
    got = compare_window(silver, truth)
    assert got == {
        "binance:BTCUSDT": {"truth": 2, "silver": 2, "lost": 0, "extra": 0, "duplicated": 0, "mismatched": 1},
        "upbit:KRW-BTC": {"truth": 5, "silver": 6, "lost": 1, "extra": 1, "duplicated": 1, "mismatched": 1},
    }
    same = compare_window(truth, truth)
    assert all(v["lost"] == v["extra"] == v["duplicated"] == v["mismatched"] == 0 for v in same.values())


def test_shocks_skip_markets_whose_alert_could_still_be_in_cooldown():
    rules = load_rules(PACKAGED_RULES)
    markets = [("binance", "BTCUSDT"), ("upbit", "KRW-USDT"), ("upbit", "KRW-ETH")]
    plan = ShockPlan(markets, rules, pct=2.0)
    quiet = rules.defaults["price_move"]["window_s"] + rules.default_cooldown_s + 30
    first = [plan.pick(T0 + i) for i in range(4)]
    # each market once, at least twice its own threshold (BTCUSDT 2 %, KRW-USDT 1 %, the default 3 %), signs
    # alternating; then every market is quiet until its cooldown and move window have passed
    assert first == [("binance", "BTCUSDT", -4.0), ("upbit", "KRW-USDT", 2.0), ("upbit", "KRW-ETH", -6.0), None]
    assert plan.pick(T0 + quiet - 1) is None
    assert plan.pick(T0 + quiet)[:2] == ("binance", "BTCUSDT")


def test_process_categories_put_dagster_run_workers_apart_from_their_parent_group():
    code_server = "/venv/bin/dagster api grpc --port 4000"
    worker = "/venv/bin/python -m dagster api execute_run {...}"
    step = "/venv/bin/python -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5)"
    assert ProcessSampler.category([worker, code_server], "dagster-code-server") == "run_workers"
    assert ProcessSampler.category([step, worker, code_server], "dagster-code-server") == "run_workers"
    assert ProcessSampler.category([code_server], "dagster-code-server") == "dagster-code-server"
    sampler = ProcessSampler({}, every_s=1)
    now = datetime.now(timezone.utc).timestamp()
    sampler.ticks = [{"t": now - 10, "rss_mib": {"a": 100.0}, "cpu_s": {"a": 0.0}, "processes": {"a": 1}},
                     {"t": now - 5, "rss_mib": {"a": 120.0, "b": 50.0}, "cpu_s": {"a": 2.5, "b": 0.5},
                      "processes": {"a": 1, "b": 2}},
                     {"t": now, "rss_mib": {"a": 110.0}, "cpu_s": {"a": 2.5}, "processes": {"a": 1}}]
    w = sampler.window(now - 10, now)
    assert w["a"] == {"rss_mib": 110.0, "rss_max_mib": 120.0, "cpu_pct": 50.0, "processes": 1}
    assert w["b"]["rss_mib"] == 0.0 and w["b"]["rss_max_mib"] == 50.0 and w["b"]["cpu_pct"] == 5.0
    assert w["total"]["rss_max_mib"] == 170.0 and w["total"]["cpu_pct"] == 55.0
    # the run workers are left out of the long-lived figure: a new process per run cannot accumulate a leak
    sampler.ticks[1]["rss_mib"]["run_workers"], sampler.ticks[1]["cpu_s"]["run_workers"] = 900.0, 1.0
    w = sampler.window(now - 10, now)
    assert w["long_lived"] == {"rss_mib": 110.0, "rss_max_mib": 170.0, "cpu_pct": 55.0}
    assert w["total"]["rss_max_mib"] == 1070.0 and w["total"]["cpu_pct"] == 65.0
    assert sampler.window(now + 1, now + 2) == {}


def test_the_sampler_reads_a_real_process_group_from_proc():
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(64 * 2**20); time.sleep(60)"],
                             start_new_session=True)
    try:
        sampler = ProcessSampler({child.pid: "child"}, every_s=60)
        deadline = time.monotonic() + 30
        while (tick := sampler.look())["rss_mib"].get("child", 0.0) < 64 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert tick["processes"] == {"child": 1} and tick["rss_mib"]["child"] >= 64  # the 64 MiB it holds
        assert set(tick["rss_mib"]) == {"child"}  # nothing outside the demo's groups (this process included)
    finally:
        child.kill()
        child.wait()


def test_the_history_wait_ends_on_the_demos_line_for_every_day_in_silver():
    done = ["history: 1/1 days in silver, 0/1 in gold.volatility_daily (backfill requested, 157s)",
            "history: 12/12 days in silver, 3/12 in gold.volatility_daily"]
    running = ["history: 0/1 days in silver, 0/1 in gold.volatility_daily (backfill requested, 10s)",
               "history: 1/12 days in silver", "history: 11/1 days in silver", "history: 10/12 days in silver"]
    assert all(HISTORY_IN_SILVER.search(line) for line in done)
    assert not any(HISTORY_IN_SILVER.search(line) for line in running)


def test_upbit_width_past_the_simulators_listing_is_given_by_name(tmp_path):
    from exchange_sim import universe

    listed = universe.resolve("upbit", ("ALL",))
    settings = load_settings(_env(Options(upbit="TOP200", binance="TOP50", rate=500.0), tmp_path))
    assert len(settings.upbit_markets) == len(set(settings.upbit_markets)) == 200
    assert settings.upbit_markets[:len(listed)] == listed
    assert settings.upbit_markets[-1] == f"KRW-W{199 - len(listed):03d}"
    assert settings.binance_symbols == ("TOP50",) and settings.sim_total_trade_rate == 500.0
    assert load_settings(_env(Options(upbit="TOP3"), tmp_path)).upbit_markets == listed[:3]
    assert load_settings(_env(Options(), tmp_path)).upbit_markets == ("ALL",)  # the selector, resolved by the sidecar
