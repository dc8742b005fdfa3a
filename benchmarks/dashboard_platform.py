"""A small running platform for the dashboard's browser test and benchmark (tests/test_dashboard_browser.py,
benchmarks/dashboard.py): the exchange simulator, a lake filled through the platform's own paths, the sidecar, the
streaming ingest loop, the market alert sensor and the market-data API server (`python -m cryptoflow_serving`).

How each table gets its rows (never written directly):
- history: the simulator's own trades of the last ``history_minutes`` (its ground truth) as Upbit / Binance WebSocket
  frames, landed with the sidecar's micro-batch writer, then ingested by the streaming ingest (``ingest_pending``):
  bronze -> silver.trades -> gold.ohlcv_1m_from_trades, market_stats_24h, kimchi_premium_1m;
- live: the real sidecar process against the simulator, ingested by the streaming loop (``run_ingest_loop``, as a
  streaming run runs it) in a process of its own;
- alerts: ``market_alert_sensor`` ticks (the Dagster sensor function, as the daemon calls it) on the landed files, in a
  thread: a price shock becomes a gold.alerts row, which the API pushes;
- volatility (``daily_days``): the ``daily_batch`` job for the last days (REST candles -> silver.candles_1m) and dbt's
  ``volatility_daily`` model, as the daily schedule and gold automation build them.

Not the whole `cryptoflow demo`: no Dagster daemon, so the sensor's hand-over between ticks (ADR 0011) is not in the
figures; the tick interval here (``alert_watch_s``) is the demo's default watch.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

from exchange_sim.testing import SimHandle, free_port, running_sim

REPO = Path(__file__).resolve().parents[1]
UPBIT = ("KRW-BTC", "KRW-USDT")
BINANCE = ("BTCUSDT",)


@dataclass
class Platform:
    sim: SimHandle
    home: Path
    api_url: str
    api: subprocess.Popen | None
    sidecar: subprocess.Popen | None
    upbit: tuple[str, ...] = UPBIT
    binance: tuple[str, ...] = BINANCE
    ingest: subprocess.Popen | None = None
    errors: list[str] = field(default_factory=list)
    alert_ticks: int = 0

    @property
    def dashboard_url(self) -> str:
        return self.api_url + "/dashboard/"


def upbit_frame(market: str, trade: dict) -> bytes:
    """An Upbit WebSocket trade message (docs/exchange-apis.md) of one ground-truth trade."""
    return json.dumps({"type": "trade", "code": market, "trade_timestamp": trade["ts"], "timestamp": trade["ts"],
                       "trade_price": trade["price"], "trade_volume": trade["volume"],
                       "ask_bid": "ASK" if trade["side"] == "sell" else "BID",
                       "sequential_id": trade["sequential_id"], "stream_type": "SNAPSHOT"}).encode()


def binance_frame(symbol: str, trade: dict) -> bytes:
    """A Binance combined-stream trade message (docs/exchange-apis.md) of one ground-truth trade."""
    data = {"e": "trade", "E": trade["ts"], "s": symbol, "t": trade["trade_id"], "p": repr(trade["price"]),
            "q": repr(trade["volume"]), "T": trade["ts"], "m": trade["side"] == "sell", "M": True}
    return json.dumps({"stream": f"{symbol.lower()}@trade", "data": data}).encode()


def land_history(settings, sim: SimHandle, minutes: int, until_ms: int, upbit: tuple[str, ...] = UPBIT,
                 binance: tuple[str, ...] = BINANCE) -> int:
    """The simulator's trades of ``minutes`` before ``until_ms``, landed as the sidecar lands frames. Returns the count."""
    from streaming_sensor.batches import MicroBatcher

    batcher = MicroBatcher(settings.landing_dir, "00000000000a1570", settings.home / "spill")
    start = until_ms - minutes * 60_000
    count = 0
    for exchange, markets, frame, id_key in (("upbit", upbit, upbit_frame, "sequential_id"),
                                             ("binance", binance, binance_frame, "trade_id")):
        for market in markets:
            for trade in sim.ground_truth(market, start, until_ms, exchange=exchange):
                batcher.add(exchange, "trade", market, trade[id_key], trade["ts"], int(time.time() * 1e6),
                            "historyfeed01", frame(market, trade), None)
                count += 1
    batcher.flush()
    return count


def build_daily(days: int = 1) -> None:
    """The last ``days`` UTC days of exchange candles through the daily batch job, then dbt's volatility_daily model."""
    import dagster as dg

    from cryptoflow_core.settings import load_settings

    from cryptoflow_dagster.dbt_project import run_dbt
    from cryptoflow_dagster.definitions import defs as load_code_location

    today = datetime.now(timezone.utc).date()
    first, last = str(today - timedelta(days=days)), str(today - timedelta(days=1))
    with dg.DagsterInstance.ephemeral() as instance:
        result = load_code_location().resolve_job_def("daily_batch").execute_in_process(
            instance=instance, tags={"dagster/asset_partition_range_start": first,
                                     "dagster/asset_partition_range_end": last},
            raise_on_error=False)
    if not result.success:
        raise RuntimeError("daily_batch failed")
    built = run_dbt(["run", "--select", "+volatility_daily"], load_settings())
    if built.returncode != 0:
        raise RuntimeError(f"dbt run volatility_daily failed: {built.stdout[-3000:]}")


# The streaming loop in a process of its own, as a streaming run is: a lake session held in this process would hold the
# process's SQLite session lock (lake/databases.py) and stall the alert sensor's sessions for as long as the loop runs.
# SIGTERM ends it after the chunk in flight (the loop's own stop handling).
_INGEST_LOOP = r"""
from cryptoflow_dagster import lake
from cryptoflow_core.settings import load_settings
from cryptoflow_dagster.streaming.loop import LoopLimits, StopRequested, run_ingest_loop
settings = load_settings()
limits = LoopLimits(max_s=3600, idle_s=3600, poll_s=0.25, repair_every_s=10**9)
with lake.session(settings) as con:
    try:
        run_ingest_loop(con, settings.landing_dir, None, limits)
    except StopRequested:
        pass
"""


def _alert_ticks(stop: threading.Event, go: threading.Event, errors: list[str], platform: Platform) -> None:
    import dagster as dg

    from cryptoflow_dagster.defs.alerts.sensors import market_alert_sensor
    from cryptoflow_dagster.resources import LakeResource, slack_resource

    resources = {"lake": LakeResource(), "slack": slack_resource()}
    cursor = None
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            while not go.wait(0.2):
                if stop.is_set():
                    return
            while not stop.is_set():
                ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
                market_alert_sensor(ctx)  # watches the landing folder for CRYPTOFLOW_ALERT_WATCH_S, as in the daemon
                cursor = ctx.cursor
                platform.alert_ticks += 1
    except Exception as exc:
        errors.append(f"alert sensor: {exc!r}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(every_s)


def _api_up(url: str, proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"the API server exited with {proc.returncode}")
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


_BUILD_DAILY = "import sys; from benchmarks.dashboard_platform import build_daily; build_daily(int(sys.argv[1]))"


@contextlib.contextmanager
def _child(argv: list[str], log: Path) -> Iterator[subprocess.Popen]:
    """A child process of the platform, its output in ``log``; stopped by its own pid on the way out."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env={**os.environ}, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            _stop(proc)


@contextlib.contextmanager
def running_platform(home: Path, setenv: Callable[[str, str], None], *, trade_rate: float = 4.0,
                     history_minutes: int = 40, daily_days: int = 1, alert_watch_s: float = 2.0,
                     rules_yaml: str | None = None, upbit: tuple[str, ...] = UPBIT,
                     binance: tuple[str, ...] = BINANCE) -> Iterator[Platform]:
    """Everything above, started in order, stopped in reverse (processes by their own pid).

    The daily build (a batch job and dbt, in a process of its own) goes first, alone: dbt does not retry a commit that
    meets the catalog locked ("database is locked" when the stream or the API's feed used the SQLite catalog at the
    same moment), as the platform's own writers do.
    """
    from cryptoflow_dagster import lake
    from cryptoflow_core.settings import load_settings
    from cryptoflow_dagster.streaming.ingest import ingest_pending

    home.mkdir(parents=True, exist_ok=True)
    with running_sim(seed=42, history_days=daily_days + 2, trade_rate=trade_rate, upbit_markets=list(upbit),
                     binance_symbols=list(binance)) as sim, contextlib.ExitStack() as stack:
        env = {**sim.env(), "CRYPTOFLOW_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
               "CRYPTOFLOW_UPBIT_MARKETS": ",".join(upbit), "CRYPTOFLOW_BINANCE_SYMBOLS": ",".join(binance),
               "CRYPTOFLOW_ALERT_WATCH_S": str(alert_watch_s)}
        if rules_yaml is not None:
            (home / "alert_rules.yaml").write_text(rules_yaml)
            env["CRYPTOFLOW_ALERT_RULES"] = str(home / "alert_rules.yaml")
        (home / "dagster_home").mkdir(exist_ok=True)
        logs = home / "logs"
        logs.mkdir(exist_ok=True)
        for key, value in env.items():
            setenv(key, value)
        settings = load_settings()
        with lake.session(settings) as con:
            lake.ensure_schema(con)
        stop, go = threading.Event(), threading.Event()
        platform = Platform(sim, home, "", None, None, upbit, binance)
        # the alert sensor's thread imports Dagster and opens its instance meanwhile, then waits for the go
        alerts = threading.Thread(target=_alert_ticks, args=(stop, go, platform.errors, platform), name="alerts",
                                  daemon=True)
        alerts.start()
        stack.callback(alerts.join, 60)
        stack.callback(stop.set)  # on the way out (last in, first out): the ticks end, then the processes stop
        if daily_days:
            with _child([sys.executable, "-c", _BUILD_DAILY, str(daily_days)], logs / "daily.log") as daily:
                wait_until(lambda: daily.poll() is not None, 300, "the daily build", every_s=0.5)
            if daily.returncode != 0:
                raise RuntimeError(f"the daily build failed (exit {daily.returncode}): see {logs / 'daily.log'}")
        port = free_port()
        api = stack.enter_context(_child(
            [sys.executable, "-m", "cryptoflow_serving", "--host", "127.0.0.1", "--port", str(port)], logs / "api.log"))
        # History next, and ingested, so the page has bars to draw and the alert rules a calm baseline; right before
        # the sidecar starts, so the trades between the two are few (a short partial minute; no gap repair here).
        land_history(settings, sim, history_minutes, int(time.time() * 1000), upbit, binance)
        with lake.session(settings) as con:
            ingest_pending(con, settings.landing_dir, None)
        platform.sidecar = stack.enter_context(_child([sys.executable, "-m", "streaming_sensor"], logs / "sidecar.log"))
        platform.api, platform.api_url = api, f"http://127.0.0.1:{port}"
        platform.ingest = stack.enter_context(_child([sys.executable, "-c", _INGEST_LOOP], logs / "ingest.log"))
        go.set()
        wait_until(lambda: _api_up(platform.api_url, api), 60, "the API answers /healthz")
        # the first tick imports and attaches the lake (seconds): a shock before it would be timed with that
        wait_until(lambda: platform.alert_ticks >= 1 or bool(platform.errors), 120, "the first alert tick")
        if platform.errors:
            raise RuntimeError("; ".join(platform.errors))
        yield platform
