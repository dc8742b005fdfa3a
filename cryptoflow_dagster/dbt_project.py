"""The gold dbt project (dbt_project/): where it lives, how dbt reaches the lake, and its manifest.

No ``@dbt_assets`` here (they are in defs/gold/assets.py), so anything can import this module cheaply.

- :func:`dbt_env` is the one place that turns settings into the env vars ``dbt_project/profiles.yml`` reads: the
  catalog, the data path and the project-owned extension folder, so dbt and every Python writer see the same lake.
- :func:`prepare_lake` must run before dbt: it fills the extension folder from the packaged binaries (dbt itself must
  never download or use ~/.duckdb) and creates the silver tables the dbt sources point at.
- :func:`ensure_manifest` runs ``dbt parse`` only when the manifest is missing or older than a dbt file: re-parsing on
  every run (``prepare_if_dev()``) costs seconds per run and per step process.

Run dbt by hand the same way: ``.venv/bin/python -m cryptoflow_dagster.dbt_project build``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject

from cryptoflow_dagster import lake
from cryptoflow_core.settings import Settings, load_settings

log = logging.getLogger(__name__)

DBT_PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"
# The dbt of the interpreter running us (the .venv's), not whatever `dbt` is first on PATH.
DBT_EXECUTABLE = Path(sys.executable).parent / "dbt"
# Files whose change makes the manifest stale; target/ and logs/ are dbt's output, not its input.
_DBT_SOURCES = ("dbt_project.yml", "profiles.yml", "models", "macros", "tests")
# dbt run folders (run_results.json, dbt.log) kept under the data home; older ones are pruned.
KEEP_RUN_TARGETS = 20

gold_dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def dbt_env(settings: Settings) -> dict[str, str]:
    """The env vars profiles.yml reads, derived from settings (and nowhere else)."""
    return {
        "CRYPTOFLOW_DBT_CATALOG": settings.catalog_uri,
        "CRYPTOFLOW_DBT_DATA_PATH": settings.data_path,
        "CRYPTOFLOW_DBT_EXTENSION_DIR": str(settings.extension_dir),
        "CRYPTOFLOW_DBT_EXTENSIONS": ",".join(lake.needed_extensions(settings)),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


@contextmanager
def dbt_environment(settings: Settings) -> Iterator[dict[str, str]]:
    """Set :func:`dbt_env` in os.environ while dbt starts, then restore it.

    ``DbtCliResource.cli`` passes os.environ to the dbt process and reads the profile in-process, and takes no env
    argument of its own: this is the narrowest way to hand it the profile's values.
    """
    values = dbt_env(settings)
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield values
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def prepare_lake(settings: Settings) -> None:
    """Install the extensions into the project's folder and create the contract schemas and silver tables."""
    with lake.session(settings) as con:
        lake.ensure_schema(con)


def manifest_is_stale(project_dir: Path = DBT_PROJECT_DIR, manifest: Path | None = None) -> bool:
    manifest = manifest or project_dir / "target" / "manifest.json"
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    for name in _DBT_SOURCES:
        path = project_dir / name
        files = [path] if path.is_file() else path.rglob("*") if path.is_dir() else []
        if any(f.is_file() and f.stat().st_mtime > built for f in files):
            return True
    return False


def ensure_manifest(settings: Settings | None = None) -> Path:
    """Parse the project if the manifest is missing or stale; return the manifest's path.

    dbt writes into a temporary target folder and the manifest is renamed into place, so two processes loading the
    definitions at once never read a half-written manifest.
    """
    manifest = gold_dbt_project.manifest_path
    if not manifest_is_stale(DBT_PROJECT_DIR, manifest):
        return manifest
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=manifest.parent, prefix=".parse-") as tmp:
        result = run_dbt(["parse"], settings or load_settings(), target_path=Path(tmp))
        if result.returncode != 0:
            raise RuntimeError(f"dbt parse failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
        os.replace(Path(tmp) / "manifest.json", manifest)
    log.info("dbt manifest rebuilt at %s", manifest)
    return manifest


def run_target_path(settings: Settings, run_id: str | None = None) -> Path:
    """A fresh folder under the data home for one dbt invocation's artifacts; prunes all but the newest ones."""
    root = settings.home / "dbt" / "runs"
    root.mkdir(parents=True, exist_ok=True)
    for old in sorted(root.iterdir(), key=lambda p: p.stat().st_mtime)[:-KEEP_RUN_TARGETS]:
        shutil.rmtree(old, ignore_errors=True)
    return root / f"{(run_id or 'manual')[:8]}-{uuid.uuid4().hex[:8]}"


def run_dbt(
    args: Sequence[str], settings: Settings, *, target_path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the .venv's dbt on the project with the profile's env vars; artifacts go under the data home."""
    target_path = target_path or run_target_path(settings)
    env = {
        **os.environ,
        **dbt_env(settings),
        "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR),
        "DBT_TARGET_PATH": str(target_path),
        "DBT_LOG_PATH": str(target_path),
    }
    return subprocess.run(
        [str(DBT_EXECUTABLE), *args, "--project-dir", str(DBT_PROJECT_DIR)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=gold_dbt_project, dbt_executable=str(DBT_EXECUTABLE))


def main(argv: Sequence[str] | None = None) -> int:
    settings = load_settings()
    prepare_lake(settings)
    result = run_dbt(list(argv if argv is not None else sys.argv[1:]), settings)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
