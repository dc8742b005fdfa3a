"""Every model's forecasts for one target day, from the days strictly before it: what one partition of
``gold.volatility_forecast`` holds per market (ADR 0022).

The cut is made here (:meth:`Realized.before`), not by the caller, so no caller can hand a model its own target day.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import date, timedelta

from cryptoflow_dagster.forecast import garch, har
from cryptoflow_dagster.forecast.evaluation import NAIVE
from cryptoflow_dagster.forecast.realized import Realized

HORIZONS = (1, 5)
MODELS = ("har_log", "har_level", "garch_t", NAIVE)


@dataclass(frozen=True)
class Forecast:
    model: str
    horizon_days: int
    variance: float  # mean daily variance over the horizon, log-return units
    train_start: date
    train_end: date
    params: dict


@dataclass
class DayForecasts:
    day: date
    forecasts: list[Forecast] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # "model h=N" -> why there is no forecast
    fit_seconds: dict[str, float] = field(default_factory=dict)  # "har" / "garch" -> wall time of the day's fits


def forecast_day(realized: Realized, day: date, min_train_days: int) -> DayForecasts:
    """Forecasts for ``day`` (horizons 1 and 5) from ``realized`` restricted to the days before ``day``."""
    out = DayForecasts(day)
    past = realized.before(day)
    rv = past.rv()
    have = rv.dropna()
    if have.empty:
        out.skipped = {f"{m} h={h}": "no realized variance before the day" for m in MODELS for h in HORIZONS}
        return out
    last = rv.index[-1]
    start, end = have.index[0], last
    if math.isnan(rv.iloc[-1]) or (day - last).days != 1:
        reason = f"no realized variance for the day before ({day - timedelta(days=1)})"
        out.skipped = {f"{m} h={h}": reason for m in MODELS for h in HORIZONS}
        return out
    for h in HORIZONS:
        out.forecasts.append(Forecast(NAIVE, h, float(rv.iloc[-1]), last, last, {"rv_last": float(rv.iloc[-1])}))
    if len(have) < min_train_days:
        reason = f"{len(have)} days of realized variance (< {min_train_days}, CRYPTOFLOW_FORECAST_MIN_TRAIN_DAYS)"
        out.skipped.update({f"{m} h={h}": reason for m in MODELS if m != NAIVE for h in HORIZONS})
        return out

    began = time.perf_counter()
    for variant in har.VARIANTS:
        for h in HORIZONS:
            fitted = har.fit(rv, h, variant)
            result = har.forecast(rv, fitted) if isinstance(fitted, har.HarFit) else fitted
            if isinstance(result, str):
                out.skipped[f"har_{variant} h={h}"] = result
            else:
                out.forecasts.append(Forecast(f"har_{variant}", h, result[0], start, end, result[1]))
    out.fit_seconds["har"] = time.perf_counter() - began

    began = time.perf_counter()
    ret = past.ret()
    if math.isnan(ret.iloc[-1]):
        fitted = f"no daily return for {last}"
    else:
        fitted = garch.fit(ret)
    out.fit_seconds["garch"] = time.perf_counter() - began
    for h in HORIZONS:
        if isinstance(fitted, str):
            out.skipped[f"garch_t h={h}"] = fitted
        else:
            first_ret = ret.dropna().index[0]
            out.forecasts.append(Forecast("garch_t", h, fitted.forecast(h), first_ret, end, fitted.params))
    return out

