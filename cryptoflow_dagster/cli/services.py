"""How each long-running part of the platform is started: one command line per service, shared by ``cryptoflow demo``
and the tests (so the tests start exactly what a person starts)."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from cryptoflow_dagster.cli.children import Child, Children
from cryptoflow_dagster.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE_YAML = REPO_ROOT / "workspace.yaml"


def script(name: str) -> str:
    """A console script of this environment (beside the running interpreter), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not installed in this environment (make install)")
    return found


def cryptoflow_argv(*args: str) -> list[str]:
    # Through the interpreter rather than the `cryptoflow` script: works the same from a checkout without an install.
    return [sys.executable, "-m", "cryptoflow_dagster.cli", *args]


def sim_argv(settings: Settings) -> list[str]:
    return cryptoflow_argv("sim", "--host", settings.sim_host, "--port", str(settings.sim_port))


def webserver_argv(host: str, port: int) -> list[str]:
    return [script("dagster-webserver"), "-w", str(WORKSPACE_YAML), "-h", host, "-p", str(port)]


def daemon_argv() -> list[str]:
    return [script("dagster-daemon"), "run", "-w", str(WORKSPACE_YAML)]


def dagster_dev_argv(host: str, port: int) -> list[str]:
    return [script("dagster"), "dev", "-w", str(WORKSPACE_YAML), "-h", host, "-p", str(port)]


def module_available(name: str) -> bool:
    """True when ``name`` can be imported; a missing parent package counts as missing, not as an error."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        # as the servers themselves bind: a port in TIME_WAIT from a previous run is free for them
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def start_dagster(children: Children, env: Mapping[str, str], host: str, port: int, logs_dir: Path) -> Child:
    """Start the Dagster webserver and daemon on the instance in ``env['DAGSTER_HOME']``; return the webserver child.

    Webserver + daemon rather than ``dagster dev``: the same two processes a deployment runs, and no dev-mode
    side effects (dagster-dbt's prepare_if_dev re-parsing dbt in every run). Call instance.prepare_instance first.
    """
    web = children.start(
        "dagster-webserver", webserver_argv(host, port), env=env, cwd=REPO_ROOT, log_path=logs_dir / "dagster-webserver.log"
    )
    children.start("dagster-daemon", daemon_argv(), env=env, cwd=REPO_ROOT, log_path=logs_dir / "dagster-daemon.log")
    return web
