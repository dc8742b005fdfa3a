"""The console script's surface: every subcommand has help, delegated commands pass their arguments through, and a part
of the platform that is not installed is a one-line error, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cryptoflow_dagster.cli.errors import CliError, load_entry_point

CRYPTOFLOW = str(Path(sys.executable).parent / "cryptoflow")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CRYPTOFLOW, *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for command in ("demo", "sim", "stream", "query", "doctor", "backfill", "slo"):
        assert f"\n    {command} " in result.stdout


def test_delegated_commands_pass_their_arguments_through():
    # `sim --help` must reach the simulator's own parser, not be swallowed by ours
    result = run("sim", "--help")
    assert result.returncode == 0, result.stderr
    assert "--history-start" in result.stdout and "--seed" in result.stdout
    assert run("query", "SELECT 1", "--no-such-flag").returncode == 2  # our own commands still reject unknown flags


def test_a_missing_part_is_a_clear_error_but_a_broken_one_keeps_its_traceback(tmp_path, monkeypatch):
    with pytest.raises(CliError, match="the SLO report is not available in this installation: module cryptoflow_dagster.no_such"):
        load_entry_point("cryptoflow_dagster.no_such", what="the SLO report")
    (tmp_path / "cf_broken_part.py").write_text("import cf_dependency_that_is_missing\ndef main(argv): return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="cf_dependency_that_is_missing"):
        load_entry_point("cf_broken_part", what="a part with a bug")
