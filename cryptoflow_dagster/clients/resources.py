"""Dagster resources that hand out the exchange REST clients. ``base_url`` is the real exchange or the simulator
(filled from settings by cryptoflow_dagster/resources.py; empty falls back to the setting)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field

from cryptoflow_core.settings import load_settings
from cryptoflow_dagster.clients.binance import BinanceClient
from cryptoflow_dagster.clients.fear_greed import FearGreedClient
from cryptoflow_dagster.clients.upbit import UpbitClient


class UpbitResource(dg.ConfigurableResource):
    """Upbit quotation REST. ``per_second`` is Upbit's per-group limit (10/s per IP)."""

    base_url: str = Field(default="", description="CRYPTOFLOW_UPBIT_REST_URL: Upbit's REST base URL or the simulator's.")
    per_second: int = Field(default=10, description="Upbit's requests per second per group and IP.")
    max_attempts: int = Field(default=5, description="Attempts per request (429s, 5xx, timeouts) before failing.")
    lock_dir: str = Field(default="", description="Folder of the host locks runs take turns on per Upbit group.")

    @contextmanager
    def client(self) -> Iterator[UpbitClient]:
        settings = load_settings()
        client = UpbitClient(
            self.base_url or settings.upbit_rest_url,
            per_second=self.per_second,
            max_attempts=self.max_attempts,
            # Runs of this platform on one host take turns on each Upbit group instead of splitting (and crossing) it.
            lock_dir=Path(self.lock_dir) if self.lock_dir else settings.home / "locks",
        )
        try:
            yield client
        finally:
            client.close()


class BinanceResource(dg.ConfigurableResource):
    """Binance spot REST. ``safety`` is the share of the per-minute weight this process may spend."""

    base_url: str = Field(default="", description="CRYPTOFLOW_BINANCE_REST_URL: Binance's REST base URL or the simulator's.")
    weight_per_minute: int = Field(default=6000, description="Binance's request weight allowance per minute and IP.")
    safety: float = Field(default=0.8, description="Share of the weight this process may spend.")
    max_attempts: int = Field(default=5, description="Attempts per request before failing.")

    @contextmanager
    def client(self) -> Iterator[BinanceClient]:
        client = BinanceClient(
            self.base_url or load_settings().binance_rest_url,
            weight_per_minute=self.weight_per_minute,
            safety=self.safety,
            max_attempts=self.max_attempts,
        )
        try:
            yield client
        finally:
            client.close()


class FearGreedResource(dg.ConfigurableResource):
    """alternative.me's Fear & Greed index."""

    base_url: str = Field(default="", description="CRYPTOFLOW_FEAR_GREED_URL: alternative.me's base URL or the simulator's.")

    @contextmanager
    def client(self) -> Iterator[FearGreedClient]:
        client = FearGreedClient(self.base_url or load_settings().fear_greed_url)
        try:
            yield client
        finally:
            client.close()
