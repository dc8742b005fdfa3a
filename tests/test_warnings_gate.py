"""The warnings gate (tests/warnings_gate.py) fails a passing run on a warning nobody accepted, and only then."""

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

EMITS = """
import warnings

def test_emits():
    warnings.warn("x", UserWarning)

def test_emits_an_accepted_one():
    warnings.warn("an accepted warning", FutureWarning)
"""


def run_pytest(tmp_path: Path, *args: str, ini: str = "", env: dict[str, str] | None = None, source: str = EMITS):
    """pytest in a subprocess with only the gate loaded: rootdir, ini and conftest lookup stay inside ``tmp_path``."""
    (tmp_path / "test_emits.py").write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\n" + ini)
    # Only the gate: no installed plugins, no -W or addopts or tracing of the outer run.
    base = {k: v for k, v in os.environ.items()
            if k not in ("CI", "PYTHONWARNINGS", "PYTEST_ADDOPTS", "PYTHONTRACEMALLOC", "PYTHONDEVMODE")}
    base["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    base["PYTHONPATH"] = os.pathsep.join([str(TESTS), base.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "warnings_gate", "-p", "no:cacheprovider", "-c",
         str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), *args, str(tmp_path / "test_emits.py")],
        cwd=tmp_path, env={**base, **(env or {})}, capture_output=True, text=True, timeout=300,
    )


def test_an_unexpected_warning_fails_a_passing_run_and_is_named(tmp_path):
    result = run_pytest(tmp_path, ini="filterwarnings =\n    ignore:an accepted warning:FutureWarning\n")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert "warnings gate: 1 unexpected warning(s)" in result.stdout
    assert "UserWarning: x" in result.stdout and "test_emits.py:5" in result.stdout
    assert "test_emits.py::test_emits" in result.stdout
    assert "fix it, or filter it by name with its reason in pyproject.toml" in result.stdout
    assert "an accepted warning" not in result.stdout


def test_warnings_filtered_by_name_pass(tmp_path):
    ini = "filterwarnings =\n    ignore:an accepted warning:FutureWarning\n    ignore:x$:UserWarning\n"
    result = run_pytest(tmp_path, ini=ini)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warnings gate" not in result.stdout


def test_a_test_marked_with_its_filter_passes(tmp_path):
    marked = "import pytest, warnings\n\n" \
             "@pytest.mark.filterwarnings('ignore:x$:UserWarning')\n" \
             "def test_marked():\n    warnings.warn('x', UserWarning)\n\n" \
             "def test_unmarked():\n    warnings.warn('x', UserWarning)\n"
    result = run_pytest(tmp_path, "-k", "test_marked", source=marked)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run_pytest(tmp_path, source=marked)  # the same warning from a test without the mark
    assert result.returncode == 1 and "test_emits.py::test_unmarked" in result.stdout, result.stdout


def test_no_warnings_plugin_switches_the_gate_off_visibly_and_is_refused_under_ci(tmp_path):
    local = run_pytest(tmp_path, "-p", "no:warnings")
    assert local.returncode == 0, local.stdout + local.stderr
    assert "warnings gate OFF" in local.stdout and "-p no:warnings" in local.stdout
    ci = run_pytest(tmp_path, "-p", "no:warnings", env={"CI": "true"})
    assert ci.returncode != 0 and "Refused under CI" in ci.stdout, ci.stdout + ci.stderr
