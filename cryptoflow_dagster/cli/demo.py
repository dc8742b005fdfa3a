"""``cryptoflow demo`` (``make demo``): the whole platform offline on this machine.

Starts the exchange simulator, the sidecar (when this installation has it), a Dagster code server, the webserver and
the daemon, the market-data API with its dashboard, waits until the code location is LOADED, on a first start launches
a backfill of the demo's days so that gold and the API hold history within minutes (``demo_history``), writes its settings to ``$CRYPTOFLOW_HOME/.env`` (so every command
typed in another shell talks to it) and prints where everything is. While it runs it is a small service manager: a
child that exits is started again with backoff, logged and alerted (``service_restarted``, through gold.alerts to the
Slack sink). Ctrl-C or SIGTERM stops everything in order: no new runs, the runs in flight end (CANCELED, never FAILURE
or left STARTED), then the Dagster processes, then the sidecar and the simulator.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from cryptoflow_dagster.cli import demo_history, services
from cryptoflow_dagster.cli.children import Child, Children, Exited, Restarted, RestartPolicy
from cryptoflow_dagster.cli.errors import CliError
from cryptoflow_core.settings import ENV_FILE, Settings, load_settings

log = logging.getLogger(__name__)

# A short history keeps the demo's daily partitions few and every one of them backed by simulator data.
DEMO_HISTORY_DAYS = 14
DEMO_SLACK_TOKEN = "xoxb-cryptoflow-demo-not-a-real-token"
READY_LINE = "cryptoflow demo is ready"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run everything offline: simulator, sidecar, Dagster UI and daemon",
        description="Start the exchange simulator, the streaming sidecar (if installed) and the Dagster webserver and "
        "daemon against it, all on 127.0.0.1, with data under CRYPTOFLOW_HOME. Writes the Dagster home's dagster.yaml if "
        "absent, and its settings to $CRYPTOFLOW_HOME/.env (removed when it stops) so that cryptoflow doctor, query, "
        "slo and backfill in another shell talk to it. A part that exits is restarted (after 1 s, doubling to 60 s) "
        "and alerted. Ctrl-C or SIGTERM stops everything in order: runs in flight end canceled, never failed.",
    )
    parser.add_argument("--ui-host", help="address of the Dagster UI (default CRYPTOFLOW_UI_HOST, 127.0.0.1)")
    parser.add_argument("--ui-port", type=int, help="port of the Dagster UI (default CRYPTOFLOW_UI_PORT, 3000)")
    parser.add_argument("--sim-port", type=int, help="port of the simulator (default CRYPTOFLOW_SIM_PORT, 8765)")
    parser.add_argument("--api-port", type=int,
                        help="port of the market-data API and dashboard (default CRYPTOFLOW_API_PORT, 8000)")
    parser.add_argument(
        "--history-start",
        type=date.fromisoformat,
        help="first day of simulated history and of the daily partitions, YYYY-MM-DD "
        f"(default: {DEMO_HISTORY_DAYS} days ago; 2025-09-01 replays the recorded real Upbit minutes)",
    )
    parser.add_argument("--no-sidecar", action="store_true", help="do not start the streaming sidecar")
    parser.add_argument("--no-history", action="store_true",
                        help="do not launch the first-start backfill of the demo's days (gold then stays empty until "
                        "you launch one)")
    parser.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for each part (default 180)")
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class DemoPlan:
    settings: Settings
    history_start: date
    env: dict[str, str]
    logs_dir: Path

    @property
    def ui_url(self) -> str:
        return f"http://{self.settings.ui_host}:{self.settings.ui_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"


def plan(args: argparse.Namespace, base_env: Mapping[str, str], today: date) -> DemoPlan:
    """Everything the demo will start with, decided before anything starts (pure: tested directly)."""
    settings = load_settings(dict(base_env))
    settings = replace(
        settings,
        ui_host=args.ui_host or settings.ui_host,
        ui_port=args.ui_port or settings.ui_port,
        sim_port=args.sim_port or settings.sim_port,
        api_port=getattr(args, "api_port", None) or settings.api_port,
    )
    history_start = args.history_start or today - timedelta(days=DEMO_HISTORY_DAYS)
    return DemoPlan(settings, history_start, child_env(settings, base_env, history_start), settings.home / "logs")


def child_env(settings: Settings, base_env: Mapping[str, str], history_start: date) -> dict[str, str]:
    """The children's environment: every exchange URL points at the simulator, paths are absolute, and Slack goes to the
    simulator's sink with a dummy token unless the person set their own. The parent's environment is not changed."""
    sim = settings.sim_url
    ws = sim.replace("http://", "ws://", 1)
    ui_url = f"http://{settings.ui_host}:{settings.ui_port}"
    env = dict(base_env)
    env.update(
        {
            "CRYPTOFLOW_HOME": str(settings.home),
            "DAGSTER_HOME": str(settings.dagster_home),
            "CRYPTOFLOW_UPBIT_REST_URL": sim,
            "CRYPTOFLOW_UPBIT_WS_URL": f"{ws}/websocket/v1",
            "CRYPTOFLOW_BINANCE_REST_URL": sim,
            "CRYPTOFLOW_BINANCE_WS_URL": ws,
            "CRYPTOFLOW_FEAR_GREED_URL": sim,
            "CRYPTOFLOW_SIM_HOST": settings.sim_host,
            "CRYPTOFLOW_SIM_PORT": str(settings.sim_port),
            "CRYPTOFLOW_SIM_HISTORY_START": history_start.isoformat(),
            "CRYPTOFLOW_START_DATE": history_start.isoformat(),
            "CRYPTOFLOW_UI_HOST": settings.ui_host,
            "CRYPTOFLOW_UI_PORT": str(settings.ui_port),
            "CRYPTOFLOW_UI_URL": ui_url,
            "CRYPTOFLOW_API_HOST": settings.api_host,
            "CRYPTOFLOW_API_PORT": str(settings.api_port),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.setdefault("CRYPTOFLOW_SLACK_API_URL", f"{sim}/api/")
    if not env.get("SLACK_BOT_TOKEN"):
        env["SLACK_BOT_TOKEN"] = DEMO_SLACK_TOKEN
    return env


class _Stop(Exception):
    """SIGTERM, turned into an exception so the same cleanup path as Ctrl-C runs."""


# A child is started again 1 s after it exits, each quick exit doubling the wait up to 60 s; up 60 s counts as healthy.
RESTART_POLICY = RestartPolicy(first_delay_s=1.0, max_delay_s=60.0, healthy_after_s=60.0)


def run(args: argparse.Namespace) -> int:
    environ = _without_stale_demo_values(os.environ)
    demo = plan(args, environ, datetime.now(timezone.utc).date())
    settings = demo.settings
    _preflight(settings)

    from cryptoflow_dagster import lake
    from cryptoflow_dagster.instance import ensure_dagster_yaml, prepare_instance

    dagster_yaml = ensure_dagster_yaml(settings)
    prepare_instance(settings)
    with lake.session(load_settings(demo.env)) as con:
        lake.ensure_schema(con)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, _raise_stop)
    children = Children()
    alerts = RestartAlerts(load_settings(demo.env))
    env_file = None
    reporter = None
    try:
        sim = children.start("simulator", services.sim_argv(settings), env=demo.env, log_path=demo.logs_dir / "simulator.log")
        _wait_for_http(f"{settings.sim_url}/v1/market/all", sim, args.ready_timeout)
        sidecar = None
        if not args.no_sidecar and services.module_available("streaming_sensor.sidecar"):
            sidecar = children.start(
                "sidecar", services.cryptoflow_argv("stream"), env=demo.env, log_path=demo.logs_dir / "sidecar.log"
            )
        try:
            web = services.start_dagster(children, demo.env, settings.ui_host, settings.ui_port, demo.logs_dir,
                                         code_server_timeout_s=args.ready_timeout)
        except services.CodeServerError as exc:
            raise CliError(str(exc)) from None
        _wait_for_ui(demo.ui_url, web, args.ready_timeout)
        api_state = "not installed"
        if services.module_available("cryptoflow_serving.app"):
            api = children.start("api", services.cryptoflow_argv("serve"), env=demo.env,
                                 log_path=demo.logs_dir / "api.log")
            _wait_for_http(f"{demo.api_url}/v1/health", api, args.ready_timeout)
            api_state = "running"
        history_id, history_note = (None, "not launched (--no-history)") if getattr(args, "no_history", False) \
            else _launch_history(demo)
        env_file = write_env_file(settings.home, demo_env_values(demo), datetime.now(timezone.utc))
        sidecar_state = "running" if sidecar else "off (--no-sidecar)" if args.no_sidecar else "not installed"
        _print_banner(demo, dagster_yaml, sidecar_state, env_file, api_state, history_note)
        start, end = demo_history.history_days(demo.history_start, datetime.now(timezone.utc).date())
        if history_id is not None:
            reporter = demo_history.HistoryReporter(load_settings(demo.env), demo.ui_url, history_id, start, end)
            reporter.start_reporting()
        return _supervise(children, alerts)
    except (KeyboardInterrupt, _Stop):
        print("\nstopping the demo ...", flush=True)
        return 0
    finally:
        # One orderly stop: a second Ctrl-C or SIGTERM while it runs must not abandon it half-way.
        for sig in previous:
            signal.signal(sig, _already_stopping)
        if reporter is not None:
            reporter.close()
        forced = services.stop_dagster(children, settings.dagster_home,
                                       daemon_timeout_s=settings.alert_watch_s + children.stop_timeout_s)
        children.stop()  # the sidecar and the simulator, last: a run ending in order may still repair a gap
        alerts.close()
        if env_file is not None:
            remove_env_file(settings.home, demo_env_values(demo))
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if forced:
            print(f"runs that did not end in time were marked canceled: {', '.join(forced)}", flush=True)
        print("demo stopped: every process it started has exited", flush=True)


def _launch_history(demo: DemoPlan) -> tuple[str | None, str]:
    """The first-start history backfill (demo_history); a webserver that refuses it is reported, never fatal."""
    from cryptoflow_dagster.backfill import BackfillError

    start, end = demo_history.history_days(demo.history_start, datetime.now(timezone.utc).date())
    try:
        return demo_history.ensure_backfill(load_settings(demo.env), demo.ui_url, start, end)
    except BackfillError as exc:
        log.warning("the demo's history backfill was not launched: %s", exc)
        return None, f"not launched ({exc}); run: cryptoflow backfill --start {start} --end {end}"


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop()


def _already_stopping(signum: int, frame: object) -> None:
    print(f"{signal.Signals(signum).name}: the demo is already stopping, in order", flush=True)


def _preflight(settings: Settings) -> None:
    if not services.module_available("exchange_sim.server"):
        raise CliError("the exchange simulator (exchange_sim) is not installed: the demo needs it")
    for what, host, port, flag in (
        ("Dagster UI", settings.ui_host, settings.ui_port, "--ui-port"),
        ("simulator", settings.sim_host, settings.sim_port, "--sim-port"),
        ("market-data API", settings.api_host, settings.api_port, "--api-port"),
    ):
        if not services.port_is_free(host, port):
            raise CliError(f"port {port} on {host} for the {what} is in use: stop what uses it or pass {flag}")


def _wait_for_http(url: str, child: Child, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise CliError(f"the {child.name} exited with code {child.process.returncode}: see {child.log_path}")
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise CliError(f"the {child.name} did not answer {url} within {timeout_s:.0f}s: see {child.log_path}")


def _wait_for_ui(url: str, web: Child, timeout_s: float) -> None:
    from cryptoflow_dagster.webserver import DagsterUIError, wait_until_loaded

    try:
        wait_until_loaded(url, timeout_s=timeout_s, still_running=lambda: web.process.poll() is None)
    except DagsterUIError as exc:
        raise CliError(f"{exc}: see {web.log_path}") from None


def _print_banner(demo: DemoPlan, dagster_yaml: Path, sidecar_state: str, env_file: Path, api_state: str,
                  history_note: str) -> None:
    s = demo.settings
    api = ([f"  market-data API   {demo.api_url}/v1  (OpenAPI: {demo.api_url}/docs)",
            f"  dashboard         {demo.api_url}/dashboard/"] if api_state == "running" else
           [f"  market-data API   {api_state}"])
    lines = [
        READY_LINE,
        f"  Dagster UI        {demo.ui_url}",
        *api,
        f"  exchange sim      {s.sim_url}  (Upbit, Binance and Fear & Greed APIs)",
        f"  Slack sink        {s.sim_url}/_sim/slack  (alerts land here; CRYPTOFLOW_SLACK_API_URL={demo.env['CRYPTOFLOW_SLACK_API_URL']})",
        f"  streaming sidecar {sidecar_state}",
        f"  history           from {demo.history_start} (daily partitions start there): {history_note}",
        f"  data directory    {s.home}",
        f"  Dagster home      {s.dagster_home}  ({dagster_yaml.name})",
        f"  logs              {demo.logs_dir}",
        f"  settings          {env_file}  (cryptoflow doctor, query, slo, backfill in another shell use them"
        + ("" if s.home == Path("data").resolve() else f"; there set CRYPTOFLOW_HOME={s.home}") + ")",
        f'  query the lake    cryptoflow query "SELECT * FROM silver.trades LIMIT 10"',
        "A part that exits is restarted (1 s, doubling to 60 s) and alerted. Press Ctrl-C to stop everything.",
    ]
    print("\n".join(lines), flush=True)


def _supervise(children: Children, alerts: RestartAlerts, policy: RestartPolicy = RESTART_POLICY) -> int:
    """Until Ctrl-C or SIGTERM: a part that exits on its own is started again with backoff, logged and alerted."""
    # From here a stop signal is noted and acted on between two looks, never in the middle of a restart (which could
    # leave a just-started process unrecorded). Not by blocking the signals: a child inherits a blocked mask.
    noted: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: noted.append(signum))
    while True:
        if noted:
            raise _Stop()
        events = children.supervise(policy)
        for event in events:
            child = event.child
            if isinstance(event, Exited):
                log.warning("%s (pid %d) exited unexpectedly with code %d after %.0fs up: restarting it in %.0fs "
                            "(see %s)", child.name, event.pid, event.returncode, event.uptime_s, event.delay_s,
                            child.log_path)
            elif isinstance(event, Restarted):
                alerts.restarted(event)
        time.sleep(0.5)


# ---- restart alerts ----------------------------------------------------------------------------------------------

SERVICE_RESTARTED = "service_restarted"
# A part that keeps crashing alerts once, then at most once per this many seconds per part, with the count since.
RESTART_ALERT_EVERY_S = 600.0


class RestartAlerts:
    """Restarts as ``service_restarted`` rows of the gold.alerts outbox, which the delivery sensor sends to Slack (the
    simulator's sink in the demo) with its retries and dedupe, like every other alert. Written on a thread: the
    supervisor never waits for the lake writers' turn. A row not written (the lake busy or failing) is retried."""

    def __init__(self, settings: Settings, *, every_s: float = RESTART_ALERT_EVERY_S) -> None:
        self.settings = settings
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._write_loop, name="restart-alerts", daemon=True)
        self._thread.start()

    def restarted(self, event: Restarted, now: datetime | None = None) -> None:
        from cryptoflow_dagster.alerting.model import Alert

        child, now = event.child, now or datetime.now(timezone.utc)
        last = self._last.get(child.name)
        if last is not None and time.monotonic() - last < self.every_s:
            self._suppressed[child.name] = self._suppressed.get(child.name, 0) + 1
            return
        self._last[child.name] = time.monotonic()
        since = self._suppressed.pop(child.name, 0)
        more = f" ({since} more restarts since the last alert)" if since else ""
        self._queue.put(Alert(
            rule=SERVICE_RESTARTED,
            dedupe_key=f"{SERVICE_RESTARTED}:{child.name}:{event.old_pid}:{now.isoformat()}",
            message=f"cryptoflow demo: the {child.name} (pid {event.old_pid}) exited with code {event.returncode} "
                    f"after {event.uptime_s:.0f}s up and was restarted as pid {child.process.pid}{more}.",
            triggered_at=now, value=float(child.restarts),
            details={"title": f"{child.name} restarted", "fields": {
                "Service": child.name, "Exit code": str(event.returncode), "Up for": f"{event.uptime_s:.0f}s",
                "Restarts": str(child.restarts), "Waited": f"{child.backoff_s:g}s", "Log": str(child.log_path)}},
        ))

    def _write_loop(self) -> None:
        from cryptoflow_dagster import lake
        from cryptoflow_dagster.alerting import outbox

        while True:
            alert = self._queue.get()
            if alert is None:
                return
            for attempt in range(1, 6):
                try:
                    with lake.session(self.settings) as con:
                        outbox.record(con, [alert])
                    log.info("alert %s recorded: %s", alert.rule, alert.message)
                    break
                except Exception:  # noqa: BLE001 - logged; tried again, the supervisor goes on either way
                    log.exception("could not record the %s alert (attempt %d/5)", alert.rule, attempt)
                    time.sleep(2.0 * attempt)

    def close(self, timeout_s: float = 15.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)


# ---- $CRYPTOFLOW_HOME/.env -----------------------------------------------------------------------------------------

ENV_FILE_HEADER = "# Written by `cryptoflow demo`"
ENV_BLOCK_BEGIN = "# >>> cryptoflow demo >>>"
ENV_BLOCK_END = "# <<< cryptoflow demo <<<"
# The settings the demo decides for itself, which a command in another shell needs to talk to it. Never a secret:
# not SLACK_BOT_TOKEN (the sink needs none: alerting.slack gives local sinks a placeholder), AWS_* or a database URL.
DEMO_ENV_KEYS = (
    "CRYPTOFLOW_HOME", "DAGSTER_HOME",
    "CRYPTOFLOW_UPBIT_REST_URL", "CRYPTOFLOW_UPBIT_WS_URL", "CRYPTOFLOW_BINANCE_REST_URL", "CRYPTOFLOW_BINANCE_WS_URL",
    "CRYPTOFLOW_FEAR_GREED_URL", "CRYPTOFLOW_SIM_HOST", "CRYPTOFLOW_SIM_PORT", "CRYPTOFLOW_SIM_HISTORY_START",
    "CRYPTOFLOW_START_DATE", "CRYPTOFLOW_UI_HOST", "CRYPTOFLOW_UI_PORT", "CRYPTOFLOW_UI_URL",
    "CRYPTOFLOW_API_HOST", "CRYPTOFLOW_API_PORT",
)


def demo_env_values(demo: DemoPlan) -> dict[str, str]:
    """What goes to ``$CRYPTOFLOW_HOME/.env``: the demo's own choices (and the Slack URL when it chose the sink)."""
    values = {k: demo.env[k] for k in DEMO_ENV_KEYS}
    sink = f"{demo.settings.sim_url}/api/"
    if demo.env.get("CRYPTOFLOW_SLACK_API_URL") == sink:
        values["CRYPTOFLOW_SLACK_API_URL"] = sink
    return values


def _quote(value: str) -> str:
    # single quotes: python-dotenv expands ${...} in double-quoted and bare values, never in single-quoted ones
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _block(values: Mapping[str, str]) -> list[str]:
    return [f"{k}={_quote(v)}" for k, v in values.items()]


def _split_env_file(text: str) -> tuple[bool, list[str], list[str]]:
    """(written wholly by the demo, the person's lines, the demo block's lines) of a home .env file."""
    lines = text.splitlines()
    if lines and lines[0].startswith(ENV_FILE_HEADER):
        return True, [], [ln for ln in lines if ln and not ln.startswith("#")]
    own, block, inside = [], [], False
    for line in lines:
        if line.strip() == ENV_BLOCK_BEGIN:
            inside = True
        elif line.strip() == ENV_BLOCK_END and inside:
            inside = False
        elif inside:
            if line and not line.startswith("#"):
                block.append(line)
        else:
            own.append(line)
    while own and not own[-1].strip():
        own.pop()
    return False, own, block


def write_env_file(home: Path, values: Mapping[str, str], now: datetime) -> Path:
    """Write the demo's settings to ``home/.env``, atomically (a temporary file renamed over it).

    The rule for a file that is there already: one the demo wrote (its first line says so) is replaced; one the person
    wrote is kept line for line, and the demo's settings go into a marked block at its end (replacing an earlier
    block), where they win over the same names above for as long as the demo runs. The block, or the demo's own file,
    is removed when the demo stops. A symlinked .env is left alone.
    """
    path = home / ENV_FILE
    stamp = f"{now:%Y-%m-%d %H:%M:%S} UTC (pid {os.getpid()})"
    if path.is_symlink():
        log.warning("%s is a symlink: the demo does not write through it; set its settings in your shell", path)
        return path
    text = path.read_text() if path.exists() else ""
    ours, own, _ = _split_env_file(text)
    if ours or not text.strip():
        lines = [f"{ENV_FILE_HEADER} at {stamp}: the settings of the demo running on this",
                 "# CRYPTOFLOW_HOME, so that commands in other shells (doctor, query, slo, backfill) talk to it.",
                 "# Rewritten at each demo start and deleted when it stops. A .env you write here yourself is kept:",
                 "# the demo then only adds a marked block at its end.", *_block(values)]
    else:
        lines = [*own, "", ENV_BLOCK_BEGIN,
                 f"# Written by `cryptoflow demo` at {stamp}: the running demo's settings. They win over the same",
                 "# names above while it runs; the demo removes this block when it stops. Lines above are yours.",
                 *_block(values), ENV_BLOCK_END]
    _replace_atomically(path, "\n".join(lines) + "\n")
    log.info("wrote the demo's settings to %s", path)
    return path


def remove_env_file(home: Path, values: Mapping[str, str]) -> None:
    """Undo :func:`write_env_file` if the file still holds what this demo wrote (another demo may have rewritten it)."""
    path = home / ENV_FILE
    if path.is_symlink() or not path.exists():
        return
    ours, own, block = _split_env_file(path.read_text())
    if block != _block(values):
        return
    if ours:
        path.unlink()
    else:
        _replace_atomically(path, "\n".join(own) + "\n" if own else "")


def _replace_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.cryptoflow-demo.{os.getpid()}.tmp")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def stale_demo_values(home: Path) -> dict[str, str]:
    """The settings a demo that did not stop in order left in ``home/.env`` (empty when there are none)."""
    from dotenv import dotenv_values

    path = home / ENV_FILE
    if path.is_symlink() or not path.is_file():
        return {}
    _, _, block = _split_env_file(path.read_text())
    import io

    return {k: v for k, v in dotenv_values(stream=io.StringIO("\n".join(block))).items() if v is not None}


def _without_stale_demo_values(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment to plan from, without what the CLI read from a previous demo's leftover settings: a demo
    killed with SIGKILL leaves them, and this demo must choose afresh (its ports, its sink), not inherit them.
    A variable the process was started with stays, even when it has the same value."""
    env = dict(environ)
    try:
        home = load_settings(env).home
    except Exception:  # noqa: BLE001 - a bad setting is reported by plan()
        return env
    stale = stale_demo_values(home)
    if not stale:
        return env
    started_with = _exec_environment()
    for key, value in stale.items():
        if key != "CRYPTOFLOW_HOME" and env.get(key) == value and key not in started_with:
            del env[key]
    log.warning("%s/%s held the settings of a demo that did not stop in order: replaced", home, ENV_FILE)
    return env


def _exec_environment() -> set[str]:
    """The names in this process's environment as it was started (Linux), before the CLI read any .env file."""
    try:
        raw = Path("/proc/self/environ").read_bytes()
    except OSError:
        return set()
    return {item.split(b"=", 1)[0].decode(errors="replace") for item in raw.split(b"\0") if b"=" in item}
