"""Volatility forecasts, pure logic (cryptoflow_dagster/forecast): realized variance from real recorded bars, HAR
against statsmodels' OLS, GARCH against a direct arch fit, Diebold-Mariano against a hand computation and statsmodels'
HAC, QLIKE/MSE on known values, no look-ahead, and what bad input does."""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from arch import arch_model

from cryptoflow_dagster.forecast import garch, har
from cryptoflow_dagster.forecast.daily import forecast_day
from cryptoflow_dagster.forecast.evaluation import diebold_mariano, evaluate, mse, newey_west_variance, qlike
from cryptoflow_dagster.forecast.realized import daily_realized

HOUR, MINUTE = timedelta(hours=1), timedelta(minutes=1)


@pytest.fixture(scope="module")
def hourly(recorded_data):
    bars = pd.read_csv(recorded_data / "upbit" / "KRW-BTC_1h_2022-01-01_2025-09-29.csv").rename(columns={"timestamp": "ts"})
    return bars, daily_realized(bars, HOUR)


@pytest.fixture(scope="module")
def minutes(recorded_data):
    return pd.read_csv(recorded_data / "upbit" / "KRW-BTC_1m_2025-09-01_2025-10-04.csv").rename(columns={"timestamp": "ts"})


def test_realized_variance_is_the_sum_of_squared_returns_including_midnight(minutes):
    realized = daily_realized(minutes, MINUTE)
    closes = minutes.assign(ts=pd.to_datetime(minutes["ts"], utc=True)).set_index("ts")["close"]
    r = np.log(closes).diff()
    day = date(2025, 9, 10)
    in_day = r[(r.index >= pd.Timestamp(day, tz="UTC")) & (r.index < pd.Timestamp(day + timedelta(days=1), tz="UTC"))]
    assert len(in_day) == 1440  # the 00:00 bar's return from 09-09 23:59 is the day's
    assert realized.rv()[day] == pytest.approx(float((in_day**2).sum()), rel=1e-12)
    # 2025-09-03 misses a minute: the return across it spans two minutes and is kept (1,439 returns, no skip)
    assert realized.days.loc[date(2025, 9, 3), "returns"] == 1439
    # the daily return is the sum of the day's returns: last close over the previous day's last close
    assert realized.ret()[day] == pytest.approx(float(in_day.sum()), rel=1e-9)
    # 2025-10-04 has 80 bars: skipped, with the reason
    assert np.isnan(realized.rv()[date(2025, 10, 4)])
    assert "80 of 1440 returns" in realized.skipped[date(2025, 10, 4)]


def test_hourly_history_keeps_its_gap_days(hourly):
    _, realized = hourly
    assert realized.skipped == {}
    assert realized.rv().notna().all() and (realized.rv() > 0).all()
    # 2023-12-03 lost 5 hours (a 6-hour span): 19 returns, the gap return kept
    assert realized.days.loc[date(2023, 12, 3), "returns"] == 19


def test_bad_bars_skip_their_day_with_a_reason_and_never_give_nan_forecasts(minutes):
    bars = minutes.copy()
    bad_day = "2025-09-20"
    rows = bars.index[bars["ts"].str.startswith(bad_day)]
    bars.loc[rows[10], "close"] = 0.0
    bars.loc[rows[11], "close"] = -5.0
    bars.loc[rows[12], "close"] = np.nan
    thin_day = "2025-09-21"
    bars = bars.drop(bars.index[bars["ts"].str.startswith(thin_day)][100:])  # 100 bars left
    realized = daily_realized(bars, MINUTE)
    assert "3 bar(s) with a close that is not a finite positive price" == realized.skipped[date(2025, 9, 20)]
    assert "of 1440 returns" in realized.skipped[date(2025, 9, 21)]
    # the day after a skipped day has no forecast at all, and says why
    result = forecast_day(realized, date(2025, 9, 22), min_train_days=23)
    assert result.forecasts == []
    assert set(result.skipped.values()) == {"no realized variance for the day before (2025-09-21)"}
    # a day whose price never moves
    flat = minutes[minutes["ts"].str.startswith("2025-09-05")].assign(close=100.0)
    assert daily_realized(flat, MINUTE).skipped == {date(2025, 9, 5): "the price did not move all day (RV = 0)"}
    with pytest.raises(ValueError, match="same timestamp twice"):
        daily_realized(pd.concat([minutes.head(3), minutes.head(1)]), MINUTE)


def _independent_har_design(rv: pd.Series, h: int, log: bool) -> tuple[np.ndarray, np.ndarray]:
    """HAR rows built with plain loops over a gap-free series (the recorded hourly history has none)."""
    v = rv.to_numpy()
    x, y = [], []
    for t in range(21, len(v) - h):
        row = [v[t], v[t - 4:t + 1].mean(), v[t - 21:t + 1].mean()]
        target = v[t + 1:t + 1 + h].mean()
        x.append(np.log(row) if log else row)
        y.append(np.log(target) if log else target)
    return sm.add_constant(np.array(x)), np.array(y)


@pytest.mark.parametrize("variant, h", [("log", 1), ("log", 5), ("level", 1), ("level", 5)])
def test_har_coefficients_equal_statsmodels_ols_on_real_data(hourly, variant, h):
    _, realized = hourly
    rv = realized.before(date(2024, 6, 1)).rv()
    fitted = har.fit(rv, h, variant)
    x, y = _independent_har_design(rv, h, variant == "log")
    reference = sm.OLS(y, x).fit()
    assert fitted.rows == len(y)
    np.testing.assert_allclose(fitted.coef, reference.params, rtol=1e-8, atol=1e-12)
    assert fitted.resid_var == pytest.approx(reference.mse_resid, rel=1e-8)
    # the forecast: the fitted line at the last day, with the log-normal correction for the log variant
    value, params = har.forecast(rv, fitted)
    last = [rv.iloc[-1], rv.iloc[-5:].mean(), rv.iloc[-22:].mean()]
    if variant == "log":
        expected = np.exp(reference.params @ np.r_[1.0, np.log(last)] + reference.mse_resid / 2)
    else:
        expected = reference.params @ np.r_[1.0, last]
    assert value == pytest.approx(expected, rel=1e-8) and value > 0
    assert params["beta_d"] == pytest.approx(reference.params[1], rel=1e-8)


def test_garch_parameters_equal_a_direct_arch_fit(hourly):
    _, realized = hourly
    returns = realized.before(date(2024, 1, 1)).ret()
    fitted = garch.fit(returns)
    direct = arch_model(returns.dropna().to_numpy() * 100, mean="Zero", vol="GARCH", p=1, q=1, dist="t").fit(disp="off")
    for name, value in direct.params.items():
        assert fitted.params[name] == pytest.approx(value, rel=1e-6)
    path = direct.forecast(horizon=5, reindex=False).variance.to_numpy()[-1] / 100**2
    assert fitted.forecast(1) == pytest.approx(path[0], rel=1e-8)
    assert fitted.forecast(5) == pytest.approx(path.mean(), rel=1e-8)
    # the one-step variance is GARCH's recursion from the last return and conditional variance
    omega, alpha, beta = direct.params["omega"], direct.params["alpha[1]"], direct.params["beta[1]"]
    last_r = returns.dropna().to_numpy()[-1] * 100
    expected = (omega + alpha * last_r**2 + beta * direct.conditional_volatility[-1] ** 2) / 100**2
    assert fitted.forecast(1) == pytest.approx(expected, rel=1e-6)
    assert garch.fit(returns.iloc[1:51]) == "50 daily returns (< 100)"  # (the first day has no return)
    # unscaled returns (what x100 avoids) make arch warn: the forecast is skipped with arch's reason, not kept
    assert garch.fit(returns / 100).startswith("GARCH fit warned: y is poorly scaled")


def test_no_look_ahead_the_target_day_does_not_matter_and_the_day_before_does(hourly):
    bars, _ = hourly
    target = date(2024, 3, 15)
    base = forecast_day(daily_realized(bars, HOUR), target, min_train_days=365)
    assert {(f.model, f.horizon_days) for f in base.forecasts} == {
        (m, h) for m in ("har_log", "har_level", "garch_t", "naive") for h in (1, 5)}
    assert all(f.train_end < target for f in base.forecasts)

    def changed(day: date, factor: float) -> dict:
        moved = bars.copy()
        rows = moved["ts"].str.startswith(day.isoformat())
        # a wild day: every close of it scaled up and down in turn
        moved.loc[rows, "close"] *= np.where(np.arange(rows.sum()) % 2, factor, 1 / factor)
        result = forecast_day(daily_realized(moved, HOUR), target, min_train_days=365)
        return {(f.model, f.horizon_days): f.variance for f in result.forecasts}

    before = {(f.model, f.horizon_days): f.variance for f in base.forecasts}
    assert changed(target, 1.2) == before  # its own day (and later ones) are not seen
    assert changed(target + timedelta(days=3), 1.2) == before
    after = changed(target - timedelta(days=1), 1.2)
    assert all(after[k] != before[k] for k in before)  # every model uses the day before


def test_qlike_and_mse_on_known_values():
    y, f = np.array([2.0, 1.0, 4.0]), np.array([1.0, 1.0, 2.0])
    np.testing.assert_allclose(qlike(y, f), [2 - np.log(2) - 1, 0.0, 2 - np.log(2) - 1])
    np.testing.assert_allclose(mse(y, f), [1.0, 0.0, 4.0])
    assert qlike(np.array([1.0]), np.array([2.0]))[0] == pytest.approx(0.5 + np.log(2) - 1)  # under-forecast costs more
    assert qlike(np.array([2.0]), np.array([1.0]))[0] > qlike(np.array([1.0]), np.array([2.0]))[0]


def test_diebold_mariano_by_hand_and_against_statsmodels_hac():
    d = np.array([0.5, -0.2, 0.3, 0.1, 0.4, -0.1, 0.2, 0.6, -0.3, 0.2, 0.1, 0.3])
    t, h = len(d), 3
    # by hand: autocovariances over T, Bartlett weights 1 - k/h for k = 1..h-1
    e = d - d.mean()
    g = [sum(e[i] * e[i - k] for i in range(k, t)) / t for k in range(h)]
    v = g[0] + 2 * ((1 - 1 / 3) * g[1] + (1 - 2 / 3) * g[2])
    assert newey_west_variance(d, h - 1) == pytest.approx(v, rel=1e-12)
    raw = d.mean() / np.sqrt(v / t)
    hac = sm.OLS(d, np.ones(t)).fit(cov_type="HAC", cov_kwds={"maxlags": h - 1, "use_correction": False})
    assert raw == pytest.approx(hac.tvalues[0], rel=1e-10)
    stat, p = diebold_mariano(d, h)
    from scipy import stats

    expected = raw * np.sqrt((t + 1 - 2 * h + h * (h - 1) / t) / t)
    assert stat == pytest.approx(expected, rel=1e-12)
    assert p == pytest.approx(2 * stats.t.sf(abs(expected), df=t - 1), rel=1e-12)
    assert diebold_mariano(d[:9], 1) is None  # too few pairs
    assert diebold_mariano(np.zeros(20), 1) is None  # no variance: no statistic


def test_evaluation_pairs_each_model_with_naive_on_the_same_days():
    days = [date(2025, 1, 1) + timedelta(days=i) for i in range(30)]
    rv = pd.Series(np.linspace(1.0, 2.0, 30), index=days)
    rows = []
    for i, day in enumerate(days):
        rows.append({"day": day, "model": "naive", "horizon_days": 1, "forecast_variance": rv.iloc[i - 1] if i else 1.0})
        if i >= 10:  # the model starts later: only these days count for it and for its ratio
            rows.append({"day": day, "model": "perfect", "horizon_days": 1, "forecast_variance": rv.iloc[i]})
    scores = {s.model: s for s in evaluate(pd.DataFrame(rows), rv)}
    assert scores["naive"].n == 30 and scores["perfect"].n == 20
    assert scores["perfect"].qlike == 0 and scores["perfect"].qlike_ratio == 0
    # as_of cuts the targets: a forecast counts only once its day has RV
    assert {s.model: s.n for s in evaluate(pd.DataFrame(rows), rv, as_of=days[14])} == {"naive": 15, "perfect": 5}
