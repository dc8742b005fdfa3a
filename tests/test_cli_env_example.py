"""`.env.example` cannot drift from settings.py, and no CRYPTOFLOW_* variable is read without being documented."""

from __future__ import annotations

import re
from pathlib import Path

from cryptoflow_dagster import env_example
from cryptoflow_dagster.dbt_project import dbt_env
from cryptoflow_core.settings import load_settings, setting_docs

REPO = Path(__file__).resolve().parents[1]
# benchmarks/ has its own knobs (CRYPTOFLOW_BENCH_*): they tune a measurement, not the platform
CODE_DIRS = ("cryptoflow_dagster", "streaming_sensor", "exchange_sim")


def test_env_example_is_what_settings_render():
    committed = (REPO / ".env.example").read_text()
    assert committed == env_example.render(), (
        ".env.example is out of date with cryptoflow_dagster/settings.py: run `python -m cryptoflow_dagster.env_example`"
    )


def test_env_example_lists_every_setting_with_its_default():
    lines = dict(
        line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines() if line and not line.startswith("#")
    )
    for doc in setting_docs():
        assert doc.env in lines
        assert lines[doc.env].strip('"') == doc.default
    assert lines["SLACK_BOT_TOKEN"] == ""  # the secret is named, never given a value


def test_every_cryptoflow_variable_in_the_code_is_a_documented_setting():
    documented = {doc.env for doc in setting_docs()}
    derived = set(dbt_env(load_settings({})))  # set by the platform itself for dbt's profile, not by people
    used = set()
    for folder in CODE_DIRS:
        for path in (REPO / folder).rglob("*.py"):
            # a name ending in "_" is a prefix in prose (e.g. "CRYPTOFLOW_SIM_* settings"), not a variable
            used |= {n for n in re.findall(r"CRYPTOFLOW_[A-Z0-9_]+", path.read_text()) if not n.endswith("_")}
    assert used, "the scan found nothing: the pattern or folders are wrong"
    assert used - documented - derived == set()
