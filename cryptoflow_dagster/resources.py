"""The Dagster resources every domain may ask for, with their configuration as fields.

:func:`build_resources` fills the fields from the platform's settings (``CRYPTOFLOW_*``, ``.env``) in one place, so the
UI's resource page shows what the code location runs with and a run can override a field in its run config. Secrets
reach a resource only through ``dg.EnvVar`` and never appear in run config, logs or metadata. A field left empty falls
back to the setting (tests and scripts build resources with only the fields they care about).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import dagster as dg
import duckdb
from dagster_slack import SlackResource
from pydantic import Field

from cryptoflow_core.settings import Settings, load_settings
from cryptoflow_dagster import lake
from cryptoflow_dagster.alerting.slack import SlackPoster, make_poster, web_client
from cryptoflow_dagster.clients.resources import BinanceResource, FearGreedResource, UpbitResource
from cryptoflow_dagster.dbt_project import dbt_resource


class LakeResource(dg.ConfigurableResource):
    """The DuckLake lakehouse, opened through the one lake module (extensions, catalog, retries)."""

    home: str = Field(default="", description="CRYPTOFLOW_HOME: lake, landing files, extension folder, Dagster home.")
    catalog: str = Field(
        default="", description="CRYPTOFLOW_LAKE_CATALOG: empty for <home>/lake/catalog.sqlite, or 'postgres:...'."
    )
    data_path: str = Field(default="", description="CRYPTOFLOW_LAKE_DATA_PATH: empty for <home>/lake/data/, or s3://...")
    memory_limit: str = Field(default="", description="CRYPTOFLOW_DUCKDB_MEMORY_LIMIT of each lake connection (e.g. 3GB).")
    landing_dir: str = Field(default="", description="CRYPTOFLOW_LANDING_DIR: where the sidecar's micro-batches land.")

    def settings(self) -> Settings:
        """The platform's settings with this resource's fields in place of the lake's location: what a run reads."""
        base = load_settings()
        home = Path(self.home).resolve() if self.home else base.home
        landing = Path(self.landing_dir).resolve() if self.landing_dir else (
            home / "landing" if self.home else base.landing_dir
        )
        return replace(
            base,
            home=home,
            lake_catalog=self.catalog or base.lake_catalog,
            lake_data_path=self.data_path or base.lake_data_path,
            duckdb_memory_limit=self.memory_limit or base.duckdb_memory_limit,
            landing_dir=landing,
        )

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with lake.session(self.settings(), read_only=read_only) as con:
            if not read_only:
                lake.ensure_schema(con)
            yield con


class SlackAlertsResource(SlackResource):
    """dagster-slack's resource with what alert delivery needs: a Web API base URL (the demo's and the tests'
    Slack-compatible sink), the channel and the UI's URL for links. No token is a supported mode: alerts are recorded
    and stay pending, or go token-less to a local sink."""

    token: str = Field(default="", description="Slack bot token: only ever dg.EnvVar('SLACK_BOT_TOKEN').")
    api_url: str = Field(default="", description="CRYPTOFLOW_SLACK_API_URL: Slack's Web API or a compatible sink.")
    channel: str = Field(default="", description="CRYPTOFLOW_SLACK_CHANNEL: where alerts and the digest go.")
    ui_url: str = Field(default="", description="CRYPTOFLOW_UI_URL: the Dagster UI's base URL used in message links.")

    def get_client(self):  # -> slack_sdk.WebClient, with the base URL and without slack_sdk's own retries
        return web_client(self.token or None, self._api_url())

    def poster(self) -> SlackPoster | None:
        return make_poster(self.token or None, self._api_url(), self.channel or load_settings().slack_channel)

    def base_ui_url(self) -> str:
        return self.ui_url or load_settings().ui_url

    def _api_url(self) -> str:
        return self.api_url or load_settings().slack_api_url


def slack_resource(settings: Settings | None = None) -> SlackAlertsResource:
    settings = settings or load_settings()
    # dg.EnvVar fails resource setup when the variable is unset, and no token is a supported mode, so the EnvVar is
    # wired in only when the variable exists.
    token = dg.EnvVar("SLACK_BOT_TOKEN") if os.environ.get("SLACK_BOT_TOKEN") else ""
    return SlackAlertsResource(
        token=token, api_url=settings.slack_api_url, channel=settings.slack_channel, ui_url=settings.ui_url
    )


def build_resources(settings: Settings | None = None) -> dict[str, object]:
    """Every resource key the platform's assets, checks and sensors may ask for, filled from ``settings``."""
    settings = settings or load_settings()
    return {
        "lake": LakeResource(
            home=str(settings.home),
            catalog=settings.lake_catalog,
            data_path=settings.lake_data_path,
            memory_limit=settings.duckdb_memory_limit,
            landing_dir=str(settings.landing_dir),
        ),
        "upbit": UpbitResource(base_url=settings.upbit_rest_url, lock_dir=str(settings.home / "locks")),
        "binance": BinanceResource(base_url=settings.binance_rest_url),
        "fear_greed": FearGreedResource(base_url=settings.fear_greed_url),
        "slack": slack_resource(settings),
        "dbt": dbt_resource(),
    }
