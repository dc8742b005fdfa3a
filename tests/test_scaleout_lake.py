"""The platform on scale-out engines, chosen by settings only: DuckLake catalog on PostgreSQL, lake Parquet on an
S3-compatible store (moto's server on loopback), Dagster instance storage on PostgreSQL (dagster-postgres).

PostgreSQL is Debian's package, started here in a throwaway cluster (tests/scaleout_servers.py).
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import dagster as dg
import polars as pl
import yaml

from cryptoflow_dagster import lake
from cryptoflow_dagster.defs.streaming.jobs import single_pass, streaming_ingest_job
from cryptoflow_dagster.instance import ensure_dagster_yaml
from cryptoflow_dagster.resources import build_resources
from cryptoflow_core.settings import load_settings
from scaleout_servers import BUCKET
from test_stream_job import fill_landing

def trades(exchange: str, market: str, ids: list[int]) -> pl.DataFrame:
    at = datetime(2026, 7, 30, 7, 4, tzinfo=timezone.utc)
    n = len(ids)
    return pl.DataFrame({"exchange": [exchange] * n, "market": [market] * n, "trade_id": ids, "ts": [at] * n,
                         "price": [float(i) for i in ids], "volume": [1.0] * n, "quote_volume": [float(i) for i in ids],
                         "side": ["buy"] * n, "ingest_time": [at] * n})


def s3_keys(s3, prefix: str) -> list[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def test_settings_pick_postgres_catalog_and_s3_data(scaled, s3):
    settings, prefix = scaled
    assert settings.catalog_uri.startswith("ducklake:postgres:dbname=")
    assert lake.needed_extensions(settings) == ["ducklake", "postgres_scanner", "httpfs"]
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        lake.ensure_schema(con)  # idempotent on Postgres too
        # more rows than DuckLake inlines into the catalog, so they go to Parquet on S3
        frame = trades("upbit", "KRW-BTC", list(range(1, 1001)))
        lake.write(con, lambda c: lake.insert(c, "silver.trades", frame))
    # a new process-like session (read-only) sees the rows through the Postgres catalog and the S3 objects
    with lake.session(settings, read_only=True) as con:
        assert con.execute("SELECT sum(price), count(*) FROM silver.trades").fetchone() == (500500.0, 1000)
        files = [r[0] for r in con.execute("SELECT data_file FROM ducklake_list_files('lake', 'trades', schema => 'silver')")
                 .fetchall()]
    assert files and all(f.startswith(f"s3://{BUCKET}/{prefix}") for f in files)
    keys = s3_keys(s3, prefix)
    assert any(k.endswith(".parquet") and "trades" in k for k in keys), keys


def test_concurrent_writers_on_postgres_catalog_lose_and_double_nothing(scaled):
    settings, _ = scaled
    with lake.session(settings) as con:
        lake.ensure_schema(con)
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            with lake.session(settings) as con:
                for batch in range(5):
                    ids = [worker * 1000 + batch * 10 + i for i in range(10)]
                    frame = trades("binance", "BTCUSDT", ids)
                    lake.write(con, lambda c: lake.insert(c, "silver.trades", frame))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    with lake.session(settings, read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT trade_id) FROM silver.trades").fetchone() == (150, 150)


def test_streaming_ingest_on_postgres_dagster_and_lake_with_s3_data(scaled, postgres, s3, monkeypatch):
    settings, prefix = scaled
    monkeypatch.setenv("CRYPTOFLOW_DAGSTER_PG_URL", postgres.url("dagster_" + prefix.rstrip("/")))
    postgres.create_database("dagster_" + prefix.rstrip("/"))
    settings = load_settings()
    path = ensure_dagster_yaml(settings)
    text = path.read_text()
    config = yaml.safe_load(text)
    # dagster.yaml names the variable; the URL (which may carry a password) is never written to disk
    assert config["storage"] == {"postgres": {"postgres_url": {"env": "CRYPTOFLOW_DAGSTER_PG_URL"}}}
    assert str(postgres.port) not in text

    fill_landing(settings)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        result = streaming_ingest_job.execute_in_process(run_config=single_pass(), instance=instance, resources=build_resources())
        assert result.success
        # the run and its materializations are read back from the Postgres event log
        assert instance.get_run_by_id(result.run_id).is_success
        event = instance.get_latest_materialization_event(dg.AssetKey(["silver", "trades"]))
        assert event is not None and event.run_id == result.run_id

    with lake.session(settings, read_only=True) as con:
        silver = con.execute("SELECT exchange, market, trade_id FROM silver.trades ORDER BY ALL").fetchall()
        dead = con.execute("SELECT count(*) FROM bronze.dead_letters").fetchone()[0]
        ledger = con.execute("SELECT count(*) FROM ops.ingested_files").fetchone()[0]
    assert silver == [("binance", "BTCUSDT", 501), ("binance", "BTCUSDT", 502), ("upbit", "KRW-BTC", 11),
                      ("upbit", "KRW-BTC", 12), ("upbit", "KRW-BTC", 13), ("upbit", "KRW-USDT", 21)]
    assert dead == 3 and ledger > 0
    # nothing fell back to the local default data path
    assert not any((settings.home / "lake" / "data").rglob("*.parquet"))
