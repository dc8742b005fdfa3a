"""The batch half end to end on a real Dagster instance, real DuckLake files and the exchange simulator over HTTP:
bronze and silver for 2 days x 2 markets equal the simulator's own trades, rebuilds replace, bad rows fail the right
checks and land in dead letters, and a tightly rate-limited simulator never has to ban us."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl
import pytest

from cryptoflow_dagster import lake
from cryptoflow_dagster.clients.resources import BinanceResource, FearGreedResource, UpbitResource
from cryptoflow_dagster.definitions import defs as load_code_location
from cryptoflow_dagster.resources import LakeResource


MARKETS = {"upbit": "KRW-BTC", "binance": "BTCUSDT"}
TODAY = datetime.now(timezone.utc).date()
# The two most recent complete days: the newest partition is then fresh, as the daily schedule would leave it.
DAYS = [TODAY - timedelta(days=2), TODAY - timedelta(days=1)]


@pytest.fixture
def platform_env(cryptoflow_home, monkeypatch):
    def point_at(url_env: dict[str, str]) -> None:
        for key, value in url_env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("CRYPTOFLOW_UPBIT_MARKETS", MARKETS["upbit"])
        monkeypatch.setenv("CRYPTOFLOW_BINANCE_SYMBOLS", MARKETS["binance"])

    return point_at


def run_batch(days, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    tags = {"dagster/asset_partition_range_start": str(days[0]), "dagster/asset_partition_range_end": str(days[-1])}
    # The code location as Dagster loads it, with this test's settings (its resources are filled from them).
    return load_code_location().resolve_job_def("daily_batch").execute_in_process(
        instance=instance, tags=tags, raise_on_error=False
    )


def checks_by_name(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def expected_minutes(sim, exchange: str, market: str, day) -> pl.DataFrame:
    """1-minute OHLCV computed here from every trade the simulator says it made that day."""
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    trades = pl.DataFrame(sim.ground_truth(market, start, start + timedelta(days=1), exchange=exchange))
    id_col = "sequential_id" if exchange == "upbit" else "trade_id"
    return (
        trades.sort("ts", id_col)
        .with_columns(ts=(pl.col("ts") // 60_000 * 60_000).cast(pl.Datetime("ms", "UTC")))
        .group_by("ts", maintain_order=True)
        .agg(open=pl.first("price"), high=pl.max("price"), low=pl.min("price"), close=pl.last("price"),
             volume=pl.sum("volume"), quote_volume=(pl.col("price") * pl.col("volume")).sum())
        .with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    )


def test_two_days_two_markets_match_the_simulator_and_rebuild_replaces(sim, platform_env, settings, dagster_instance):
    platform_env(sim.env())
    instance = dagster_instance
    result = run_batch(DAYS, instance)
    assert result.success
    checks = checks_by_name(result)
    assert len(checks) == 11 and all(c.passed for c in checks.values()), {k: c.metadata for k, c in checks.items() if not c.passed}
    assert checks["silver/candles_1d:matches_1m"].metadata["day_candles_compared"].value == 4

    with lake.session(settings) as con:
        silver_1m = con.execute("SELECT exchange, market, ts, open, high, low, close, volume, quote_volume FROM silver.candles_1m").pl()
        silver_1d = con.execute("SELECT exchange, market, day, open, high, low, close, volume FROM silver.candles_1d ORDER BY ALL").pl()
        bronze_before = con.execute("SELECT unique_key, raw_json, api_params_json FROM bronze.candles_raw ORDER BY unique_key").pl()
        fear_greed = con.execute("SELECT day, value, classification FROM silver.fear_greed ORDER BY day").pl()

    for exchange, market in MARKETS.items():
        for day in DAYS:
            want = expected_minutes(sim, exchange, market, day)
            got = silver_1m.filter((pl.col("exchange") == exchange) & (pl.col("market") == market)
                                   & (pl.col("ts").dt.date() == day)).drop("exchange", "market").sort("ts")
            assert got["ts"].to_list() == want["ts"].to_list()  # same minutes: none invented, none lost
            for col in ("open", "high", "low", "close", "volume", "quote_volume"):
                assert got[col].to_list() == pytest.approx(want[col].to_list(), rel=1e-6), (exchange, day, col)
            day_row = silver_1d.filter((pl.col("market") == market) & (pl.col("day") == day)).row(0, named=True)
            assert day_row["open"] == want["open"][0] and day_row["close"] == want["close"][-1]
            assert day_row["volume"] == pytest.approx(want["volume"].sum(), rel=1e-6)
    assert fear_greed["day"].to_list() == DAYS and fear_greed["value"].is_between(0, 100).all()
    params = json.loads(bronze_before["api_params_json"][0])
    assert params["path"] in ("/v1/candles/minutes/1", "/v1/candles/days", "/api/v3/klines")

    # Rebuilding a day replaces its rows: same tables afterwards, never duplicates.
    again = run_batch(DAYS[:1], instance)
    assert again.success
    with lake.session(settings) as con:
        bronze_after = con.execute("SELECT unique_key, raw_json, api_params_json FROM bronze.candles_raw ORDER BY unique_key").pl()
        assert con.execute("SELECT count(*) FROM silver.candles_1m").fetchone()[0] == silver_1m.height
        runs = con.execute("SELECT day, count(DISTINCT ingest_run_id) FROM bronze.candles_raw GROUP BY day ORDER BY day").fetchall()
    assert bronze_after.equals(bronze_before)
    assert [r[1] for r in runs] == [1, 1]


def test_bad_rows_fail_the_right_checks_and_fill_dead_letters(sim, platform_env, settings, dagster_instance):
    every = 20  # the simulator's own switch: Upbit minute candles on every 20th minute come back with low above high
    sim.set_faults(rest_bad_candle_every=every)
    platform_env(sim.env())
    result = run_batch(DAYS[1:], dagster_instance)
    assert not result.success  # blocking checks failed
    checks = checks_by_name(result)
    failed = {name for name, c in checks.items() if not c.passed}
    assert failed == {"silver/candles_1m:dead_letter_rate"}
    # Blocking: candles_1d (checked against candles_1m) was not built on data that failed a blocking check.
    assert "silver/candles_1d:matches_1m" not in checks
    # Bad rows never reached silver, nothing was lost: silver + dead letters = what the exchange sent.
    assert checks["silver/candles_1m:ohlc_consistent"].passed and checks["silver/candles_1m:row_count"].passed
    rate = checks["silver/candles_1m:dead_letter_rate"]
    minutes = expected_minutes(sim, "upbit", MARKETS["upbit"], DAYS[1])["ts"]  # the minutes that have a candle
    corrupted = sum(1 for ts in minutes if int(ts.timestamp()) // 60 % every == 0)
    assert rate.metadata["dead_letters"].value == corrupted > 0
    assert rate.metadata["sample"].value[0]["error"] == "low above open/close"
    with lake.session(settings) as con:
        dead = con.execute("SELECT market, error, day FROM bronze.dead_letters WHERE source = 'silver.candles_1m'").fetchall()
    # Built anyway (outside the blocked run), the day candles fail their check on exactly the market that lost minutes.
    defs = load_code_location()
    forced = dg.materialize([defs.get_assets_def(["silver", "candles_1d"])], partition_key=str(DAYS[1]),
                            resources=defs.resources, raise_on_error=False)
    mismatch = checks_by_name(forced)["silver/candles_1d:matches_1m"]
    assert not mismatch.passed and [r["market"] for r in mismatch.metadata["sample"].value] == ["KRW-BTC"]
    assert len(dead) == corrupted and {(m, e, d) for m, e, d in dead} == {("KRW-BTC", "low above open/close", DAYS[1])}


@pytest.mark.sim_options(history_start="2025-09-01", seed=42, upbit_rate=3, upbit_ban_after=3)
def test_rate_limited_simulator_never_bans_us(sim, platform_env, settings, monkeypatch):
    platform_env(sim.env())
    monkeypatch.setenv("CRYPTOFLOW_UPBIT_MARKETS", "KRW-BTC,KRW-ETH,KRW-XRP")
    result = dg.materialize(
        [load_code_location().get_assets_def(["bronze", "candles_raw"])],
        partition_key=str(DAYS[1]),
        resources={"lake": LakeResource(), "upbit": UpbitResource(), "binance": BinanceResource(), "fear_greed": FearGreedResource()},
        run_config={"ops": {"bronze__candles_raw": {"config": {"markets": ["KRW-BTC", "KRW-ETH", "KRW-XRP"], "workers": 3}}}},
    )
    # A 418 would have raised BannedError and failed the run; three 429s in a row would have earned one here.
    assert result.success
    metadata = result.asset_materializations_for_node("bronze__candles_raw")[0].metadata
    assert metadata["responses_429"].value["upbit_429"] == 0
    assert metadata["requests"].value["upbit"] >= 3 * 9
    with lake.session(settings) as con:
        per_market = con.execute("SELECT market, count(*) FROM bronze.candles_raw GROUP BY market ORDER BY market").fetchall()
    assert [m for m, _ in per_market] == ["KRW-BTC", "KRW-ETH", "KRW-XRP"]  # the run config's subset, no Binance
    assert all(n > 1000 for _, n in per_market)
