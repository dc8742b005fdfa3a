"""How each long-running part of the platform is started: one command line per service, shared by ``cryptoflow demo``
and the tests (so the tests start exactly what a person starts)."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import yaml

from cryptoflow_dagster.cli.children import Child, Children
from cryptoflow_core.settings import Settings

log = logging.getLogger(__name__)

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


# How long a stop waits for the runs in flight to end once asked (a streaming run ends after its chunk in flight).
RUN_STOP_TIMEOUT_S = 60.0


def stop_dagster(children: Children, dagster_home: Path, *, daemon_timeout_s: float = 75.0,
                 run_timeout_s: float = RUN_STOP_TIMEOUT_S) -> list[str]:
    """Stop the Dagster processes ``start_dagster`` started so that no run ends in FAILURE or stays STARTED.

    The daemon first: no sensor tick, schedule or queued run starts anything after it. It exits once the sensor ticks
    in flight have returned, and the market alert sensor's tick watches the landing folder for up to
    CRYPTOFLOW_ALERT_WATCH_S (at most 45 s) while the code server runs: hence its own, longer, ``daemon_timeout_s``.
    (Stopping the code server first would end that tick at once, but would refuse the launch of a run the daemon's
    queue is starting, which Dagster records as a FAILURE.) Then every run in flight is
    asked to end through the instance (:func:`end_runs`), and only once none is left do the code server (whose group
    holds the run workers) and the webserver get SIGTERM. Signalling the code server's group with runs in it would
    hit each run wherever it is: one in its start-up, or in a step that has no orderly way out, ends in FAILURE (and
    pages), and one stuck in an interrupted DuckDB query outlives the stop timeout and is killed, left STARTED.
    Returns what had to be forced (see :func:`end_runs`).
    """
    children.stop_some(["dagster-daemon"], timeout_s=daemon_timeout_s)
    forced: list[str] = []
    if (dagster_home / "dagster.yaml").exists():
        try:
            forced = end_runs(dagster_home, timeout_s=run_timeout_s)
        except Exception:  # noqa: BLE001 - the processes must still be stopped
            log.exception("could not end the runs in flight through the Dagster instance")
    # The code server finishes the RPC calls in flight (a sensor evaluation) before it exits, for up to 60 s of its
    # own: it is given that, not the children's default 20 s. (The stops the suite saw killed were another bug: the
    # stop signal ignored by inheritance, fixed in children._spawn.)
    children.stop_some(["dagster-webserver", "dagster-code-server"], timeout_s=CODE_SERVER_STOP_S)
    return forced


_IN_FLIGHT = ("STARTING", "STARTED", "CANCELING")
# Dagster's code server waits up to 60 s for its RPC calls in flight when asked to stop; a few seconds beyond that.
CODE_SERVER_STOP_S = 65.0


def end_runs(dagster_home: Path, *, timeout_s: float = RUN_STOP_TIMEOUT_S, poll_s: float = 0.25) -> list[str]:
    """End every run in flight on the instance in ``dagster_home`` as Dagster ends a run terminated on purpose
    (CANCELED), and wait for them. Call it with nothing left to start runs (the daemon stopped).

    - STARTED: terminated through the run launcher (CANCELING, then the code server interrupts the run, which ends
      CANCELED whatever step it was in; the streaming loop ends after its lake transaction in flight).
    - STARTING (its process may not run yet): marked CANCELED directly. A run process that starts after that does not
      execute it; one that had already started sets it STARTED and is terminated on the next look. Setting CANCELING
      here instead would make that process fail the run (Dagster fails a run that starts in any other state).
    - CANCELING: someone asked already; waited for.

    QUEUED runs stay queued for the next start. A run still in flight after ``timeout_s`` is marked CANCELED with the
    reason and its process killed (never left STARTED); the ids of those are returned.
    """
    import dagster as dg

    in_flight = [dg.DagsterRunStatus(s) for s in _IN_FLIGHT]
    forced: list[str] = []
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        terminated: set[str] = set()
        deadline = time.monotonic() + timeout_s
        while True:
            runs = [r.dagster_run for r in instance.get_run_records(dg.RunsFilter(statuses=in_flight))]
            if not runs:
                return forced
            if time.monotonic() >= deadline:
                break
            for run in runs:
                if run.status == dg.DagsterRunStatus.STARTING:
                    log.info("run %s (%s) had not started: marking it canceled", run.run_id, run.job_name)
                    instance.report_run_canceled(run, message="The platform stopped before this run started.")
                elif run.status == dg.DagsterRunStatus.STARTED and run.run_id not in terminated:
                    terminated.add(run.run_id)
                    log.info("ending run %s (%s): the platform is stopping", run.run_id, run.job_name)
                    _terminate(instance, run)
            time.sleep(poll_s)
        for run in runs:
            pid = run_worker_pid(instance, run.run_id)
            log.warning("run %s (%s) did not end within %.0fs of the stop: marking it canceled and killing its "
                        "process %s", run.run_id, run.job_name, timeout_s, pid)
            instance.report_run_canceled(
                run, message=f"The platform stopped and the run did not end within {timeout_s:.0f}s: marked canceled, "
                             f"its process ({pid}) killed.")
            if pid is not None:
                _kill(pid)
            forced.append(run.run_id)
    return forced


def _terminate(instance, run) -> None:
    """The run launcher's termination (what the UI's Terminate does); when the code server cannot be reached, the same
    by hand: CANCELING, then SIGINT to the run's process (which is what the code server sends it)."""
    import dagster as dg

    try:
        if instance.run_launcher.terminate(run.run_id):
            return
    except Exception as exc:  # noqa: BLE001 - unreachable code server: the fallback below
        log.warning("the code server could not terminate run %s (%s): signalling its process", run.run_id, exc)
    current = instance.get_run_by_id(run.run_id)
    if current is None or current.is_finished:
        return
    pid = run_worker_pid(instance, run.run_id)
    if pid is None:  # its process is gone (a platform killed earlier): nothing will ever end it but this
        log.warning("run %s (%s) has no process left: marking it canceled", run.run_id, run.job_name)
        instance.report_run_canceled(current, message="The platform stopped; this run's process was already gone.")
        return
    if current.status != dg.DagsterRunStatus.CANCELING:
        instance.report_run_canceling(current)
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        pass


def run_worker_pid(instance, run_id: str) -> int | None:
    """The pid of the process executing a run (its 'Started process for run (pid: N)' event), if it is alive and is
    a Python process (not a later process that reused the number)."""
    import dagster as dg

    for record in reversed(instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)):
        data = record.dagster_event.engine_event_data if record.dagster_event else None
        pid_value = data.metadata.get("pid") if data is not None else None
        if pid_value is None:
            continue
        try:
            pid = int(pid_value.value)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (ValueError, OSError):
            return None
        return pid if b"python" in cmdline else None
    return None


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
