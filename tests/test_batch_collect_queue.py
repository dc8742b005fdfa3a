"""The candles collection's shared (day, market) work queue: workers never wait at a day boundary, an error stops the
queue, and the bronze asset built on it still replaces each day of its markets in one transaction (real Dagster
instance, real DuckLake files, the simulator over HTTP)."""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta, timezone

import dagster as dg
import pytest

from cryptoflow_dagster import lake
from cryptoflow_dagster.batch.collect import collect_days
from cryptoflow_dagster.clients import ExchangeError
from cryptoflow_dagster.clients.resources import BinanceResource, FearGreedResource, UpbitResource
from cryptoflow_core.settings import load_settings
from cryptoflow_dagster.defs.raw.assets import raw_assets
from cryptoflow_dagster.resources import LakeResource

D0, D1 = date(2025, 9, 3), date(2025, 9, 4)
PAIRS = [("upbit", "KRW-BTC"), ("binance", "BTCUSDT")]


def test_workers_start_the_next_day_while_a_day_is_unfinished():
    next_day_started = threading.Event()

    def fetch(md):
        if md.day == D1:
            next_day_started.set()
        elif md.market == "KRW-BTC":
            # With a barrier per day, day 2 could not start before this market-day ends: it would wait here forever.
            if not next_day_started.wait(60):
                raise AssertionError("day 2 never started while day 1 was unfinished")
        return f"{md.day}/{md.market}"

    got = dict(collect_days([D0, D1], PAIRS, fetch, workers=2))
    assert next_day_started.is_set()
    for day in (D0, D1):  # each day comes whole, its markets in the order asked for
        assert [(md.market, value) for md, value in got[day]] == [(m, f"{day}/{m}") for _, m in PAIRS]


def test_an_error_stops_the_queue_and_reaches_the_caller():
    calls = []

    def fetch(md):
        calls.append(md)
        if md.market == "BTCUSDT":
            raise ExchangeError("binance GET /api/v3/klines: HTTP 400")
        return md.market

    days = [D0 + timedelta(days=i) for i in range(5)]
    with pytest.raises(ExchangeError, match="HTTP 400"):
        list(collect_days(days, PAIRS, fetch, workers=1))
    assert len(calls) == 2  # one worker: the first market-day, the failing one, then nothing more was fetched


@pytest.fixture
def sim_platform(cryptoflow_home, sim_session, monkeypatch):
    for key, value in sim_session.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CRYPTOFLOW_UPBIT_MARKETS", "KRW-BTC")
    monkeypatch.setenv("CRYPTOFLOW_BINANCE_SYMBOLS", "BTCUSDT")
    return sim_session


def materialize_days(instance, days: list[date], markets: list[str]) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [raw_assets(load_settings())[0]],
        instance=instance,
        resources={"lake": LakeResource(), "upbit": UpbitResource(), "binance": BinanceResource(), "fear_greed": FearGreedResource()},
        tags={"dagster/asset_partition_range_start": str(days[0]), "dagster/asset_partition_range_end": str(days[-1])},
        run_config={"ops": {"bronze__candles_raw": {"config": {"markets": markets, "workers": 4}}}},
    )


def bronze_rows(settings):
    with lake.session(settings) as con:
        return con.execute(
            "SELECT day, market, unique_key, raw_json, ingest_run_id FROM bronze.candles_raw ORDER BY unique_key"
        ).fetchall()


def test_pipelined_backfill_replaces_each_day_of_its_markets_and_logs_progress(sim_platform, settings, dagster_instance):
    today = datetime.now(timezone.utc).date()
    days = [today - timedelta(days=4), today - timedelta(days=3), today - timedelta(days=2)]
    instance = dagster_instance
    first = materialize_days(instance, days, ["KRW-BTC", "BTCUSDT"])
    before = bronze_rows(settings)
    assert {(d, m) for d, m, *_ in before} == {(d, m) for d in days for m in ("KRW-BTC", "BTCUSDT")}
    progress = [e.message for e in instance.all_logs(first.run_id) if "bronze.candles_raw" in (e.message or "")]
    assert [m.split(" days")[0].split()[-1] for m in progress if " days (" in m] == ["1/3", "2/3", "3/3"]

    # Rebuild two of the days for one market while the queue runs 4 workers over them.
    second = materialize_days(instance, days[1:], ["KRW-BTC"])
    after = bronze_rows(settings)
    assert [(d, m, k, raw) for d, m, k, raw, _ in after] == [(d, m, k, raw) for d, m, k, raw, _ in before]  # no duplicates
    for day, market, _, _, run_id in after:
        rebuilt = day in days[1:] and market == "KRW-BTC"
        assert run_id == (second.run_id if rebuilt else first.run_id), (day, market)
