"""How dbt reaches the lake: profile env from settings, extensions only from the project's folder, manifest freshness."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from cryptoflow_dagster import lake
from cryptoflow_dagster.dbt_project import (
    DBT_PROJECT_DIR,
    dbt_env,
    dbt_environment,
    manifest_is_stale,
    run_dbt,
    run_target_path,
)
from cryptoflow_core.settings import load_settings


def test_profile_env_comes_from_settings(settings):
    env = dbt_env(settings)
    assert env["CRYPTOFLOW_DBT_CATALOG"] == settings.catalog_uri == f"ducklake:sqlite:{settings.home}/lake/catalog.sqlite"
    assert env["CRYPTOFLOW_DBT_DATA_PATH"] == settings.data_path
    assert env["CRYPTOFLOW_DBT_EXTENSION_DIR"] == str(settings.home / "duckdb_extensions")
    assert env["CRYPTOFLOW_DBT_EXTENSIONS"] == "ducklake,sqlite_scanner"
    postgres = load_settings({"CRYPTOFLOW_HOME": str(settings.home), "CRYPTOFLOW_LAKE_CATALOG": "postgres:dbname=lake"})
    assert dbt_env(postgres)["CRYPTOFLOW_DBT_CATALOG"] == "ducklake:postgres:dbname=lake"
    assert dbt_env(postgres)["CRYPTOFLOW_DBT_EXTENSIONS"] == "ducklake,postgres_scanner"
    # every env var the profile reads is one dbt_env() provides
    profile = (DBT_PROJECT_DIR / "profiles.yml").read_text()
    assert {v for v in env if v.startswith("CRYPTOFLOW_")} == {
        v for v in env if f"env_var('{v}')" in profile
    }


def test_dbt_environment_is_restored(settings, monkeypatch):
    monkeypatch.setenv("CRYPTOFLOW_DBT_CATALOG", "before")
    monkeypatch.delenv("CRYPTOFLOW_DBT_DATA_PATH", raising=False)
    with dbt_environment(settings):
        assert os.environ["CRYPTOFLOW_DBT_DATA_PATH"] == settings.data_path
    assert os.environ["CRYPTOFLOW_DBT_CATALOG"] == "before"
    assert "CRYPTOFLOW_DBT_DATA_PATH" not in os.environ


def test_dbt_never_falls_back_to_home_extensions(settings, tmp_path, monkeypatch):
    # a machine where the extensions once landed in ~/.duckdb by hand ...
    fake_home = tmp_path / "home"
    with lake.session(settings):  # fills settings.extension_dir from the packaged binaries
        pass
    shutil.copytree(settings.extension_dir, fake_home / ".duckdb" / "extensions")
    # ... while the project's own folder is empty: dbt must fail, not quietly use ~/.duckdb
    shutil.rmtree(settings.extension_dir)
    settings.extension_dir.mkdir()
    monkeypatch.setenv("HOME", str(fake_home))
    result = run_dbt(["run", "--select", "sentiment_daily"], settings)
    assert result.returncode != 0
    assert 'Failed to download extension "ducklake"' in result.stdout
    assert not list(settings.extension_dir.rglob("*.duckdb_extension"))


def test_manifest_is_stale_when_a_dbt_file_is_newer(tmp_path):
    project = tmp_path / "proj"
    (project / "models").mkdir(parents=True)
    model = project / "models" / "m.sql"
    model.write_text("select 1")
    manifest = project / "target" / "manifest.json"
    assert manifest_is_stale(project, manifest)  # missing
    manifest.parent.mkdir()
    manifest.write_text("{}")
    old = time.time() - 60
    os.utime(model, (old, old))
    assert not manifest_is_stale(project, manifest)
    (project / "target" / "run_results.json").write_text("{}")  # dbt's own output does not count
    assert not manifest_is_stale(project, manifest)
    model.write_text("select 2")
    assert manifest_is_stale(project, manifest)


def test_run_targets_live_under_the_data_home_and_are_pruned(settings):
    paths = []
    for i in range(25):
        path = run_target_path(settings, f"run{i:04d}-xyz")
        path.mkdir()
        paths.append(path)
    root = settings.home / "dbt" / "runs"
    assert all(p.parent == root for p in paths)
    assert len(list(root.iterdir())) <= 21
    assert paths[-1].exists()


def test_definitions_manifest_is_built(tmp_path):
    # building the gold assets (as the code location does when it loads) parsed the project if needed: the manifest
    # exists and is not older than any dbt file
    from cryptoflow_dagster.defs.gold.dbt import gold_dbt_assets

    gold_dbt_assets()

    assert not manifest_is_stale(DBT_PROJECT_DIR, Path(DBT_PROJECT_DIR / "target" / "manifest.json"))
