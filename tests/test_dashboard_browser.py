"""The live dashboard in a real browser (Debian's Chromium through Playwright) against the real API server, a real
lake filled by the platform's own paths and the exchange simulator (benchmarks/dashboard_platform.py): what the charts
draw equals the lake's rows, the 1-minute SMA/EMA/RSI computed in the page equal TA-Lib's, a bar closed after the page
loaded arrives through WS /v1/live, and a price shock in the simulator shows in the alerts timeline as the gold.alerts
row the platform's alert path wrote.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta

import numpy as np
import pytest
import talib
from playwright.sync_api import sync_playwright

from benchmarks.dashboard_platform import running_platform, wait_until
from cryptoflow_core.settings import load_settings
from cryptoflow_dagster import lake

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
MARKET = ("upbit", "KRW-BTC")
# Only the rule under test: the calm history must not fire volume or premium alerts that crowd the timeline.
RULES = "defaults:\n  cooldown_s: 600\n  price_move: {pct: 3.0, window_s: 300}\n"

DRAWN = """() => {
  const d = window.cryptoflowDashboard;
  const s = d.series;
  return {
    candles: s.candles.data(), sma: s.sma.data(), ema: s.ema.data(), rsi: s.rsi.data(),
    volatility: Object.fromEntries(Object.entries(s.volatility).map(([k, v]) => [k, v.data()])),
    premium: s.premium.data(), counts: d.state.counts, errors: d.state.errors, selected: d.state.selected,
    bars: d.state.bars, forming: d.state.forming, at: Date.now() / 1000,
  };
}"""


def _rows(settings, sql: str, params: list) -> list[tuple]:
    with lake.session(settings, read_only=True) as con:
        return con.execute(sql, params).fetchall()


def _epoch(ts) -> int:
    return int(ts.timestamp())


def _values(series: list[dict], times: list | None = None) -> np.ndarray:
    """A line series' values at ``times`` (default: its own points), NaN where it has none (TA-Lib's lookback)."""
    by_time = {p["time"]: p.get("value", math.nan) for p in series}
    return np.array([by_time.get(t, math.nan) for t in (times if times is not None else by_time)], dtype=float)


@pytest.mark.timeout(300)
def test_dashboard_draws_the_lake_updates_live_and_shows_a_shock_alert(cryptoflow_home, monkeypatch):
    with running_platform(cryptoflow_home, monkeypatch.setenv, rules_yaml=RULES) as platform:
        settings = load_settings()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1300})
                page_errors: list[str] = []
                page.on("pageerror", lambda e: page_errors.append(str(e)))
                page.goto(platform.dashboard_url + "#upbit:KRW-BTC")
                page.wait_for_selector("body[data-ready]", timeout=60_000)
                page.wait_for_selector("#volatility[data-days]", state="attached", timeout=30_000)
                drawn = page.evaluate(DRAWN)
                assert drawn["selected"] == "upbit:KRW-BTC" and not page_errors

                # Candles: every closed bar drawn is the lake's bar of that minute (a minute closed in the last seconds
                # may still take a late trade, so those are left to the live check below)
                lake_bars = {_epoch(ts): (o, h, low, c) for ts, o, h, low, c in _rows(
                    settings, "SELECT ts, open, high, low, close FROM gold.ohlcv_1m_from_trades "
                    "WHERE exchange = ? AND market = ? ORDER BY ts", list(MARKET))}
                stable = [c for c in drawn["bars"] if c["time"] + 60 <= drawn["at"] - 10]
                assert len(stable) >= 30  # the 40-minute history, less the partial first minute
                on_canvas = {c["time"]: c for c in drawn["candles"]}
                for c in stable:
                    assert lake_bars[c["time"]] == (c["open"], c["high"], c["low"], c["close"]), c
                    assert on_canvas[c["time"]] == c
                assert [c["time"] for c in stable] == [t for t in sorted(lake_bars) if stable[0]["time"] <= t <= stable[-1]["time"]]

                # SMA 20, EMA 12, RSI 14 over the drawn closes: TA-Lib's numbers, with TA-Lib's lookback
                closes = np.array([b["close"] for b in drawn["bars"]], dtype=float)
                times = [b["time"] for b in drawn["bars"]]
                for name, want in (("sma", talib.SMA(closes, 20)), ("ema", talib.EMA(closes, 12)),
                                   ("rsi", talib.RSI(closes, 14))):
                    got = _values(drawn[name], times)
                    assert np.array_equal(np.isnan(got), np.isnan(want)), name
                    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-9, err_msg=name)

                # The five volatility estimators: gold.volatility_daily's rows, in percent
                vol_rows = _rows(settings, "SELECT day, close_to_close, parkinson, garman_klass, rogers_satchell, "
                                 "yang_zhang FROM gold.volatility_daily WHERE exchange = ? AND market = ? ORDER BY day",
                                 list(MARKET))
                assert vol_rows
                for i, name in enumerate(("close_to_close", "parkinson", "garman_klass", "rogers_satchell", "yang_zhang")):
                    series = drawn["volatility"][name]
                    assert [pt["time"] for pt in series] == [str(r[0]) for r in vol_rows]
                    np.testing.assert_allclose(_values(series), [r[i + 1] * 100 for r in vol_rows], rtol=1e-12)

                # The premium: gold.kimchi_premium_1m's BTC minutes (closed ones: the current minute's moves)
                premium = {_epoch(ts): v for ts, v in _rows(
                    settings, "SELECT ts, premium_pct FROM gold.kimchi_premium_1m WHERE asset = 'BTC'", [])}
                closed = {pt["time"]: pt["value"] for pt in drawn["premium"] if pt["time"] + 60 <= drawn["at"] - 10}
                assert len(closed) >= 30
                assert closed == {t: v for t, v in premium.items() if t in closed}

                # 24-hour table: a row per market of the lake's; freshness lists silver.trades, seconds behind
                stats_markets = {f"{e}:{m}" for e, m in _rows(
                    settings, "SELECT DISTINCT exchange, market FROM gold.market_stats_24h", [])}
                wait_until(lambda: set(page.eval_on_selector_all(
                    "#stats tbody tr", "rows => rows.map(r => r.dataset.market)")) == stats_markets, 20, "24h table")
                page.wait_for_selector("#freshness tr[data-table='silver.trades']", timeout=20_000)
                latest, lag = page.eval_on_selector_all(
                    "#freshness tr[data-table='silver.trades'] td", "cells => cells.slice(2).map(c => c.textContent)")
                (newest,) = _rows(settings, "SELECT max(ts) FROM silver.trades", [])
                window = [(newest[0] - timedelta(minutes=m)).strftime("%Y-%m-%d %H:%M") for m in (5, 0)]
                assert window[0] <= latest[:16] <= window[1] and lag.split()[-1] in ("s", "min"), (latest, lag)

                # A shock: the platform's alert path writes gold.alerts, the feed pushes it, the timeline shows it
                assert page.locator("#alerts li[data-rule='price_move']").count() == 0
                shocked_at = time.time()
                platform.sim.shock("KRW-BTC", 8.0, exchange="upbit")
                row = page.wait_for_selector(
                    "#alerts li[data-rule='price_move'][data-market='upbit:KRW-BTC'][data-source='live']",
                    timeout=90_000)
                alert_id = row.get_attribute("data-alert-id")
                (lake_alert,) = _rows(settings, "SELECT alert_id, value, message, event_time FROM gold.alerts WHERE rule = 'price_move'",
                                      [])
                assert alert_id == str(lake_alert[0]) and lake_alert[1] > 7.0
                assert lake_alert[2] in row.inner_text()
                assert lake_alert[3].timestamp() > shocked_at - 1  # the shock's trade, not the history's
                # Live: a minute that closed after the page loaded comes through the feed, equal to the lake's bar
                last_loaded = drawn["bars"][-1]["time"]
                wait_until(lambda: page.evaluate(
                    "t => window.cryptoflowDashboard.state.bars.some(b => b.time > t)", last_loaded), 100, "a live bar")
                live = page.evaluate(DRAWN)
                assert live["counts"]["bar"] >= 1 and live["counts"]["trade"] >= 1
                new_time = next(b["time"] for b in live["bars"] if b["time"] > last_loaded)

                def page_bar_is_the_lakes() -> bool:
                    # a bar the platform corrects after it closed (a late trade) is pushed again: the page follows
                    (lake_bar,) = _rows(settings, "SELECT open, high, low, close FROM gold.ohlcv_1m_from_trades "
                                        "WHERE exchange = ? AND market = ? AND epoch(ts) = ?", [*MARKET, new_time])
                    bar = page.evaluate("t => window.cryptoflowDashboard.state.bars.find(b => b.time === t)", new_time)
                    return lake_bar == (bar["open"], bar["high"], bar["low"], bar["close"])

                wait_until(page_bar_is_the_lakes, 15, "the live bar equal to the lake's", every_s=1)

                page.screenshot(path=str(cryptoflow_home / "dashboard.png"), full_page=True)
                assert not page_errors, page_errors
            finally:
                browser.close()
        assert not platform.errors, platform.errors
