"""The code location: definitions load, follow the group/key convention, and `dagster dev -w workspace.yaml` serves them
LOADED (GraphQL), not merely an HTTP 200 over a failed import."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import httpx

from cryptoflow_dagster.webserver import location_statuses

REPO = Path(__file__).resolve().parents[1]
# group -> first element of every asset key in it (the project's asset key convention)
GROUP_PREFIX = {"raw": "bronze", "silver": "silver", "gold": "gold", "alerts": "gold", "ops": "ops"}


def test_definitions_load_and_follow_the_group_convention():
    from cryptoflow_dagster.definitions import defs as load_code_location
    defs = load_code_location()

    dg.Definitions.validate_loadable(defs)  # resolves every job, and every resource key an asset asks for
    graph = defs.resolve_asset_graph()
    groups: dict[str, set[str]] = {}
    for key in graph.get_all_asset_keys():
        group = graph.get(key).group_name
        assert group in GROUP_PREFIX, f"{key.to_user_string()} is in group {group!r}"
        assert key.path[0] == GROUP_PREFIX[group], f"{key.to_user_string()} in group {group} breaks the key convention"
        groups.setdefault(group, set()).add(key.path[-1])
    assert {"raw", "silver", "gold"} <= set(groups)
    assert {"trades", "candles_1m", "candles_1d", "fear_greed"} <= groups["silver"]
    assert {"lake", "slack", "upbit", "binance", "fear_greed"} <= set(defs.resources)


def test_resources_show_their_configuration_filled_from_settings(settings):
    """What the UI's resource page shows: the lake's location and the exchanges' URLs as field values."""
    from cryptoflow_dagster.definitions import defs as load_code_location

    resources = load_code_location().resources
    assert resources["lake"].home == str(settings.home)
    assert resources["lake"].landing_dir == str(settings.landing_dir)
    assert resources["upbit"].base_url == settings.upbit_rest_url
    assert resources["binance"].base_url == settings.binance_rest_url
    assert resources["fear_greed"].base_url == settings.fear_greed_url
    assert resources["slack"].api_url == settings.slack_api_url and resources["slack"].channel == settings.slack_channel
    # a run overrides a field in its run config: the resource's settings follow it
    from cryptoflow_dagster.resources import LakeResource

    moved = LakeResource(home=str(settings.home / "elsewhere"))
    assert moved.settings().home == settings.home / "elsewhere"
    assert moved.settings().landing_dir == settings.home / "elsewhere" / "landing"


def test_dg_checks_and_lists_the_definitions(settings):
    """The project is a `dg` project: `dg check defs` loads the defs folder, `dg list defs` lists what it found."""
    dg_cli = str(Path(sys.executable).with_name("dg"))
    checked = subprocess.run([dg_cli, "check", "defs"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = subprocess.run([dg_cli, "list", "defs", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    found = json.loads(listed.stdout)
    keys = {a["asset_key"] for a in found["assets"]}
    assert {"silver/trades", "bronze/candles_raw", "gold/volatility_daily", "ops/platform_health"} <= keys
    assert {"landing_files_sensor", "market_alert_sensor"} <= {s["name"] for s in found["sensors"]}


def test_dagster_dev_reports_the_code_location_loaded(dagster_ui):
    statuses = location_statuses(dagster_ui)
    assert [(s.name, s.load_status, s.kind) for s in statuses] == [("cryptoflow", "LOADED", "RepositoryLocation")]
    # the webserver really serves this location's assets, read back over GraphQL
    query = "{ assetNodes { assetKey { path } groupName } }"
    nodes = httpx.post(f"{dagster_ui}/graphql", json={"query": query}, timeout=30).json()["data"]["assetNodes"]
    assert {("silver", "candles_1m"), ("gold", "indicators_daily")} <= {tuple(n["assetKey"]["path"]) for n in nodes}


def test_dagster_home_written_by_the_platform_configures_the_instance(settings):
    from cryptoflow_dagster.instance import ensure_dagster_yaml

    path = ensure_dagster_yaml(settings)
    assert path == settings.dagster_home / "dagster.yaml"
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_coordinator.dequeue_interval_seconds == 1  # a queued streaming run launches within ~1 s
        config = instance.get_concurrency_config()
        assert config.run_queue_config.max_concurrent_runs >= 1
        assert {"key": "dagster/backfill", "limit": 2} in config.run_queue_config.tag_concurrency_limits
        assert config.pool_config.default_pool_limit >= 1
        assert instance.telemetry_enabled is False
        instance.get_runs(limit=1)
    assert (settings.dagster_home / "storage" / "history" / "runs.db").exists()  # local SQLite under the home
    # an operator's edit is kept: the writer only fills a missing file
    path.write_text(path.read_text() + "\n# edited\n")
    ensure_dagster_yaml(settings)
    assert path.read_text().endswith("# edited\n")
