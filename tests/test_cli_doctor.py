"""`cryptoflow doctor` through the real console script: exit 0 with every check OK against the simulator, exit 1 naming
each failure when the exchanges are unreachable or the Slack token is missing, and never a secret's value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptoflow_dagster.cli.services import free_port

CRYPTOFLOW = str(Path(sys.executable).parent / "cryptoflow")
TOKEN = "xoxb-doctor-test-secret-0123456789"


def doctor(env: dict[str, str]) -> tuple[int, dict[str, str], str]:
    result = subprocess.run([CRYPTOFLOW, "doctor"], capture_output=True, text=True, timeout=120, env=env)
    checks = {}
    for line in result.stdout.splitlines():
        if line.startswith(("OK ", "FAIL ")):
            status, rest = line.split(None, 1)
            checks[rest.split(":", 1)[0]] = status
    return result.returncode, checks, result.stdout + result.stderr


def test_doctor_passes_against_the_simulator(cryptoflow_home, sim_session):
    code, checks, output = doctor({**os.environ, **sim_session.env(), "SLACK_BOT_TOKEN": TOKEN})
    assert code == 0, output
    assert checks == {name: "OK" for name in ("settings", "extensions", "lake", "upbit", "binance", "fear_greed", "slack_token")}
    assert TOKEN not in output and "SLACK_BOT_TOKEN is set" in output


def test_doctor_fails_and_says_why_when_the_exchanges_are_unreachable(cryptoflow_home):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {
        **os.environ,
        "CRYPTOFLOW_UPBIT_REST_URL": closed,
        "CRYPTOFLOW_BINANCE_REST_URL": closed,
        "CRYPTOFLOW_FEAR_GREED_URL": closed,
    }
    env.pop("SLACK_BOT_TOKEN", None)
    code, checks, output = doctor(env)
    assert code == 1
    assert checks == {
        "settings": "OK", "extensions": "OK", "lake": "OK",
        "upbit": "FAIL", "binance": "FAIL", "fear_greed": "FAIL", "slack_token": "FAIL",
    }
    assert "ConnectError" in output and "SLACK_BOT_TOKEN is not set" in output


def test_doctor_reports_a_bad_setting_by_name(cryptoflow_home):
    code, checks, output = doctor({**os.environ, "CRYPTOFLOW_UPBIT_MARKETS": "KRW-BTC,btc; DROP TABLE x"})
    assert code == 1
    assert checks == {"settings": "FAIL"}
    assert "invalid Upbit market code" in output
