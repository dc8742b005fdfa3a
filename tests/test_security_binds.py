"""Every server the platform starts binds 127.0.0.1 unless told otherwise: from settings, from the demo's command lines
and, for a simulator started with no host given, from the kernel's own table of listening sockets."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import httpx

from cryptoflow_dagster.cli import demo, services
from cryptoflow_core.settings import load_settings
from exchange_sim.config import parse_args as sim_args
from exchange_sim.testing import free_port

LOOPBACK = "127.0.0.1"


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOFLOW_")}


def test_settings_default_every_bind_address_to_loopback():
    settings = load_settings({})
    assert settings.ui_host == LOOPBACK and settings.sim_host == LOOPBACK
    assert settings.ui_url.startswith(f"http://{LOOPBACK}:") and settings.sim_url.startswith(f"http://{LOOPBACK}:")
    assert sim_args([], env={}).host == LOOPBACK


def test_demo_starts_the_simulator_and_the_ui_on_loopback(tmp_path):
    args = argparse.Namespace(ui_host=None, ui_port=None, sim_port=None, history_start=None)
    plan = demo.plan(args, {"CRYPTOFLOW_HOME": str(tmp_path)}, date(2026, 7, 30))
    sim = services.sim_argv(plan.settings)
    web = services.webserver_argv(plan.settings.ui_host, plan.settings.ui_port)
    assert sim[sim.index("--host") + 1] == LOOPBACK
    assert web[web.index("-h") + 1] == LOOPBACK
    code = services.code_server_argv(free_port())
    assert code[code.index("-h") + 1] == LOOPBACK  # the code server runs code on request: never beyond this host
    assert plan.env["CRYPTOFLOW_SIM_HOST"] == LOOPBACK and plan.ui_url.startswith(f"http://{LOOPBACK}:")
    # told otherwise, it follows
    told = demo.plan(argparse.Namespace(ui_host="10.0.0.5", ui_port=None, sim_port=None, history_start=None),
                     {"CRYPTOFLOW_HOME": str(tmp_path)}, date(2026, 7, 30))
    assert told.settings.ui_host == "10.0.0.5"


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket of ``pid`` in LISTEN state, from /proc (IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state != "0A" or inode not in inodes:
                continue
            addr_hex, port_hex = local.split(":")
            if width == 8:
                addr = ".".join(str(int(addr_hex[i:i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                addr = "::" if set(addr_hex) == {"0"} else addr_hex
            found.add((addr, int(port_hex, 16)))
    return found


def test_a_simulator_started_without_a_host_listens_on_loopback_only(tmp_path):
    port = free_port()
    env = {**clean_env(), "CRYPTOFLOW_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "exchange_sim", "--port", str(port), "--history-days", "2",
                             "--no-real-data"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://{LOOPBACK}:{port}/v1/market/all", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "the simulator did not start"
                time.sleep(0.2)
        assert listening_addresses(proc.pid) == {(LOOPBACK, port)}
    finally:
        proc.terminate()
        proc.wait(15)


def test_the_socket_table_reader_sees_a_wildcard_bind():
    import socket

    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        assert ("0.0.0.0", s.getsockname()[1]) in listening_addresses(os.getpid())
