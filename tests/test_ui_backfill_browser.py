"""The Dagster UI and `cryptoflow backfill` driving the batch backfill, against a real webserver + daemon, the exchange
simulator and a headless Chromium (Debian's, through Playwright).

The `dagster_ui` fixture here is this module's own: `dagster dev` on a free port over a tmp home pointed at the simulator.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import httpx
import pytest
from playwright.sync_api import sync_playwright

from cryptoflow_dagster import lake
from cryptoflow_dagster.instance import prepare_instance
from cryptoflow_core.settings import load_settings
from cryptoflow_dagster.webserver import wait_until_loaded
from exchange_sim.testing import free_port, running_sim

REPO = Path(__file__).resolve().parents[1]
TODAY = datetime.now(timezone.utc).date()
UI_DAYS = [TODAY - timedelta(days=3), TODAY - timedelta(days=2)]
CLI_DAY = TODAY - timedelta(days=1)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory):
    home = tmp_path_factory.mktemp("ui_home")
    with running_sim(history_start="2025-09-01", seed=42) as sim:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTOFLOW_", "DAGSTER_"))}
        env.update(sim.env())
        env.update({
            "CRYPTOFLOW_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
            "CRYPTOFLOW_UPBIT_MARKETS": "KRW-BTC", "CRYPTOFLOW_BINANCE_SYMBOLS": "BTCUSDT",
            "CRYPTOFLOW_START_DATE": str(TODAY - timedelta(days=6)), "CRYPTOFLOW_UI_URL": f"http://127.0.0.1:{port}",
        })
        settings = load_settings(env)
        prepare_instance(settings)
        log = open(home / "dagster_dev.log", "w")
        proc = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_until_loaded(env["CRYPTOFLOW_UI_URL"], timeout_s=180, still_running=lambda: proc.poll() is None)
            yield {"url": env["CRYPTOFLOW_UI_URL"], "env": env, "settings": settings, "log": home / "dagster_dev.log"}
        finally:
            _stop(proc)
            log.close()


def _stop(proc: subprocess.Popen) -> None:
    """dagster dev shuts its webserver, daemon and code servers down on SIGTERM; give it time, then make sure."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _backfills(url: str) -> list[dict]:
    query = "{ partitionBackfillsOrError { ... on PartitionBackfills { results { id status title } } } }"
    return httpx.post(url + "/graphql", json={"query": query}, timeout=30).json()["data"]["partitionBackfillsOrError"]["results"]


def _markets_per_day(settings, table: str, day_col: str = "day") -> dict:
    with lake.session(settings, read_only=True) as con:
        rows = con.execute(f"SELECT {day_col}, market, count(*) FROM {table} GROUP BY ALL ORDER BY ALL").fetchall()
    out: dict = {}
    for day, market, n in rows:
        out.setdefault(day, {})[market] = n
    return out


def _wait_for_backfills(url: str, count: int, timeout_s: float = 300) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        backfills = _backfills(url)
        if len(backfills) >= count and all(b["status"] not in ("REQUESTED", "CANCELING", "FAILING") for b in backfills):
            return backfills
        time.sleep(2)
    return _backfills(url)


def _materialized(text: str) -> int:
    match = re.search(r"Materialized \((\d+)\)", text)
    return int(match.group(1)) if match else -1


def _runs_log(dagster_ui) -> str:
    """What the daemon launched and how the runs ended, for a failure message."""
    keep = ("Submitted run", "RUN_START", "RUN_SUCCESS", "RUN_FAILURE", "STEP_FAILURE", "Error")
    lines = [line for line in dagster_ui["log"].read_text(errors="replace").splitlines() if any(k in line for k in keep)]
    return "\n".join(line[:300] for line in lines[-40:])


@pytest.mark.timeout(1500)
def test_backfills_from_the_ui_and_from_the_cli_complete(dagster_ui):
    """A two-day backfill launched in the browser and a one-market backfill from `cryptoflow backfill`, side by side."""
    url = dagster_ui["url"]
    cli = None
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.goto(url + "/asset-groups", wait_until="networkidle")
                for group in ("raw", "silver"):
                    page.get_by_text(group, exact=True).first.wait_for(timeout=30_000)
                assert "Global asset lineage" in page.inner_text("body")

                page.goto(url + "/assets/bronze/candles_raw", wait_until="networkidle")
                page.get_by_text("Upbit 1-minute and day candles", exact=False).first.wait_for(timeout=30_000)

                page.goto(url + "/assets/bronze/candles_raw?view=partitions", wait_until="networkidle")
                page.get_by_text("Missing (", exact=False).first.wait_for(timeout=30_000)
                assert "Materialized (0)" in page.inner_text("body")

                page.get_by_role("button", name="Materialize…").click()
                dialog = page.get_by_role("dialog")
                box = dialog.get_by_placeholder("No matching partitions")
                box.fill(f"[{UI_DAYS[0]}...{UI_DAYS[1]}]")
                box.press("Enter")
                dialog.get_by_text("2 partitions", exact=True).wait_for(timeout=10_000)
                # The backfill policy shows before launching: a date range is a handful of runs, not one per day.
                assert "maximum of 31 partitions per run" in dialog.inner_text()
                dialog.get_by_role("button", name="Launch backfill").click()
                dialog.wait_for(state="detached", timeout=30_000)
                # The CLI's backfill runs beside the UI's: each alone waits mostly on daemon ticks and run start-up.
                cli = subprocess.Popen(
                    [str(REPO / ".venv" / "bin" / "cryptoflow"), "backfill", "--start", str(CLI_DAY), "--end",
                     str(CLI_DAY), "--markets", "BTCUSDT", "--poll", "1", "--timeout", "840"],
                    env=dagster_ui["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                )
                # Generous: on a loaded 2-core machine a run waits minutes for its processes, and the code server may be
                # restarting (the UI then shows the asset as external until it is back).
                deadline = time.monotonic() + 720
                while time.monotonic() < deadline and _materialized(page.inner_text("body")) < 2:
                    time.sleep(3)
                    wait_until_loaded(url, timeout_s=180)
                    page.goto(url + "/assets/bronze/candles_raw?view=partitions", wait_until="networkidle")
                # At least the two UI days (the CLI's day may already count too).
                assert _materialized(page.inner_text("body")) >= 2, _runs_log(dagster_ui)
            finally:
                browser.close()
        out, err = cli.communicate(timeout=900)
    finally:
        if cli is not None and cli.poll() is None:
            cli.kill()
            cli.wait()

    backfills = _wait_for_backfills(url, 2)
    assert sorted(b["status"] for b in backfills) == ["COMPLETED_SUCCESS"] * 2, (backfills, _runs_log(dagster_ui))
    # The UI's backfill, like the CLI's, runs each run's steps in the run's process (the code location's default
    # executor), not a process per step (ADR 0008).
    instance = dg.DagsterInstance.from_config(str(dagster_ui["settings"].dagster_home))
    runs = [r.dagster_run for r in instance.get_run_records() if r.dagster_run.tags.get("dagster/backfill")]
    assert {r.tags["dagster/backfill"] for r in runs} == {b["id"] for b in backfills}
    assert not [r.run_id for r in runs
                if instance.all_logs(r.run_id, of_type=dg.DagsterEventType.STEP_WORKER_STARTING)]
    per_day = _markets_per_day(dagster_ui["settings"], "bronze.candles_raw")
    assert all(set(per_day[day]) == {"KRW-BTC", "BTCUSDT"} for day in UI_DAYS)

    # The CLI: progress lines while it ran, success at the end, and only the chosen market for its day.
    assert cli.returncode == 0, out + err + _runs_log(dagster_ui)
    lines = out.splitlines()
    assert lines[0].startswith("backfill ") and "markets: BTCUSDT" in lines[0]
    _check_cli_output(out, candle_rows=per_day[CLI_DAY]["BTCUSDT"])
    assert set(per_day[CLI_DAY]) == {"BTCUSDT"}
    assert set(_markets_per_day(dagster_ui["settings"], "silver.candles_1m")[CLI_DAY]) == {"BTCUSDT"}


PROGRESS = re.compile(r"^\[\s*([\d.]+)s\] (\w+)\s+asset partitions (\d+)/(\d+) materialized, (\d+) failed \| "
                      r"runs: (.+?) \| requests: (\d+|-) \| ([\d.]+|-) asset partitions/min \| ETA ([\d:]+|\?)$")


def _check_cli_output(out: str, candle_rows: int) -> None:
    """Not a terminal (a pipe): plain progress lines, none within 5 s of the last but the final one, no carriage-return
    frames or escape codes; then the summary table, whose figures match the last progress line and the lake."""
    assert "\r" not in out and "\x1b" not in out, out
    lines = out.splitlines()
    progress = [m for m in map(PROGRESS.match, lines) if m]
    assert len(progress) >= 2, out
    first, last = progress[0], progress[-1]
    assert (first.group(3), first.group(4)) == ("0", "5") and first.group(9) == "?"
    assert last.group(2) == "COMPLETED_SUCCESS" and (last.group(3), last.group(4), last.group(5)) == ("5", "5", "0"), out
    assert last.group(9) == "0:00:00" and float(last.group(8)) > 0
    requests = int(last.group(7))  # bronze/candles_raw's own count: 1m and 1d klines of one market-day
    assert requests > 0, out
    times = [float(m.group(1)) for m in progress]
    assert all(b - a >= 5 for a, b in zip(times, times[1:-1])), times  # the default --progress-every 5
    assert len(progress) <= times[-1] / 5 + 2, out

    start = [line.rstrip() for line in lines].index("backfill summary")
    header, rule, *runs, rule2, total = [line.rstrip() for line in lines[start + 1:-1]]
    assert header.split() == ["run", "days", "status", "asset", "partitions", "duration", "candle", "rows", "requests",
                              "429s"], out
    assert set(rule) == set(rule2) == {"─"}
    assert len(runs) == 1 and runs[0].split()[1:4] == [str(CLI_DAY), "SUCCESS", "5"], out
    assert runs[0].split()[5:] == [f"{candle_rows:,}", str(requests), "0"], out
    assert total.split()[:4] == ["total", str(CLI_DAY), "COMPLETED_SUCCESS", "5/5"], out
    assert total.split()[5:] == [f"{candle_rows:,}", str(requests), "0"], out
    assert lines[-1].endswith("succeeded")


def test_cli_backfill_refuses_bad_input_with_a_clear_error(dagster_ui):
    cmd = [sys.executable, "-m", "cryptoflow_dagster.cli", "backfill", "--start", str(CLI_DAY), "--end", str(CLI_DAY),
           "--markets", "btc-usd;DROP"]
    done = subprocess.run(cmd, env=dagster_ui["env"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2 and "invalid" in done.stderr.lower()
    late = subprocess.run(cmd[:4] + ["--start", str(CLI_DAY), "--end", str(CLI_DAY - timedelta(days=1))],
                          env=dagster_ui["env"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert late.returncode == 2 and "before" in late.stderr
