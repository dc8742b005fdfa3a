"""The ops domain: health figures from a real lake, and the health asset materialized on a real Dagster instance."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl

from cryptoflow_dagster import lake
from cryptoflow_dagster.health import health_figures
from cryptoflow_dagster.resources import LakeResource

NOW = datetime(2025, 9, 2, 12, 0, tzinfo=timezone.utc)


def _fill(con) -> None:
    trades = pl.DataFrame(
        {
            "exchange": ["upbit", "upbit"],
            "market": ["KRW-BTC", "KRW-BTC"],
            "trade_id": [1, 2],
            "ts": [NOW - timedelta(minutes=5), NOW - timedelta(seconds=30)],
            "price": [1.0, 2.0],
            "volume": [1.0, 1.0],
            "quote_volume": [1.0, 2.0],
            "side": ["buy", "sell"],
            "ingest_time": [NOW, NOW],
        }
    )
    gaps = pl.DataFrame(
        {
            "exchange": ["binance", "binance"],
            "market": ["BTCUSDT", "BTCUSDT"],
            "gap_start": [NOW - timedelta(minutes=10), NOW - timedelta(hours=2)],
            "gap_end": [NOW - timedelta(minutes=7), NOW - timedelta(hours=1)],
            "detected_at": [NOW, NOW],
            "repaired_at": [None, NOW],
        }
    )

    def work(c):
        lake.insert(c, "silver.trades", trades)
        lake.insert(c, "ops.gaps", gaps)
        c.execute(
            "INSERT INTO bronze.dead_letters (received_at, source, raw, error) VALUES (?, 'ws', 'x'::BLOB, 'bad json')",
            [NOW - timedelta(hours=1)],
        )
        for status in ("sent", "sent", "pending"):
            c.execute(
                """INSERT INTO gold.alerts (alert_id, rule, triggered_at, dedupe_key, status, attempts)
                   VALUES (uuid()::VARCHAR, 'price_move', ?, uuid()::VARCHAR, ?, 0)""",
                [NOW - timedelta(minutes=1), status],
            )

    lake.write(con, work)


def test_health_figures_count_what_the_lake_holds(settings):
    settings.landing_dir.mkdir(parents=True)
    settings.heartbeat_path.write_text(json.dumps({"updated_at": (NOW - timedelta(seconds=4)).isoformat()}))
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        _fill(con)
        figures = health_figures(con, NOW, settings.landing_dir)
    assert figures["silver_trades_24h"] == 2
    assert figures["ingest_lag_seconds"] == 30.0
    assert figures["dead_letters_24h"] == 1
    assert figures["open_gaps"] == 1 and figures["open_gap_minutes"] == 3.0  # the repaired gap does not count
    assert figures["alerts_sent_24h"] == 2 and figures["alerts_pending"] == 1
    assert figures["heartbeat_age_seconds"] == 4.0 and figures["sidecar_shards"] == 1
    # a second sidecar shard that stopped 40 s ago: the age is the oldest shard's
    (settings.landing_dir / "_heartbeat.asia-1.json").write_text(
        json.dumps({"updated_at": (NOW - timedelta(seconds=40)).isoformat()}))
    with lake.session(settings, read_only=True) as con:
        figures = health_figures(con, NOW, settings.landing_dir)
    assert figures["heartbeat_age_seconds"] == 40.0 and figures["sidecar_shards"] == 2


def test_empty_lake_and_no_sidecar_read_as_unknown(settings):
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        figures = health_figures(con, NOW, settings.landing_dir)
    assert figures["ingest_lag_seconds"] == -1.0 and figures["heartbeat_age_seconds"] == -1.0
    assert figures["open_gaps"] == 0


def test_platform_health_asset_records_numeric_metadata(settings, dagster_instance):
    from cryptoflow_dagster.defs.health.platform_health import platform_health

    with lake.session(settings) as con:
        lake.ensure_schema(con)
        _fill(con)
    instance = dagster_instance
    result = dg.materialize([platform_health], resources={"lake": LakeResource()}, instance=instance)
    assert result.success
    [mat] = result.asset_materializations_for_node("ops__platform_health")
    assert mat.metadata["open_gaps"].value == 1.0
    assert mat.metadata["alerts_pending"].value == 1.0
    assert all(isinstance(v, dg.FloatMetadataValue) for v in mat.metadata.values())
