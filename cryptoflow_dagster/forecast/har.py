"""HAR-RV (Corsi 2009): next-day or next-week realized variance regressed on the last day's, week's and month's RV,
by OLS on an expanding window (ADR 0022).

At day t the regressors are RV_d = RV_t, RV_w = mean(RV_{t-4..t}), RV_m = mean(RV_{t-21..t}); the target for horizon
h is mean(RV_{t+1..t+h}) (h = 1: tomorrow; h = 5: the mean of the next five days). Two variants:

- ``level``: RV target on RV regressors. A forecast at or below zero (possible: OLS is unconstrained) is floored at
  the smallest target of the training sample, and ``floored`` is set in its parameters.
- ``log``: log target on log regressors (Corsi's own choice for RV's skew). Going back to variance, exp(x'b) is the
  conditional *median*; QLIKE and MSE are minimized by the conditional *mean*, so the forecast is
  exp(x'b + s^2 / 2), s^2 the residual variance (SSR / (n - 4)): the log-normal correction, applied always.

A skipped day (realized.py) is NaN: a weekly or monthly mean uses the window's available days if at least half are
there, a row whose RV_d or any target day is missing is not a training row, and a forecast needs RV of its last day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

WEEK, MONTH = 5, 22
MIN_ROWS = 10  # below this an OLS with 4 coefficients has next to no residual degrees of freedom
VARIANTS = ("log", "level")


@dataclass(frozen=True)
class HarFit:
    variant: str
    horizon: int
    coef: np.ndarray  # const, d, w, m
    resid_var: float
    rows: int

    def params(self) -> dict[str, float | int]:
        names = ("const", "beta_d", "beta_w", "beta_m")
        return {**{n: float(c) for n, c in zip(names, self.coef)}, "resid_var": self.resid_var, "rows": self.rows}


def features(rv: pd.Series) -> pd.DataFrame:
    """RV_d, RV_w, RV_m at each day of a contiguous daily RV series; NaN where the day has no RV or the windows are
    not yet full (the first 21 days) or less than half present."""
    d = rv
    w = rv.rolling(WEEK, min_periods=(WEEK + 1) // 2).mean()
    m = rv.rolling(MONTH, min_periods=(MONTH + 1) // 2).mean()
    frame = pd.DataFrame({"d": d, "w": w, "m": m})
    frame.iloc[: MONTH - 1] = np.nan
    return frame.where(d.notna())


def target(rv: pd.Series, horizon: int) -> pd.Series:
    """mean(RV_{t+1..t+h}) at each day t; NaN unless all h days have RV."""
    return rv.rolling(horizon, min_periods=horizon).mean().shift(-horizon)


def design(rv: pd.Series, horizon: int, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """(X with a constant column, y) of every complete training row of ``rv`` (the caller passes only days before the
    forecast day, so every target lies before it too)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown HAR variant {variant!r}: expected one of {VARIANTS}")
    frame = features(rv).assign(y=target(rv, horizon)).dropna()
    x = frame[["d", "w", "m"]].to_numpy()
    y = frame["y"].to_numpy()
    if variant == "log":
        x, y = np.log(x), np.log(y)
    return np.column_stack([np.ones(len(y)), x]), y


def fit(rv: pd.Series, horizon: int, variant: str) -> HarFit | str:
    """OLS fit on all training rows, or the reason there is none."""
    x, y = design(rv, horizon, variant)
    if len(y) < MIN_ROWS:
        return f"{len(y)} complete HAR rows (< {MIN_ROWS})"
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    return HarFit(variant, horizon, coef, float(resid @ resid / (len(y) - x.shape[1])), len(y))


def forecast(rv: pd.Series, har: HarFit) -> tuple[float, dict] | str:
    """The variance forecast for the day after ``rv``'s last day (mean daily variance over the fit's horizon), with
    its parameters, or the reason there is none."""
    last = features(rv).iloc[-1]
    if last.isna().any():
        return f"no HAR regressors on {rv.index[-1]} (its RV is missing or the month window is too thin)"
    x = np.array([1.0, last["d"], last["w"], last["m"]])
    params = har.params()
    if har.variant == "log":
        return float(np.exp(np.log(x[1:]) @ har.coef[1:] + har.coef[0] + har.resid_var / 2)), params
    value = float(x @ har.coef)
    if value <= 0:
        _, y = design(rv, har.horizon, "level")
        return float(y.min()), {**params, "floored": True, "unfloored": value}
    return value, params
