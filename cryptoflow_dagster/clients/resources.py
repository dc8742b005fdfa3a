"""Dagster resources that hand out the exchange REST clients, base URLs from settings (real exchange or simulator)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from cryptoflow_dagster.clients.binance import BinanceClient
from cryptoflow_dagster.clients.fear_greed import FearGreedClient
from cryptoflow_dagster.clients.upbit import UpbitClient
from cryptoflow_core.settings import load_settings


class UpbitResource(dg.ConfigurableResource):
    """Upbit quotation REST. ``per_second`` is Upbit's per-group limit (10/s per IP)."""

    per_second: int = 10
    max_attempts: int = 5

    @contextmanager
    def client(self) -> Iterator[UpbitClient]:
        settings = load_settings()
        client = UpbitClient(
            settings.upbit_rest_url,
            per_second=self.per_second,
            max_attempts=self.max_attempts,
            # Runs of this platform on one host take turns on each Upbit group instead of splitting (and crossing) it.
            lock_dir=settings.home / "locks",
        )
        try:
            yield client
        finally:
            client.close()


class BinanceResource(dg.ConfigurableResource):
    """Binance spot REST. ``safety`` is the share of the per-minute weight this process may spend."""

    weight_per_minute: int = 6000
    safety: float = 0.8
    max_attempts: int = 5

    @contextmanager
    def client(self) -> Iterator[BinanceClient]:
        client = BinanceClient(
            load_settings().binance_rest_url,
            weight_per_minute=self.weight_per_minute,
            safety=self.safety,
            max_attempts=self.max_attempts,
        )
        try:
            yield client
        finally:
            client.close()


class FearGreedResource(dg.ConfigurableResource):
    @contextmanager
    def client(self) -> Iterator[FearGreedClient]:
        client = FearGreedClient(load_settings().fear_greed_url)
        try:
            yield client
        finally:
            client.close()
