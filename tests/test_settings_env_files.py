"""Every command reads ``.env`` (the working directory's, then CRYPTOFLOW_HOME's); the process environment wins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cryptoflow_core.settings import load_env_files, load_settings


def test_home_env_file_overrides_project_file_and_process_environment_wins(tmp_path, monkeypatch):
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    home.mkdir()
    (project / ".env").write_text(
        f"CRYPTOFLOW_HOME={home}\nCRYPTOFLOW_SIM_PORT=9001\nCRYPTOFLOW_UI_PORT=3100\nCRYPTOFLOW_SIM_SEED=7\n"
    )
    (home / ".env").write_text("# written by cryptoflow demo\nCRYPTOFLOW_SIM_PORT=9002\nCRYPTOFLOW_SLACK_CHANNEL=#demo\n")
    monkeypatch.chdir(project)
    environ = {"CRYPTOFLOW_SIM_SEED": "99"}
    added = load_env_files(environ)
    assert environ == {
        "CRYPTOFLOW_HOME": str(home),
        "CRYPTOFLOW_SIM_PORT": "9002",  # the home's file is read after the project's
        "CRYPTOFLOW_UI_PORT": "3100",
        "CRYPTOFLOW_SLACK_CHANNEL": "#demo",
        "CRYPTOFLOW_SIM_SEED": "99",  # the process environment wins
    }
    assert "CRYPTOFLOW_SIM_SEED" not in added
    settings = load_settings(environ)
    assert (settings.home, settings.sim_port, settings.ui_port, settings.sim_seed) == (home, 9002, 3100, 99)


def test_no_env_files_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    environ = {"CRYPTOFLOW_HOME": str(tmp_path / "nowhere")}
    assert load_env_files(environ) == {}
    assert environ == {"CRYPTOFLOW_HOME": str(tmp_path / "nowhere")}


def test_the_cli_reads_the_env_file_of_the_working_directory(tmp_path):
    """The console script itself (a fresh process) picks up ./.env: a bad value there is reported by name."""
    (tmp_path / ".env").write_text(f"CRYPTOFLOW_HOME={tmp_path / 'home'}\nCRYPTOFLOW_UPBIT_MARKETS=KRW-BTC;DROP\n")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("CRYPTOFLOW_")}
    out = subprocess.run(
        [str(Path(sys.executable).with_name("cryptoflow")), "doctor"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode != 0
    assert "KRW-BTC;DROP" in out.stdout + out.stderr
