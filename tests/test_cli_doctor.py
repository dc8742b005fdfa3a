"""`cryptoflow doctor` through the real console script: exit 0 with every check OK against the simulator, exit 1 naming
each failure when the exchanges are unreachable or the Slack token is missing, and never a secret's value. Beside the
demo (its settings in $CRYPTOFLOW_HOME/.env) it checks the simulator and the Slack sink: tests/test_cli_demo.py."""

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
    assert checks == {name: "OK" for name in ("settings", "extensions", "lake", "upbit", "binance", "fear_greed", "slack")}
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
        "upbit": "FAIL", "binance": "FAIL", "fear_greed": "FAIL", "slack": "FAIL",
    }
    assert "ConnectError" in output and "SLACK_BOT_TOKEN is not set" in output


def test_a_slack_sink_needs_no_token_but_must_answer(cryptoflow_home, sim_session):
    """The demo's Slack is the simulator's sink: no token is needed (the platform gives local sinks a placeholder), so
    doctor asks the sink itself, and never with the person's token."""
    env = {**os.environ, **sim_session.env()}
    env.pop("SLACK_BOT_TOKEN", None)
    code, checks, output = doctor(env)
    assert code == 0, output
    assert checks["slack"] == "OK"
    assert f"sink at {sim_session.slack_api_url} answers auth.test (no token needed)" in output

    closed = f"http://127.0.0.1:{free_port()}/api/"
    code, checks, output = doctor({**env, "CRYPTOFLOW_SLACK_API_URL": closed, "SLACK_BOT_TOKEN": TOKEN})
    assert code == 1 and checks["slack"] == "FAIL", output
    assert "ConnectError" in output and TOKEN not in output


def test_doctor_reports_a_bad_setting_by_name(cryptoflow_home):
    code, checks, output = doctor({**os.environ, "CRYPTOFLOW_UPBIT_MARKETS": "KRW-BTC,btc; DROP TABLE x"})
    assert code == 1
    assert checks == {"settings": "FAIL"}
    assert "invalid Upbit market code" in output
