"""Packages follow processes, and their imports point one way.

    cryptoflow_core      <- streaming_sensor (the sidecar process)
                         <- exchange_sim     (the simulator process)
                         <- cryptoflow_dagster (the code location, its runs and the CLI)

The sidecar and the simulator never import the code location (a sidecar restart must not load Dagster), the core
imports none of them, and no two top-level packages import each other. Imports are read from the source (every
``import``/``from`` statement, at any depth, lazy ones included), so the test breaks on the first wrong one.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cryptoflow_core", "streaming_sensor", "exchange_sim", "cryptoflow_dagster", "cryptoflow_serving")
ALLOWED = {
    "cryptoflow_core": set(),
    "streaming_sensor": {"cryptoflow_core"},
    "exchange_sim": {"cryptoflow_core"},
    "cryptoflow_dagster": {"cryptoflow_core"},
    # the market-data API reads the lake through cryptoflow_dagster.lake (the one way in) but is no Dagster process
    "cryptoflow_serving": {"cryptoflow_core", "cryptoflow_dagster"},
}


def imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level project packages imported by each module of ``package`` (module path -> packages)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = (names & set(PACKAGES)) - {package}
    return found


def test_every_import_between_packages_points_toward_the_core():
    wrong = {
        module: sorted(used - ALLOWED[package])
        for package in PACKAGES
        for module, used in imported_packages(package).items()
        if used - ALLOWED[package]
    }
    assert wrong == {}, f"imports against the package direction (allowed: {ALLOWED}): {wrong}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_no_import_cycle_between_top_level_packages():
    graph = {p: set().union(*imported_packages(p).values()) for p in PACKAGES}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_the_cycle_finder_finds_a_cycle():
    # the check above must be able to fail: a two-package cycle and a longer one
    assert _cycle({"a": {"b"}, "b": {"a"}}) is not None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) is not None
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    "module, must_not_load",
    [
        ("streaming_sensor.sidecar", ("dagster", "cryptoflow_dagster", "duckdb", "polars")),
        ("exchange_sim.server", ("dagster", "cryptoflow_dagster", "duckdb")),
        ("cryptoflow_serving.app", ("dagster",)),
        ("cryptoflow_core.settings", ("dagster", "duckdb", "pyarrow", "polars")),
        ("cryptoflow_core.landing_files", ("dagster", "duckdb", "pyarrow", "polars")),
    ],
)
def test_processes_load_only_what_they_use(module, must_not_load):
    """The sidecar restarts in well under a second and the simulator does not carry Dagster: checked in a fresh
    interpreter, since a module imported by any earlier test would hide a wrong import here."""
    code = (
        f"import sys, {module}\n"
        f"print(','.join(m for m in {must_not_load!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"importing {module} loaded {out.stdout.strip()}"


def test_importing_the_code_location_does_no_work():
    """Import every module of the code location in a fresh interpreter with a setting that cannot be parsed and an
    audit hook on process starts: a module that loads settings at import fails on the setting, one that runs dbt (or
    any program) at import is caught by the hook. Loading the definitions is where that work belongs."""
    code = """
import importlib, pkgutil, sys
import dagster, dagster_dbt, duckdb, polars  # the libraries first: Dagster's vendored croniter runs `file` on import
started = []
sys.addaudithook(lambda event, args: started.append(args[0]) if event == "subprocess.Popen" else None)
import cryptoflow_dagster
names = ["cryptoflow_dagster.definitions"] + [
    m.name for m in pkgutil.walk_packages(cryptoflow_dagster.__path__, "cryptoflow_dagster.")
    if not m.name.endswith("__main__")
]
for name in names:
    importlib.import_module(name)
print(len(names), repr(started))
"""
    env = {**os.environ, "CRYPTOFLOW_START_DATE": "not-a-date"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    count, started = out.stdout.split(maxsplit=1)
    assert int(count) > 50 and started.strip() == "[]"
    # and the check can fail: loading the definitions does read the settings
    load = subprocess.run([sys.executable, "-c", "from cryptoflow_dagster.definitions import defs; defs()"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert load.returncode != 0 and "CRYPTOFLOW_START_DATE" in load.stderr
