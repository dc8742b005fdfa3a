"""Dagster resources shared by every domain. Settings come from ``CRYPTOFLOW_*`` variables (settings.py);
secrets only through ``dg.EnvVar`` so they never appear in run config, logs or metadata."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb

from cryptoflow_dagster import lake
from cryptoflow_dagster.clients.resources import BinanceResource, FearGreedResource, UpbitResource
from cryptoflow_dagster.dbt_project import dbt_resource
from cryptoflow_core.settings import Settings, load_settings


class LakeResource(dg.ConfigurableResource):
    """Opens the DuckLake lakehouse through the one lake module (extensions, catalog, retries)."""

    def settings(self) -> Settings:
        return load_settings()

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with lake.session(self.settings(), read_only=read_only) as con:
            if not read_only:
                lake.ensure_schema(con)
            yield con


def build_resources() -> dict[str, object]:
    """Every resource key the platform's assets, checks and sensors may ask for."""
    return {
        "lake": LakeResource(),
        "upbit": UpbitResource(),
        "binance": BinanceResource(),
        "fear_greed": FearGreedResource(),
        "dbt": dbt_resource(),
    }
