"""How each long-running part of the platform is started: one command line per service, shared by ``cryptoflow demo``
and the tests (so the tests start exactly what a person starts)."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import yaml

from cryptoflow_dagster.cli.children import Child, Children
from cryptoflow_core.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE_YAML = REPO_ROOT / "workspace.yaml"
# The code server is only for the webserver and the daemon on this host: never bound beyond loopback.
CODE_SERVER_HOST = "127.0.0.1"


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


def webserver_argv(host: str, port: int, workspace: Path = WORKSPACE_YAML) -> list[str]:
    return [script("dagster-webserver"), "-w", str(workspace), "-h", host, "-p", str(port)]


def daemon_argv(workspace: Path = WORKSPACE_YAML) -> list[str]:
    return [script("dagster-daemon"), "run", "-w", str(workspace)]


def code_location() -> dict[str, str]:
    """The code location workspace.yaml declares (module_name, working_directory, location_name): said once, there."""
    (entry,) = yaml.safe_load(WORKSPACE_YAML.read_text())["load_from"]
    return entry["python_module"]


def code_server_argv(port: int) -> list[str]:
    where = code_location()
    return [script("dagster"), "code-server", "start", "-m", where["module_name"],
            "-d", str(REPO_ROOT / where["working_directory"]), "--location-name", where["location_name"],
            "-h", CODE_SERVER_HOST, "-p", str(port)]


def code_server_workspace(dagster_home: Path, port: int) -> Path:
    """A workspace file in the instance folder pointing the webserver and the daemon at the standing code server."""
    path = dagster_home / "code-server-workspace.yaml"
    entry = {"host": CODE_SERVER_HOST, "port": port, "location_name": code_location()["location_name"]}
    path.write_text(yaml.safe_dump({"load_from": [{"grpc_server": entry}]}, sort_keys=False))
    return path


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


def start_dagster(
    children: Children, env: Mapping[str, str], host: str, port: int, logs_dir: Path, *,
    code_server_timeout_s: float = 300,
) -> Child:
    """Start a code server, the Dagster webserver and the daemon on the instance in ``env['DAGSTER_HOME']``; return the
    webserver child.

    Webserver + daemon rather than ``dagster dev``: the same processes a deployment runs, and no dev-mode side effects
    (dagster-dbt's prepare_if_dev re-parsing dbt in every run). The code location runs in one standing code server
    that both use (ADR 0012): given the module itself, the daemon would restart its own code server every 60 s, and
    sensors stopped for the seconds each restart takes. Call instance.prepare_instance first.
    """
    code_port = free_port(CODE_SERVER_HOST)
    code = children.start("dagster-code-server", code_server_argv(code_port), env=env, cwd=REPO_ROOT,
                          log_path=logs_dir / "dagster-code-server.log")
    workspace = code_server_workspace(Path(env["DAGSTER_HOME"]), code_port)
    wait_for_code_server(code, code_port, code_server_timeout_s)
    web = children.start("dagster-webserver", webserver_argv(host, port, workspace), env=env, cwd=REPO_ROOT,
                         log_path=logs_dir / "dagster-webserver.log")
    children.start("dagster-daemon", daemon_argv(workspace), env=env, cwd=REPO_ROOT,
                   log_path=logs_dir / "dagster-daemon.log")
    return web


class CodeServerError(RuntimeError):
    """The code server exited or did not answer in time; the message names its log."""


def wait_for_code_server(child: Child, port: int, timeout_s: float) -> None:
    """Until the code server answers a ping: it serves only once the code location has been imported (or has failed
    to, which the webserver then shows), so the webserver and the daemon find it loaded when they start."""
    from dagster._grpc.client import DagsterGrpcClient  # on use: the CLI's other commands do not need gRPC

    client = DagsterGrpcClient(port=port, host=CODE_SERVER_HOST)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise CodeServerError(
                f"the Dagster code server exited with code {child.process.returncode}: see {child.log_path}")
        try:
            client.ping("")
            return
        except Exception:  # DagsterUserCodeUnreachableError while it imports the code location
            time.sleep(0.2)
    raise CodeServerError(f"the Dagster code server did not answer within {timeout_s:.0f}s: see {child.log_path}")
