"""ADR 0021's measurement: the same live candlestick page as a Streamlit app and as a static page with
lightweight-charts, side by side on this machine.

``python -m benchmarks.dashboard_streamlit --streamlit-python /tmp/st_venv/bin/python`` (Streamlit is not a project
dependency: install it in a scratch venv, ``python3 -m venv /tmp/st_venv && /tmp/st_venv/bin/pip install streamlit``).
Writes benchmarks/results/dashboard_streamlit.json.

Both variants read the same data server (a child process: 1,440 one-minute bars, then one new bar a second) and draw
the same thing (candles + SMA 20), live; each is opened in the same headless Chromium. Measured per variant: time from
navigation to the first drawn chart, the UI server's RSS and CPU (Streamlit's server; for the static page, the data
server is also what serves the page, as the API serves the dashboard), the browser's CPU over a steady window.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, REPO, Result, proc_cpu_s, proc_rss_mib, tree_rss_mib, write_result

STATIC = REPO / "cryptoflow_serving" / "dashboard" / "static"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

# The data server: a stdlib HTTP server (one process both variants read), bars from a seeded random walk.
DATA_SERVER = r'''
import json, math, random, sys, time
from http.server import ThreadingHTTPServer, SimpleHTTPRequestHandler
from functools import partial
T0 = int(time.time()) // 60 * 60 - 1440 * 60
def bars(n_extra):
    rnd, price, out = random.Random(7), 100.0, []
    for i in range(1440 + n_extra):
        o = price; price *= math.exp(rnd.gauss(0, 0.002)); c = price
        out.append({"time": T0 + 60 * i, "open": o, "high": max(o, c) * 1.001, "low": min(o, c) * 0.999, "close": c})
    return out
STARTED = time.time()
class H(SimpleHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path.startswith("/bars"):
            body = json.dumps(bars(int(time.time() - STARTED))).encode()
            self.send_response(200); self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
        else:
            super().do_GET()
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), partial(H, directory=sys.argv[2])).serve_forever()
'''

STREAMLIT_APP = r'''
import json, os, urllib.request
import altair as alt
import pandas as pd
import streamlit as st
URL = os.environ["BARS_URL"]
st.title("candles")
@st.fragment(run_every=1)
def chart():
    df = pd.DataFrame(json.load(urllib.request.urlopen(URL)))
    df["t"] = pd.to_datetime(df["time"], unit="s")
    df["sma"] = df["close"].rolling(20).mean()
    base = alt.Chart(df).encode(x="t:T")
    rule = base.mark_rule().encode(y=alt.Y("low:Q", scale=alt.Scale(zero=False)), y2="high:Q")
    body = base.mark_bar().encode(y="open:Q", y2="close:Q",
        color=alt.condition("datum.open <= datum.close", alt.value("#26a69a"), alt.value("#ef5350")))
    line = base.mark_line(color="orange").encode(y="sma:Q")
    st.altair_chart(rule + body + line, use_container_width=True)
chart()
'''

STATIC_PAGE = r'''<!doctype html><html><head><meta charset="utf-8"><title>candles</title>
<script src="lightweight-charts.standalone.production.js"></script><script src="indicators.js"></script></head>
<body><div id="c" style="width:1200px;height:500px"></div><script>
const chart = LightweightCharts.createChart(document.getElementById("c"));
const candles = chart.addSeries(LightweightCharts.CandlestickSeries);
const sma = chart.addSeries(LightweightCharts.LineSeries, {color: "orange"});
let shown = 0;
async function tick() {
  const bars = await (await fetch("/bars")).json();
  if (!shown) { candles.setData(bars); } else { for (const b of bars.slice(shown)) candles.update(b); }
  const s = CryptoflowIndicators.sma(bars.map(b => b.close), 20);
  sma.setData(bars.map((b, i) => s[i] === null ? {time: b.time} : {time: b.time, value: s[i]}));
  shown = bars.length;
  requestAnimationFrame(() => { document.body.dataset.drawn = "1"; });
}
tick(); setInterval(tick, 1000);
</script></body></html>'''


def _free_port() -> int:
    from exchange_sim.testing import free_port

    return free_port()


def _wait_http(url: str, timeout_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not up after {timeout_s} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _browser_pids(root_pid: int) -> list[int]:
    """Chromium's processes: the descendants of this process that are not the Playwright driver (node)."""
    from benchmarks.common import _children_of

    tree, out, todo = _children_of(), [], [root_pid]
    while todo:
        p = todo.pop()
        for child in tree.get(p, []):
            todo.append(child)
            try:
                exe = os.readlink(f"/proc/{child}/exe")
            except OSError:
                continue
            if "chrom" in exe:
                out.append(child)
    return out


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += proc_cpu_s(pid)
        except OSError:
            pass
    return total


def measure(variant: str, url: str, server_pid: int, drawn_selector: str, steady_s: float) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            server_cpu0 = proc_cpu_s(server_pid)
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_selector(drawn_selector, timeout=60_000, state="attached")
            first_chart_s = time.perf_counter() - t0
            time.sleep(3)  # past the first redraws
            pids = _browser_pids(os.getpid())
            b0, s0, w0 = _cpu(pids), proc_cpu_s(server_pid), time.monotonic()
            time.sleep(steady_s)
            wall = time.monotonic() - w0
            browser_cpu = (_cpu(pids) - b0) / wall
            server_cpu = (proc_cpu_s(server_pid) - s0) / wall
            return {"variant": variant, "first_chart_s": first_chart_s, "server_rss_mib": tree_rss_mib(server_pid),
                    "server_cpu_pct": 100 * server_cpu, "browser_cpu_pct": 100 * browser_cpu,
                    "browser_rss_mib": sum(proc_rss_mib(p) for p in pids if os.path.exists(f"/proc/{p}")),
                    "server_cpu_startup_s": s0 - server_cpu0}
        finally:
            browser.close()


def run(streamlit_python: str, runs: int = 3, steady_s: float = 20) -> Result:
    result = Result("dashboard_streamlit", f"{runs} runs, {steady_s:.0f} s steady, 1,440 bars + 1 new bar/s")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        web = Path(tmp, "web")
        web.mkdir()
        for name in ("indicators.js", "vendor/lightweight-charts.standalone.production.js"):
            shutil.copy(STATIC / name, web / Path(name).name)
        (web / "index.html").write_text(STATIC_PAGE)
        (Path(tmp) / "app.py").write_text(STREAMLIT_APP)
        data_port = _free_port()
        data = subprocess.Popen([sys.executable, "-c", DATA_SERVER, str(data_port), str(web)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_http(f"http://127.0.0.1:{data_port}/bars")
            for i in range(runs):
                rows.append(measure("static", f"http://127.0.0.1:{data_port}/index.html", data.pid,
                                    "body[data-drawn]", steady_s))
                st_port = _free_port()
                env = {**os.environ, "BARS_URL": f"http://127.0.0.1:{data_port}/bars"}
                started = time.perf_counter()
                st = subprocess.Popen(
                    [streamlit_python, "-m", "streamlit", "run", str(Path(tmp) / "app.py"), "--server.port",
                     str(st_port), "--server.address", "127.0.0.1", "--server.headless", "true",
                     "--browser.gatherUsageStats", "false"], env=env, cwd=tmp,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    _wait_http(f"http://127.0.0.1:{st_port}/_stcore/health")
                    server_up_s = time.perf_counter() - started
                    row = measure("streamlit", f"http://127.0.0.1:{st_port}/", st.pid,
                                  "[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg",
                                  steady_s)
                    row["server_start_s"] = server_up_s
                    rows.append(row)
                finally:
                    _stop(st)
                print(json.dumps(rows[-2:]), flush=True)
        finally:
            _stop(data)
    for variant in ("static", "streamlit"):
        mine = [r for r in rows if r["variant"] == variant]
        base = None if variant == "static" else "static"
        result.add(f"{variant}: time to first chart", "s", [r["first_chart_s"] for r in mine], baseline=base)
        result.add(f"{variant}: UI server RSS", "MiB", [r["server_rss_mib"] for r in mine], baseline=base,
                   note="static: the data server that also serves the page" if variant == "static" else "")
        result.add(f"{variant}: UI server CPU, steady", "% of a core", [r["server_cpu_pct"] for r in mine],
                   baseline=base)
        result.add(f"{variant}: browser CPU, steady", "% of a core", [r["browser_cpu_pct"] for r in mine],
                   baseline=base)
    result.details["rows"] = rows
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streamlit-python", required=True, help="a Python with streamlit installed")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steady", type=float, default=20)
    args = parser.parse_args(argv)
    print(write_result(run(args.streamlit_python, args.runs, args.steady), RESULTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
