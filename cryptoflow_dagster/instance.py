"""The Dagster instance the platform runs on: ``<CRYPTOFLOW_HOME>/dagster_home/dagster.yaml``.

The file is written once, when absent, and then belongs to the operator: an edited file is never overwritten.
:func:`instance_config` returns the settings as a plain dict; the storage (SQLite or Postgres) is chosen in one place.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from cryptoflow_core.settings import Settings

log = logging.getLogger(__name__)

# How many runs the queue starts at once. Two cores and a SQLite-catalogued lake: more runs only wait on each other.
MAX_CONCURRENT_RUNS = 4
# Backfill runs may take at most this many run slots, so sensor-driven (streaming) runs are never starved by a backfill.
BACKFILL_RUN_LIMIT = 2
# Seconds between the daemon's looks at the run queue; a queued streaming run waits up to this long to launch.
DEQUEUE_INTERVAL_S = 1
# Runs with this tag write silver.trades after an anti-join (streaming ingest, gap repair): the queue runs one at a time.
SILVER_WRITER_TAG = "cryptoflow/silver-writer"
# Runs with this tag maintain the lake (compaction, snapshot expiry, catalog upkeep): the queue runs one at a time
# (docs/decisions/0017; the maintenance also takes a host lock, for instances whose dagster.yaml predates this limit).
LAKE_MAINTENANCE_TAG = "cryptoflow/lake-maintenance"
# Sensor ticks run on this many threads: a slow one (Slack retrying inside alert delivery) must not hold back the
# landing sensor. Dagster evaluates them one after another by default.
SENSOR_THREADS = 4
# Steps that declare ``pool="lake"`` (or any pool not configured otherwise) share this many slots. Concurrent DuckLake
# commits are safe (lake.write retries a lost race) but each lost race is a wasted write, so writers are kept few.
DEFAULT_POOL_LIMIT = 2


def instance_config(settings: Settings) -> dict[str, Any]:
    """The dagster.yaml contents for ``settings``: run queue, concurrency pools, telemetry off, storage (:func:`_storage`)."""
    return {
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            # Dagster's default looks at the queue every 5 s: 2.5 s on average added to every streaming run (BENCHMARKS.md).
            "config": {
                "dequeue_interval_seconds": DEQUEUE_INTERVAL_S,
                # Launch queued runs side by side: each launch (the code server starting a run process) took ~22 s
                # under load, so one at a time a backfill's 4th run started a minute after its 1st (and a streaming run
                # queued behind them waited as long). docs/decisions/0008-backfill-concurrency.md
                "dequeue_use_threads": True,
                "dequeue_num_workers": MAX_CONCURRENT_RUNS,
            },
        },
        "concurrency": {
            "runs": {
                "max_concurrent_runs": MAX_CONCURRENT_RUNS,
                "tag_concurrency_limits": [
                    {"key": "dagster/backfill", "limit": BACKFILL_RUN_LIMIT},
                    # streaming ingest and gap repair both anti-join then insert into silver.trades: one at a time; a
                    # streaming run's successor (value "handover") starts beside it and waits for its lock (ADR 0019)
                    {"key": SILVER_WRITER_TAG, "value": "true", "limit": 1},
                    # lake maintenance jobs never run side by side
                    {"key": LAKE_MAINTENANCE_TAG, "limit": 1},
                ],
            },
            "pools": {"default_limit": DEFAULT_POOL_LIMIT},
        },
        "sensors": {"use_threads": True, "num_workers": SENSOR_THREADS},
        "storage": _storage(settings),
        "telemetry": {"enabled": False},
        # The UI's "nux" and update checks reach the internet; the platform must run offline.
        "nux": {"enabled": False},
    }


def _storage(settings: Settings) -> dict[str, Any]:
    """SQLite under the Dagster home, or PostgreSQL (dagster-postgres) when CRYPTOFLOW_DAGSTER_PG_URL is set.

    The Postgres URL may carry a password, so dagster.yaml names the environment variable and Dagster reads it at start.
    """
    if settings.dagster_pg_url:
        return {"postgres": {"postgres_url": {"env": "CRYPTOFLOW_DAGSTER_PG_URL"}}}
    return {"sqlite": {"base_dir": str(settings.dagster_home / "storage")}}


def ensure_dagster_yaml(settings: Settings) -> Path:
    """Write ``<dagster_home>/dagster.yaml`` if it does not exist; return its path either way."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    if path.exists():
        return path
    header = "# Written by cryptoflow (cryptoflow_dagster/instance.py) because none existed; edit freely, it is kept.\n"
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(header + yaml.safe_dump(instance_config(settings), sort_keys=False))
    tmp.replace(path)  # never leave a half-written dagster.yaml for a concurrently starting daemon to read
    log.info("wrote %s", path)
    return path


def prepare_instance(settings: Settings) -> None:
    """Write dagster.yaml if absent and create the instance's storage, once, before any Dagster process starts.

    A webserver and a daemon started together on a fresh SQLite home both create the schema and one of them dies on
    ``table alembic_version already exists``; creating it here first removes that race.
    """
    from dagster import DagsterInstance

    ensure_dagster_yaml(settings)
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        # constructing each storage creates (or migrates) its tables
        instance.run_storage, instance.event_log_storage, instance.schedule_storage  # noqa: B018
