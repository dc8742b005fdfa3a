"""The live dashboard (issue 18): time to first chart, the page's steady CPU in the browser, and price shock -> alert
visible on the page, on the small platform of benchmarks/dashboard_platform.py (simulator, sidecar, streaming loop,
market alert sensor ticks, API server) with headless Chromium.

- First chart: a fresh page per run, navigation to the candles drawn (the page's own performance.now() at the frame
  after the bars were set); baseline: the one REST request the chart needs (`/v1/bars/1m`, 720 bars) from Python.
- Steady CPU: Chromium's processes (all of them: browser, renderer, GPU, network) over a window with the dashboard open
  and the live feed flowing; baseline: the same browser on about:blank over as long a window. The API server's CPU
  over both windows beside it (what one open dashboard costs the server).
- Shock -> visible: `SimHandle.shock` on alternating markets and directions; each shock is matched to the price_move
  alert row the page shows for that market after it (the row's own wall-clock stamp, `data-shown-at`), split into
  shock -> triggered (gold.alerts.triggered_at: the platform's alert path) and triggered -> shown (API feed + page);
  a shock with no row within MATCH_S is a miss. Target p95 <= 5 s.

``python -m benchmarks.dashboard [--quick]`` (or ``python -m benchmarks.run --only dashboard``) writes
benchmarks/results/dashboard.json and dashboard.md; ``--screenshot PATH`` also saves the page (docs/images/dashboard.png).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import RESULTS, Result, proc_cpu_s, write_result
from benchmarks.dashboard_platform import running_platform, wait_until
from benchmarks.dashboard_streamlit import CHROMIUM_ARGS, _browser_pids, _cpu

# A shock raises its market's trade rate x4 for 5 minutes in the simulator (exchange_sim/model.py BURST_*), and shocks
# of one market closer than that pile up: a first run that shocked 2 markets every 50 s each had them trading at
# ~270/s by the end (767,414 KRW-BTC trades in 48 min), and the figures measured that backlog. So the shocks rotate
# over SHOCK_MARKETS, each market at most every len x SHOCK_EVERY_S = 320 s, past its burst. One alert per shock: the
# cooldown (40 s) outlasts the move's window (30 s).
RULES = "defaults:\n  cooldown_s: 40\n  price_move: {pct: 3.0, window_s: 30}\n"
UPBIT = ("KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-USDT")  # KRW-USDT for the premium, never shocked
BINANCE = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT")
SHOCK_MARKETS = tuple(("upbit", m) for m in UPBIT if m != "KRW-USDT") + tuple(("binance", m) for m in BINANCE)
SHOCK_PCT = 5.0
SHOCK_EVERY_S = 40.0
# A shock is matched to the first alert row of its market whose event is at or after it and before the next shock of
# that market; none is a miss. After the last shock the page gets this long.
MATCH_S = 20.0
TARGET_P95_S = 5.0


def _pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (a value that was measured, never an interpolation)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _first_chart(browser, url: str) -> float:
    context = browser.new_context(viewport={"width": 1500, "height": 1300})
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-first-chart]", timeout=60_000, state="attached")
        return float(page.get_attribute("body", "data-first-chart")) / 1000
    finally:
        context.close()


def _window_cpu(pids: list[int], api_pid: int, seconds: float) -> tuple[float, float]:
    """CPU of the browser's processes and of the API server over ``seconds``, in % of one core."""
    b0, a0, t0 = _cpu(pids), proc_cpu_s(api_pid), time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    return 100 * (_cpu(pids) - b0) / wall, 100 * (proc_cpu_s(api_pid) - a0) / wall


def _shown_alerts(page) -> dict[str, dict]:
    rows = page.eval_on_selector_all(
        "#alerts li[data-rule='price_move']",
        "rows => rows.map(r => ({id: r.dataset.alertId, market: r.dataset.market, shown: +r.dataset.shownAt,"
        " source: r.dataset.source}))")
    return {r["id"]: r for r in rows}


def _alert_rows() -> dict[str, dict]:
    """gold.alerts' price_move rows, read from the lake (the truth the page is checked against, not through the API)."""
    from cryptoflow_core.settings import load_settings
    from cryptoflow_dagster import lake

    with lake.session(load_settings(), read_only=True) as con:
        rows = con.execute("SELECT alert_id, market, event_time, triggered_at, value FROM gold.alerts "
                           "WHERE rule = 'price_move'").fetchall()
    return {str(r[0]): {"market": r[1], "event_time": r[2].timestamp() * 1000, "triggered_at": r[3].timestamp() * 1000,
                        "value": r[4]} for r in rows}


def run(quick: bool, runs: int, screenshot: Path | None = None) -> Result:
    from playwright.sync_api import sync_playwright

    shocks_n = 4 if quick else 12
    steady_s = 20.0 if quick else 60.0
    result = Result("dashboard", f"{shocks_n} shocks every {SHOCK_EVERY_S:.0f} s over {len(SHOCK_MARKETS)} markets, "
                                 f"{runs} page loads, {steady_s:.0f} s CPU windows; trade rate 4/s per market")
    home = Path(tempfile.mkdtemp(prefix="dashboard_bench_")) / "home"
    saved_env = dict(os.environ)
    try:
        with running_platform(home, os.environ.__setitem__, rules_yaml=RULES, daily_days=7, upbit=UPBIT,
                              binance=BINANCE) as platform, \
                sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                url = platform.dashboard_url + "#upbit:KRW-BTC"
                rest, first = [], []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    httpx.get(platform.api_url + "/v1/bars/1m", params={
                        "exchange": "upbit", "market": "KRW-BTC", "order": "desc", "limit": 720}, timeout=30).raise_for_status()
                    rest.append(time.perf_counter() - t0)
                    first.append(_first_chart(browser, url))
                result.add("REST /v1/bars/1m (720 bars), from Python", "s", rest)
                result.add("time to first chart (navigation -> candles drawn)", "s", first,
                           baseline="REST /v1/bars/1m (720 bars), from Python")

                page = browser.new_page(viewport={"width": 1500, "height": 1300})
                page.goto("about:blank")
                pids = _browser_pids(os.getpid())
                idle_browser, idle_api = _window_cpu(pids, platform.api.pid, steady_s)
                page.goto(url)
                page.wait_for_selector("body[data-ready]", timeout=60_000)
                time.sleep(3)
                pids = _browser_pids(os.getpid())
                live_before = page.evaluate("() => ({...window.cryptoflowDashboard.state.counts})")
                busy_browser, busy_api = _window_cpu(pids, platform.api.pid, steady_s)
                live_after = page.evaluate("() => ({...window.cryptoflowDashboard.state.counts})")
                result.add("browser CPU, about:blank", "% of a core", [idle_browser])
                result.add("browser CPU, dashboard open (live)", "% of a core", [busy_browser],
                           baseline="browser CPU, about:blank",
                           note=f"{live_after['trade'] - live_before['trade']} trades and "
                                f"{live_after['bar'] - live_before['bar']} bars pushed in the window")
                result.add("API server CPU, no dashboard", "% of a core", [idle_api])
                result.add("API server CPU, one dashboard open", "% of a core", [busy_api],
                           baseline="API server CPU, no dashboard")

                shocks = []
                next_at = time.monotonic()
                for i in range(shocks_n):
                    exchange, market = SHOCK_MARKETS[i % len(SHOCK_MARKETS)]
                    sign = 1 if (i // len(SHOCK_MARKETS)) % 2 == 0 else -1
                    wait_until(lambda: time.monotonic() >= next_at, SHOCK_EVERY_S + 5, "the next shock", every_s=0.05)
                    at_ms = platform.sim.shock(market, sign * SHOCK_PCT, exchange=exchange)
                    shocks.append({"exchange": exchange, "market": market, "pct": sign * SHOCK_PCT, "at_ms": at_ms})
                    next_at += SHOCK_EVERY_S
                time.sleep(MATCH_S)
                if screenshot is not None:
                    screenshot.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(screenshot), full_page=True)
                shown = _shown_alerts(page)
                page_live = page.evaluate("() => ({live: window.cryptoflowDashboard.state.live, "
                                          "errors: window.cryptoflowDashboard.state.errors})")
                rows = _alert_rows()
            finally:
                browser.close()
            errors = list(platform.errors)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)

    visible, triggered, pushed, misses, matched = [], [], [], 0, []
    used: set[str] = set()
    for i, shock in enumerate(shocks):
        key = f"{shock['exchange']}:{shock['market']}"
        until = next((s["at_ms"] for s in shocks[i + 1:] if s["market"] == shock["market"]), float("inf"))
        candidates = sorted(
            (r for r in shown.values() if r["market"] == key and r["id"] not in used and r["id"] in rows
             and shock["at_ms"] - 1000 <= rows[r["id"]]["event_time"] < until),
            key=lambda r: r["shown"])
        if not candidates:
            misses += 1
            matched.append({**shock, "alert_id": None})
            continue
        row = candidates[0]
        used.add(row["id"])
        trig = rows[row["id"]]["triggered_at"]
        visible.append((row["shown"] - shock["at_ms"]) / 1000)
        triggered.append((trig - shock["at_ms"]) / 1000)
        pushed.append((row["shown"] - trig) / 1000)
        matched.append({**shock, "alert_id": row["id"], "visible_s": visible[-1], "triggered_s": triggered[-1],
                        "source": row["source"]})
    extra = len([r for r in shown.values() if r["id"] not in used])
    result.add("shock -> alert visible on the page", "s", visible, target=("<=", TARGET_P95_S),
               note=f"p95 {_pct(visible, 95)}, max {max(visible) if visible else None}; {misses} of {len(shocks)} "
                    f"shocks missed, {extra} price_move rows not matched to a shock")
    result.add("shock -> alert p95 (the target's figure)", "s", [v for v in [_pct(visible, 95)] if v is not None],
               target=("<=", TARGET_P95_S))
    result.add("shock -> triggered (gold.alerts.triggered_at)", "s", triggered)
    result.add("triggered -> visible (API feed + page)", "s", pushed)
    result.details.update({
        "shocks": matched, "misses": misses, "unmatched_alert_rows": extra,
        "p95_visible_s": _pct(visible, 95), "p99_visible_s": _pct(visible, 99),
        "max_visible_s": max(visible) if visible else None,
        "median_visible_s": statistics.median(visible) if visible else None,
        "rules": RULES, "platform_errors": errors, "page_live": page_live,
        "alert_rows": [{**{k: rows[i].get(k) for k in ("market", "event_time", "triggered_at", "value")},
                        "alert_id": i, "shown_ms": shown.get(i, {}).get("shown"),
                        "source": shown.get(i, {}).get("source")} for i in rows],
        "what_is_not_in_it": "no Dagster daemon: the market alert sensor's ticks are called back to back in one thread "
                             "(CRYPTOFLOW_ALERT_WATCH_S=2), so the daemon's hand-over gap between ticks (ADR 0011) is "
                             "not in these figures",
    })
    return result


def markdown(result_json: dict) -> str:
    lines = ["# Dashboard (issue 18) - `python -m benchmarks.dashboard`", "",
             f"Size: {result_json['size']}. Started {result_json['started_at']}, {result_json['wall_s']} s, load average at "
             f"start {result_json['load_avg_at_start']} on {result_json['machine']['cores']} cores.", "",
             "| figure | median | min | max | runs | baseline | target | verdict |", "|---|---|---|---|---|---|---|---|"]
    for f in result_json["figures"]:
        fmt = (lambda v: "" if v is None else f"{v:.3g}")
        lines.append(f"| {f['name']} ({f['unit']}) | {fmt(f['median'])} | {fmt(f['min'])} | {fmt(f['max'])} | "
                     f"{f['runs']} | {f['baseline'] or ''} | {f['target'] or ''} | {f['verdict'] or ''} |")
    d = result_json["details"]
    lines += ["", f"Shock -> visible: p95 {d['p95_visible_s']} s, p99 {d['p99_visible_s']} s, max {d['max_visible_s']} s, "
                  f"median {d['median_visible_s']} s; misses {d['misses']}; alert rows not matched to a shock "
                  f"{d['unmatched_alert_rows']}.", "", f"Not measured here: {d['what_is_not_in_it']}.", ""]
    for f in result_json["figures"]:
        if f["note"]:
            lines.append(f"- {f['name']}: {f['note']}")
    streamlit = RESULTS / "dashboard_streamlit.json"
    if streamlit.exists():  # ADR 0021's comparison, measured by benchmarks/dashboard_streamlit.py
        other = json.loads(streamlit.read_text())
        lines += ["", "## Static page vs Streamlit (ADR 0021, `python -m benchmarks.dashboard_streamlit`)", "",
                  f"The same live candles + SMA page both ways ({other['size']}); started {other['started_at']}, load "
                  f"average at start {other['load_avg_at_start']}.", "",
                  "| figure | median | min | max | unit |", "|---|---|---|---|---|"]
        for f in other["figures"]:
            lines.append(f"| {f['name']} | {f['median']:.3g} | {f['min']:.3g} | {f['max']:.3g} | {f['unit']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--screenshot", type=Path, default=None, help="save the page here (e.g. docs/images/dashboard.png)")
    args = parser.parse_args(argv)
    result = run(args.quick, args.runs, args.screenshot)
    path = write_result(result, RESULTS)
    (RESULTS / "dashboard.md").write_text(markdown(result.as_json()))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
