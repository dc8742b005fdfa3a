"""Shared fixtures. Every test gets its own CRYPTOFLOW_HOME (lake, landing, extension folder, Dagster home) under tmp."""

from __future__ import annotations

from pathlib import Path

import pytest

from cryptoflow_core.settings import Settings, load_settings
from exchange_sim.config import RECORDED_DATA

# Any warning not filtered by name in pyproject.toml fails the run (tests/warnings_gate.py).
pytest_plugins = ["warnings_gate"]


@pytest.fixture
def cryptoflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cf_home"
    home.mkdir()
    monkeypatch.setenv("CRYPTOFLOW_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster_home"))
    (home / "dagster_home").mkdir()
    return home


@pytest.fixture
def settings(cryptoflow_home: Path) -> Settings:
    return load_settings()


@pytest.fixture
def dagster_instance():
    """An ephemeral Dagster instance, disposed after the test: dg.materialize's fs_io_manager writes into a temporary
    directory of the instance's, which only its disposal removes (else: an "Implicitly cleaning up" ResourceWarning)."""
    import dagster as dg

    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture(scope="session")
def recorded_data() -> Path:
    """The real recorded market data shipped with the simulator (exchange_sim/recorded/PROVENANCE.md)."""
    return RECORDED_DATA


@pytest.fixture
def slack_server():
    """A local Slack-compatible Web API (tests/slack_server.py) on 127.0.0.1; ``.url`` is its API base URL."""
    from slack_server import SlackServer

    server = SlackServer().start()
    yield server
    server.stop()


def _sim_options(request: pytest.FixtureRequest) -> dict:
    # Real data lives in 2025-09: history from there lets tests compare against the recorded candles.
    options = {"history_start": "2025-09-01", "seed": 42}
    marker = request.node.get_closest_marker("sim_options")
    if marker is not None:
        options.update(marker.kwargs)
    return options


@pytest.fixture
def sim(request: pytest.FixtureRequest):
    """A fresh exchange simulator subprocess on a free loopback port (``@pytest.mark.sim_options(...)`` sets flags)."""
    from exchange_sim.testing import running_sim

    with running_sim(**_sim_options(request)) as handle:
        yield handle


@pytest.fixture(scope="session")
def sim_session():
    """One shared simulator for read-only tests (history from 2025-09-01, seed 42); do not flip its faults.

    Its rate limits are lifted so tests sharing it do not throttle each other; use `sim` to meet the real limits.
    """
    from exchange_sim.testing import running_sim

    with running_sim(history_start="2025-09-01", seed=42, upbit_rate=10_000, binance_weight=10_000_000) as handle:
        yield handle


@pytest.fixture(scope="session")
def dagster_ui_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CRYPTOFLOW_HOME (lake, Dagster home, logs) of the `dagster_ui` platform."""
    return tmp_path_factory.mktemp("dagster_ui_home")


@pytest.fixture(scope="session")
def dagster_ui(dagster_ui_home: Path, sim_session):
    """`dagster dev -w workspace.yaml` on a free port against `sim_session`, with a tmp home (`dagster_ui_home`) set up
    as `cryptoflow demo` sets its own; yields the UI base URL once the code location is LOADED (GraphQL, not HTTP 200)."""
    import os
    from datetime import date

    from cryptoflow_dagster import lake
    from cryptoflow_dagster.cli import services
    from cryptoflow_dagster.cli.children import Children
    from cryptoflow_dagster.cli.demo import child_env
    from cryptoflow_dagster.instance import prepare_instance
    from cryptoflow_dagster.webserver import wait_until_loaded

    port = services.free_port()
    base = {**os.environ, **sim_session.env(), "CRYPTOFLOW_HOME": str(dagster_ui_home), "CRYPTOFLOW_UI_PORT": str(port)}
    ui_settings = load_settings(base)
    env = child_env(ui_settings, base, history_start=date(2025, 9, 1))  # sim_session's history starts there too
    prepare_instance(ui_settings)
    with lake.session(ui_settings) as con:
        lake.ensure_schema(con)
    with Children() as children:
        dev = children.start(
            "dagster-dev",
            services.dagster_dev_argv("127.0.0.1", port),
            env=env,
            cwd=services.REPO_ROOT,
            log_path=dagster_ui_home / "logs" / "dagster-dev.log",
        )
        url = f"http://127.0.0.1:{port}"
        wait_until_loaded(url, timeout_s=240, still_running=lambda: dev.process.poll() is None)
        yield url


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster on loopback (Debian's package; tests/scaleout_servers.py), one per test module."""
    from scaleout_servers import running_postgres

    with running_postgres() as pg:
        yield pg


@pytest.fixture(scope="module")
def s3():
    """moto's S3-compatible server on loopback with the lake's bucket, one per test module."""
    from scaleout_servers import BUCKET, running_s3

    with running_s3() as server:
        server.client().create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture
def scaled(postgres, s3, cryptoflow_home, monkeypatch, request):
    """Settings for a fresh lake: its own Postgres database for the catalog and its own S3 prefix for the data.
    Returns (settings, the S3 prefix)."""
    from scaleout_servers import BUCKET, S3_ENV

    name = "lake_" + request.node.name.replace("test_", "")[:40].lower()
    postgres.create_database(name)
    prefix = f"{name}/"
    env = {**S3_ENV, "CRYPTOFLOW_LAKE_CATALOG": "postgres:" + postgres.libpq(name),
           "CRYPTOFLOW_LAKE_DATA_PATH": f"s3://{BUCKET}/{prefix}", "CRYPTOFLOW_S3_ENDPOINT": s3.endpoint}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(), prefix
