"""A chaos run: the streaming platform (sidecar process, streaming ingest runs, alert rules and delivery, gap repair)
against the simulator with every fault on, then a check of the result against the simulator's ground truth.

Faults: WebSocket disconnects (every ``disconnect_every_s``), 1 % malformed frames, 0.5 % duplicates, out-of-order
messages, schema drift from half-way, the Slack sink answering 500 for ``slack_outage_s``, the sidecar killed with SIGKILL
every ``kill_every_s`` and restarted after a short downtime, and one streaming ingest run killed (SIGKILL) while it runs.

Pass criteria (the report's ``failures`` lists what broke; the exit status is 1 when any did; see chaos/checks.py):
silver.trades equals the ground truth for every market over the streamed window (lost 0, duplicated 0, extra 0); every
gap found was repaired; the dead letters are exactly the malformed frames the simulator sent, frame by frame and per
exchange, less those provably lost with a SIGKILLed sidecar's unflushed buffer (listed one by one); every alert is
'sent' and in the Slack sink exactly once by dedupe key, the price shock's alert among them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from chaos import checks

log = logging.getLogger(__name__)

UPBIT = ("KRW-BTC", "KRW-USDT")
BINANCE = ("BTCUSDT",)
MARKETS = [("upbit", m) for m in UPBIT] + [("binance", s) for s in BINANCE]

# A streaming ingest run in its own process, so that it can be killed with SIGKILL mid-run.
_KILLABLE_INGEST = (
    "import dagster as dg\n"
    "from cryptoflow_dagster.defs.streaming.jobs import single_pass, streaming_ingest_job\n"
    "from cryptoflow_dagster.resources import build_resources\n"
    "print('ready', flush=True)\n"
    "streaming_ingest_job.execute_in_process(run_config=single_pass(), instance=dg.DagsterInstance.ephemeral(),\n"
    "                                        resources=build_resources())\n"
)


@dataclass
class Report:
    duration_s: float
    home: str
    sidecar_kills: int = 0
    # (started, SIGKILLed) wall clock ms of each killed sidecar: the connections it opened may lose their tail
    killed_sidecars_ms: list[tuple[int, int]] = field(default_factory=list)
    ingest_runs: int = 0
    killed_run_exit: int | None = None
    markets: dict[str, dict] = field(default_factory=dict)
    gaps: int = 0
    unrepaired_gaps: int = 0
    dead_letters: dict[str, dict] = field(default_factory=dict)  # per exchange: sent, expected, found, lost with kills
    dead_letters_lost_with_kills: list[dict] = field(default_factory=list)
    alerts: dict = field(default_factory=dict)  # raised, by rule and status, Slack messages, delivered twice, shock
    phase_s: dict[str, float] = field(default_factory=dict)  # wall time of chaos, recovery (ingest + repair), delivery
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {**self.__dict__, "ok": self.ok}


def _sidecar(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streaming_sensor"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


class FaultClock(threading.Thread):
    """The timed faults on a thread of their own: the price shock at 20 %, the Slack outage from 30 %, schema drift
    from half-way, and the sidecar SIGKILLed every ``kill_every_s`` (down ``downtime_s``, then restarted). The main
    loop's ingest runs take 3-20 s each on a loaded machine; kills checked between them came every ~90 s, not 60."""

    def __init__(self, sim, env: dict[str, str], report: Report, duration_s: float, kill_every_s: float,
                 downtime_s: float, slack_outage_s: float, while_down, heartbeat_path: Path) -> None:
        super().__init__(name="chaos-fault-clock", daemon=True)
        self.sim, self.env, self.report, self.heartbeat_path = sim, env, report, heartbeat_path
        self.kill_every_s, self.downtime_s, self.while_down = kill_every_s, downtime_s, while_down
        self.shock: tuple[str, str, int] | None = None  # (exchange, market, at_ms) once the price shock is in
        self.error: BaseException | None = None
        self.halt = threading.Event()
        outage_at = duration_s * 0.3
        self.events = sorted([
            (duration_s * 0.2, self._shock),
            (outage_at, lambda: sim.set_faults(slack_status=500)),
            (outage_at + slack_outage_s, lambda: sim.set_faults(slack_status=0)),
            (duration_s / 2, lambda: sim.set_faults(ws_schema_drift_after=1)),
        ], key=lambda e: e[0])
        self._spawn()

    def _spawn(self) -> None:
        self.spawned_at = time.time()
        self.sidecar = _sidecar(self.env)

    def _shock(self) -> None:
        self.shock = ("upbit", "KRW-BTC", self.sim.shock("KRW-BTC", 8.0))

    def run(self) -> None:
        try:
            started = time.monotonic()
            next_kill = started + self.kill_every_s
            while not self.halt.is_set():
                now = time.monotonic()
                while self.events and now >= started + self.events[0][0]:
                    self.events.pop(0)[1]()
                if now >= next_kill:
                    self._kill_and_restart()
                    next_kill = time.monotonic() + self.kill_every_s
                self.halt.wait(0.2)
        except BaseException as exc:  # reported as a failure of the run, not lost with the thread
            self.error = exc

    def _kill_and_restart(self) -> None:
        self.report.killed_sidecars_ms.append((int(self.spawned_at * 1000), time.time_ns() // 1_000_000))
        self.sidecar.send_signal(signal.SIGKILL)
        self.sidecar.wait(10)
        self.report.sidecar_kills += 1
        time.sleep(self.downtime_s)
        self.while_down()  # the heartbeat sensor sees the stale heartbeat: one sidecar-down alert
        self._spawn()

    def finish(self) -> None:
        """Stop the clock, then the sidecar with SIGTERM (it flushes what it holds and exits 0)."""
        self.halt.set()
        self.join()
        if self.error is not None:
            self.report.failures.append(f"the fault clock failed: {self.error!r}")
        # A sidecar restarted moments ago may still be importing, before its SIGTERM handler exists (it would die of
        # the signal, with nothing to lose): wait for its first heartbeat, written once the handler is in place.
        from cryptoflow_core.heartbeat import read_heartbeat

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.sidecar.poll() is None:
            beat = read_heartbeat(self.heartbeat_path) or {}
            started = beat.get("started_at")
            if started and datetime.fromisoformat(started).timestamp() >= self.spawned_at:
                break
            time.sleep(0.2)
        self.sidecar.send_signal(signal.SIGTERM)
        if self.sidecar.wait(60) != 0:
            self.report.failures.append("the sidecar did not stop cleanly on SIGTERM")


def _kill_a_running_ingest(env: dict[str, str], after_s: float) -> int:
    with subprocess.Popen([sys.executable, "-c", _KILLABLE_INGEST], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as proc:
        proc.stdout.readline()  # 'ready': Dagster and the definitions are imported, the run starts now
        time.sleep(after_s)
        proc.send_signal(signal.SIGKILL)
        return proc.wait(30)


def run(duration_s: float = 600.0, *, kill_every_s: float = 60.0, disconnect_every_s: float = 30.0,
        slack_outage_s: float = 60.0, downtime_s: float = 3.0, trade_rate: float = 6.0, malformed_every: int = 100,
        home: Path | None = None) -> Report:
    """Run the platform for ``duration_s`` under faults, then check it; returns the report (never raises on a failed
    check, only on a broken setup)."""
    import dagster as dg

    from cryptoflow_dagster import lake
    from cryptoflow_dagster.resources import slack_resource
    from cryptoflow_dagster.defs.alerts.sensors import alert_delivery_sensor, market_alert_sensor, sidecar_heartbeat_sensor
    from cryptoflow_dagster.defs.streaming.jobs import single_pass, streaming_ingest_job
    from cryptoflow_dagster.defs.streaming.repair import gap_repair_job
    from cryptoflow_dagster.resources import LakeResource, build_resources
    from cryptoflow_core.settings import load_settings
    from exchange_sim.testing import running_sim

    home = home or Path(tempfile.mkdtemp(prefix="cryptoflow-chaos-"))
    report = Report(duration_s=duration_s, home=str(home))  # kept after the run, for a look at the lake and logs
    # Out-of-order every 37th: the simulator holds a swapped frame back instead of mangling it, so a period sharing
    # factors with 100 or 200 would swallow the malformed frames and duplicates.
    faults = {"ws_disconnect_every_s": disconnect_every_s, "ws_malformed_every": malformed_every, "ws_duplicate_every": 200,
              "ws_out_of_order_every": 37}
    with running_sim(trade_rate=trade_rate, upbit_markets=list(UPBIT), binance_symbols=list(BINANCE),
                     faults=faults) as sim:
        env = {**os.environ, **sim.env(), "CRYPTOFLOW_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
               "CRYPTOFLOW_UPBIT_MARKETS": ",".join(UPBIT), "CRYPTOFLOW_BINANCE_SYMBOLS": ",".join(BINANCE),
               "CRYPTOFLOW_HEARTBEAT_STALE_S": str(max(1.0, downtime_s - 1.0)),
               "SLACK_BOT_TOKEN": os.environ.get("SLACK_BOT_TOKEN", "xoxb-chaos-not-a-real-token")}
        (home / "dagster_home").mkdir(parents=True, exist_ok=True)
        saved = dict(os.environ)
        os.environ.update(env)  # the in-process Dagster runs and sensors read settings from the environment
        instance = dg.DagsterInstance.ephemeral()
        try:
            settings = load_settings()
            resources = {"lake": LakeResource(), "slack": slack_resource()}
            cursor = market_cursor = None
            # The fault clock's thread ticks the heartbeat sensor after each kill while the main loop ticks it too: the
            # lock keeps the two ticks (and their shared cursor) apart. Concurrent lake sessions of one process are
            # serialized by lake.session itself (SQLite catalog: "disk I/O error" otherwise).
            lake_lock = threading.RLock()

            def ingest() -> None:
                result = streaming_ingest_job.execute_in_process(run_config=single_pass(), instance=instance,
                                                                 resources=build_resources(), raise_on_error=False)
                report.ingest_runs += 1
                if not result.success:
                    report.failures.append(f"streaming ingest run {result.run_id} failed")

            def sensors() -> None:
                nonlocal cursor, market_cursor
                ctx = dg.build_sensor_context(instance=instance, cursor=market_cursor, resources=resources)
                market_alert_sensor(ctx)
                market_cursor = ctx.cursor
                heartbeat_tick()
                alert_delivery_sensor(dg.build_sensor_context(instance=instance, resources=resources))

            def heartbeat_tick() -> None:
                nonlocal cursor
                with lake_lock:
                    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
                    sidecar_heartbeat_sensor(ctx)
                    cursor = ctx.cursor

            started = time.monotonic()
            clock = FaultClock(sim, env, report, duration_s, kill_every_s, downtime_s, slack_outage_s, heartbeat_tick,
                               settings.heartbeat_path)
            clock.start()
            killed_run = False
            try:
                while (now := time.monotonic()) < started + duration_s:
                    if not killed_run and now >= started + duration_s * 0.6:
                        report.killed_run_exit = _kill_a_running_ingest(env, after_s=1.5)
                        killed_run = True
                    with lake_lock:
                        ingest()
                        sensors()
                    time.sleep(1.0)
            finally:
                clock.finish()
            if not killed_run:  # a loaded machine's runs outlasted the window: kill one on what the sidecar left
                report.killed_run_exit = _kill_a_running_ingest(env, after_s=1.5)
            report.phase_s["chaos"] = round(time.monotonic() - started, 1)
            mark = time.monotonic()
            sim.set_faults(slack_status=0)
            ingest()
            if not gap_repair_job.execute_in_process(instance=instance, resources=build_resources(),
                                                     raise_on_error=False).success:
                report.failures.append("gap repair run failed")
            ingest()
            report.phase_s["recovery"] = round(time.monotonic() - mark, 1)
            mark = time.monotonic()
            for _ in range(30):  # deliver what is still pending (backoff after the outage)
                sensors()
                with lake.session(settings, read_only=True) as con:
                    pending = con.execute("SELECT count(*) FROM gold.alerts WHERE status = 'pending'").fetchone()[0]
                if not pending:
                    break
                time.sleep(2)
            report.phase_s["delivery"] = round(time.monotonic() - mark, 1)
            _check(report, sim, settings, clock.shock)
        finally:
            instance.dispose()  # and its temporary directory, if a run made one
            os.environ.clear()
            os.environ.update(saved)
    return report


def _check(report: Report, sim, settings, shock: tuple[str, str, int] | None) -> None:
    from cryptoflow_dagster import lake

    with lake.session(settings, read_only=True) as con:
        report.failures += checks.check_trades(con, sim, MARKETS, report)
        report.gaps, report.unrepaired_gaps = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE repaired_at IS NULL) FROM ops.gaps").fetchone()
        if report.unrepaired_gaps:
            report.failures.append(f"{report.unrepaired_gaps} of {report.gaps} gaps not repaired")
        report.failures += checks.check_dead_letters(con, sim.malformed_frames(), report.killed_sidecars_ms, report)
        report.failures += checks.check_alerts(con, sim.slack_messages(), shock, report)
    if report.sidecar_kills and report.killed_run_exit not in (None, -signal.SIGKILL, 0):
        report.failures.append(f"the killed ingest run exited {report.killed_run_exit}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of chaos (default 600)")
    parser.add_argument("--kill-every", type=float, default=60.0, help="SIGKILL the sidecar this often (s)")
    parser.add_argument("--disconnect-every", type=float, default=30.0, help="simulator closes WebSockets this often (s)")
    parser.add_argument("--slack-outage", type=float, default=60.0, help="seconds the Slack sink answers 500")
    parser.add_argument("--malformed-every", type=int, default=100,
                        help="one malformed frame after every Nth message of a connection (default 100: 1 %%)")
    parser.add_argument("--home", type=Path, default=None, help="CRYPTOFLOW_HOME for the run (default: a temp dir)")
    parser.add_argument("--report", type=Path, default=None, help="also write the report here as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    report = run(args.duration, kill_every_s=args.kill_every, disconnect_every_s=args.disconnect_every,
                 slack_outage_s=args.slack_outage, malformed_every=args.malformed_every, home=args.home)
    text = json.dumps(report.as_dict(), indent=2, default=str)
    print(text)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text)
    print("chaos: PASS" if report.ok else "chaos: FAIL\n  " + "\n  ".join(report.failures), file=sys.stderr)
    return 0 if report.ok else 1
