"""``cryptoflow demo`` (``make demo``): the whole platform offline on this machine.

Starts the exchange simulator, the sidecar (when this installation has it), the Dagster webserver and daemon, waits until
the code location is LOADED, prints where everything is, and stops every child on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from cryptoflow_dagster.cli import services
from cryptoflow_dagster.cli.children import Child, Children
from cryptoflow_dagster.cli.errors import CliError
from cryptoflow_core.settings import Settings, load_settings

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
        "absent. Ctrl-C stops everything.",
    )
    parser.add_argument("--ui-host", help="address of the Dagster UI (default CRYPTOFLOW_UI_HOST, 127.0.0.1)")
    parser.add_argument("--ui-port", type=int, help="port of the Dagster UI (default CRYPTOFLOW_UI_PORT, 3000)")
    parser.add_argument("--sim-port", type=int, help="port of the simulator (default CRYPTOFLOW_SIM_PORT, 8765)")
    parser.add_argument(
        "--history-start",
        type=date.fromisoformat,
        help="first day of simulated history and of the daily partitions, YYYY-MM-DD "
        f"(default: {DEMO_HISTORY_DAYS} days ago; 2025-09-01 replays the recorded real Upbit minutes)",
    )
    parser.add_argument("--no-sidecar", action="store_true", help="do not start the streaming sidecar")
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


def plan(args: argparse.Namespace, base_env: Mapping[str, str], today: date) -> DemoPlan:
    """Everything the demo will start with, decided before anything starts (pure: tested directly)."""
    settings = load_settings(dict(base_env))
    settings = replace(
        settings,
        ui_host=args.ui_host or settings.ui_host,
        ui_port=args.ui_port or settings.ui_port,
        sim_port=args.sim_port or settings.sim_port,
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
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.setdefault("CRYPTOFLOW_SLACK_API_URL", f"{sim}/api/")
    if not env.get("SLACK_BOT_TOKEN"):
        env["SLACK_BOT_TOKEN"] = DEMO_SLACK_TOKEN
    return env


class _Stop(Exception):
    """SIGTERM, turned into an exception so the same cleanup path as Ctrl-C runs."""


def run(args: argparse.Namespace) -> int:
    demo = plan(args, os.environ, datetime.now(timezone.utc).date())
    settings = demo.settings
    _preflight(settings)

    from cryptoflow_dagster import lake
    from cryptoflow_dagster.instance import ensure_dagster_yaml, prepare_instance

    dagster_yaml = ensure_dagster_yaml(settings)
    prepare_instance(settings)
    with lake.session(load_settings(demo.env)) as con:
        lake.ensure_schema(con)

    previous = signal.signal(signal.SIGTERM, _raise_stop)
    children = Children()
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
        sidecar_state = "running" if sidecar else "off (--no-sidecar)" if args.no_sidecar else "not installed"
        _print_banner(demo, dagster_yaml, sidecar_state)
        return _supervise(children)
    except (KeyboardInterrupt, _Stop):
        print("\nstopping the demo ...", flush=True)
        return 0
    finally:
        children.stop()
        signal.signal(signal.SIGTERM, previous)
        print("demo stopped: every process it started has exited", flush=True)


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop()


def _preflight(settings: Settings) -> None:
    if not services.module_available("exchange_sim.server"):
        raise CliError("the exchange simulator (exchange_sim) is not installed: the demo needs it")
    for what, host, port, flag in (
        ("Dagster UI", settings.ui_host, settings.ui_port, "--ui-port"),
        ("simulator", settings.sim_host, settings.sim_port, "--sim-port"),
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


def _print_banner(demo: DemoPlan, dagster_yaml: Path, sidecar_state: str) -> None:
    s = demo.settings
    lines = [
        READY_LINE,
        f"  Dagster UI        {demo.ui_url}",
        f"  exchange sim      {s.sim_url}  (Upbit, Binance and Fear & Greed APIs)",
        f"  Slack sink        {s.sim_url}/_sim/slack  (alerts land here; CRYPTOFLOW_SLACK_API_URL={demo.env['CRYPTOFLOW_SLACK_API_URL']})",
        f"  streaming sidecar {sidecar_state}",
        f"  history           from {demo.history_start} (daily partitions start there)",
        f"  data directory    {s.home}",
        f"  Dagster home      {s.dagster_home}  ({dagster_yaml.name})",
        f"  logs              {demo.logs_dir}",
        f'  query the lake    cryptoflow query "SELECT * FROM silver.trades LIMIT 10"',
        "Press Ctrl-C to stop everything.",
    ]
    print("\n".join(lines), flush=True)


def _supervise(children: Children) -> int:
    """Wait for Ctrl-C; if a part dies on its own the demo is broken, so say which and stop the rest."""
    while True:
        exited = children.exited()
        if exited:
            for child in exited:
                print(
                    f"{child.name} exited unexpectedly (code {child.process.returncode}): see {child.log_path}",
                    file=sys.stderr,
                    flush=True,
                )
            return 1
        time.sleep(0.5)
