"""The volatility forecast assets on a real lake in tmp_path with a real Dagster instance: a three-day run (one
backfill run's range) writes forecasts for every market, the asset checks pass, bad bars become skipped days in the
metadata (never NaN rows), the evaluation asset scores the stored forecasts, and the finite/positive check fails on a
corrupt row."""

import json
import math
from datetime import date, datetime, timedelta, timezone

import dagster as dg
import numpy as np
import polars as pl
import pytest

from cryptoflow_dagster import lake
from cryptoflow_dagster.defs.gold.forecast import VOL_EVAL, VOL_FORECAST, forecast_assets
from cryptoflow_dagster.forecast import lake_io, verify
from cryptoflow_dagster.forecast.daily import DayForecasts, Forecast
from cryptoflow_dagster.resources import LakeResource

FIRST, LAST = date(2025, 10, 2), date(2025, 10, 4)
SIM_START, SIM_DAYS = date(2025, 6, 1), 126  # through 2025-10-04
BAD_DAY = date(2025, 9, 15)  # the simulated market's NaN close


def _frame(market: str, ts, close) -> pl.DataFrame:
    ts = pl.Series("ts", ts).dt.replace_time_zone("UTC") if pl.Series(ts).dtype.time_zone is None else pl.Series("ts", ts)
    return pl.DataFrame({"exchange": "upbit", "market": market, "ts": ts, "open": close, "high": close, "low": close,
                         "close": close, "volume": 1.0, "quote_volume": close}).with_columns(day=pl.col("ts").dt.date())


def _simulated_minutes() -> pl.DataFrame:
    """A GARCH(1,1) day-variance path spread over 1-minute returns (seeded): long enough for GARCH's 100 returns,
    which the 34 recorded days are not."""
    rng = np.random.default_rng(19)
    var, sigma2 = [], 4e-4
    for _ in range(SIM_DAYS):
        var.append(sigma2)
        day_return = rng.standard_normal() * math.sqrt(sigma2)
        sigma2 = 2e-5 + 0.1 * day_return**2 + 0.85 * sigma2
    per_minute = np.repeat(np.sqrt(np.array(var) / 1440), 1440)
    close = 1e8 * np.exp(np.cumsum(rng.standard_normal(len(per_minute)) * per_minute))
    start = datetime(SIM_START.year, SIM_START.month, SIM_START.day)
    ts = pl.datetime_range(start, start + timedelta(minutes=len(close) - 1), "1m", eager=True)
    close[(BAD_DAY - SIM_START).days * 1440 + 700] = float("nan")
    return _frame("KRW-SIM", ts, close)


@pytest.fixture
def forecast_lake(settings, recorded_data, monkeypatch):
    monkeypatch.setenv("CRYPTOFLOW_FORECAST_MIN_TRAIN_DAYS", "100")
    real = []
    for market in ("KRW-BTC", "KRW-ETH"):
        csv = pl.read_csv(recorded_data / "upbit" / f"{market}_1m_2025-09-01_2025-10-04.csv", try_parse_dates=True)
        real.append(_frame(market, csv["timestamp"], csv["close"]))
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        lake.write(con, lambda c: lake.insert(c, "silver.candles_1m", pl.concat([*real, _simulated_minutes()])))
    return settings


def _run_range(assets, instance, first: date, last: date) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, resources={"lake": LakeResource()}, instance=instance, raise_on_error=False,
                          tags={"dagster/asset_partition_range_start": first.isoformat(),
                                "dagster/asset_partition_range_end": last.isoformat()})


def test_forecast_and_eval_assets_on_a_real_lake(forecast_lake, dagster_instance):
    settings = forecast_lake
    forecast, evaluation = forecast_assets(settings)
    result = _run_range([forecast], dagster_instance, FIRST, LAST)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {"finite_positive", "no_look_ahead", "har_matches_ols", "garch_matches_arch"}
    assert all(e.passed for e in checks.values()), {n: e.metadata for n, e in checks.items()}
    # the checks compared something: the simulated market has HAR and GARCH fits, and the run's last day has bars
    assert checks["har_matches_ols"].metadata["fits_compared"].value == 4
    assert checks["garch_matches_arch"].metadata["fits_compared"].value == 1
    assert checks["no_look_ahead"].metadata["forecasts_compared"].value == 8 + 2 + 2

    metadata = result.get_asset_materialization_events()[-1].materialization.metadata
    assert metadata["markets"].value == 3 and metadata["days"].value == 3
    assert metadata["garch_fits"].value == 3  # the simulated market, one refit per day
    skipped = metadata["skipped_on_last_day"].value
    # the recorded markets have 33 days: naive only, and the metadata says why the others are missing
    assert skipped["upbit/KRW-BTC"]["garch_t h=1"].startswith("33 days of realized variance (< 100")
    assert "upbit/KRW-SIM" not in skipped
    assert metadata["days_without_rv"].value["upbit/KRW-SIM"] == {
        BAD_DAY.isoformat(): "1 bar(s) with a close that is not a finite positive price"}

    with lake.session(settings, read_only=True) as con:
        rows = con.execute("SELECT market, day, model, horizon_days, forecast_vol, forecast_variance, train_end, "
                           "params_json FROM gold.volatility_forecast ORDER BY ALL").fetchall()
    assert len(rows) == 3 * (8 + 2 + 2)
    assert all(math.isfinite(r[4]) and r[4] > 0 and r[4] ** 2 == pytest.approx(r[5]) and r[6] < r[1] for r in rows)
    sim = {(r[1], r[2], r[3]): r for r in rows if r[0] == "KRW-SIM"}
    assert {m for _, m, _ in sim} == {"har_log", "har_level", "garch_t", "naive"}
    # the expanding window: each day's HAR was fitted on one more row than the day before's
    har_rows = [json.loads(sim[(FIRST + timedelta(days=i), "har_log", 1)][7])["rows"] for i in range(3)]
    assert har_rows[1] == har_rows[0] + 1 and har_rows[2] == har_rows[1] + 1

    # the evaluation of as_of 2025-10-04 scores the forecasts whose targets ended by then
    scored = _run_range([evaluation], dagster_instance, LAST, LAST)
    assert scored.success and all(e.passed for e in scored.get_asset_check_evaluations())
    with lake.session(settings, read_only=True) as con:
        scores = con.execute("SELECT market, model, horizon_days, n, qlike, qlike_ratio FROM gold.volatility_forecast_eval "
                             "WHERE as_of = ? ORDER BY ALL", [LAST]).fetchall()
    by_key = {(m, model, h): (n, q, ratio) for m, model, h, n, q, ratio in scores}
    # 2025-10-04 of the recorded markets has 80 bars (skipped): only targets 10-02 and 10-03 count at h=1
    assert by_key[("KRW-BTC", "naive", 1)][0] == 2
    assert by_key[("KRW-SIM", "har_log", 1)][0] == 3 and by_key[("KRW-SIM", "har_log", 1)][2] > 0
    assert ("KRW-SIM", "har_log", 5) not in by_key  # no five-day target has ended yet
    md = scored.get_asset_materialization_events()[0].materialization.metadata["loss_ratios_vs_naive"].value
    assert "| upbit/KRW-SIM | har_log | 1 | 3 |" in md


def test_finite_positive_check_fails_on_a_corrupt_row(settings):
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        good = DayForecasts(FIRST, [Forecast("naive", 1, 1e-4, FIRST - timedelta(days=1), FIRST - timedelta(days=1), {})])
        lake_io.write_forecasts(con, FIRST, lake_io.forecast_frame("upbit", "KRW-BTC", good, datetime.now(timezone.utc)))
        assert verify.finite_positive(con, FIRST, FIRST).passed
        # a row no forecast code would write (NaN and a negative variance): the check must catch it
        con.execute("INSERT INTO gold.volatility_forecast (exchange, market, day, model, horizon_days, forecast_vol, "
                    "forecast_variance, made_at) VALUES ('upbit', 'KRW-ETH', ?, 'har_log', 1, 'NaN'::DOUBLE, 'NaN'::DOUBLE, "
                    "now()), ('upbit', 'KRW-ETH', ?, 'har_level', 1, 0.01, -0.0001, now())", [FIRST, FIRST])
        outcome = verify.finite_positive(con, FIRST, FIRST)
    assert not outcome.passed and outcome.metadata["offending_rows"] == 2
    assert {o["model"] for o in outcome.offending} == {"har_log", "har_level"}
    # and the writer refuses a non-finite forecast outright rather than storing it
    bad = DayForecasts(FIRST, [Forecast("har_log", 1, float("nan"), FIRST, FIRST, {})])
    with pytest.raises(ValueError, match="har_log h=1: variance nan"):
        lake_io.forecast_frame("upbit", "KRW-ETH", bad, datetime.now(timezone.utc))


def test_the_forecast_partition_reads_the_day_before(settings):
    forecast, _ = forecast_assets(settings)
    dep = forecast.get_partition_mapping(dg.AssetKey(["silver", "candles_1m"]))
    assert isinstance(dep, dg.TimeWindowPartitionMapping) and (dep.start_offset, dep.end_offset) == (-1, -1)
    assert VOL_FORECAST in forecast.keys and VOL_EVAL not in forecast.keys
