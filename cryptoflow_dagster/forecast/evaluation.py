"""Out-of-sample evaluation: QLIKE and MSE of variance forecasts against realized variance, ratios to the naive
forecast, and the Diebold-Mariano test against it (ADR 0022).

- QLIKE(y, f) = y/f - ln(y/f) - 1 (Patton 2011's form: 0 for a perfect forecast, >= 0 otherwise). QLIKE and MSE are
  the two losses whose ranking of forecasts survives a noisy proxy (RV) for the true variance (Patton 2011).
- The forecast for day D and horizon h is judged against mean(RV_D..RV_{D+h-1}); it counts only once all h days have
  RV (and once ``as_of`` is past them).
- Diebold-Mariano on d_t = L(model) - L(naive) over the days both have: DM = mean(d) / sqrt(V / T), V the Newey-West
  (Bartlett) long-run variance with lag h-1 (h-step forecasts overlap, so their loss differences are MA(h-1); the
  Bartlett weights keep V positive where DM's original rectangular window can go negative). Harvey, Leybourne and
  Newbold's (1997) small-sample correction multiplies it by sqrt((T + 1 - 2h + h(h-1)/T) / T) and compares it to a
  Student t with T-1 degrees of freedom; the p-value is two-sided. Negative DM: the model's loss is lower.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from scipy import stats

NAIVE = "naive"
MIN_DM_PAIRS = 10  # fewer paired losses than this: the DM statistic and p-value are left empty (null)


def qlike(realized: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    ratio = np.asarray(realized, dtype=float) / np.asarray(forecast, dtype=float)
    return ratio - np.log(ratio) - 1.0


def mse(realized: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    return (np.asarray(realized, dtype=float) - np.asarray(forecast, dtype=float)) ** 2


def newey_west_variance(d: np.ndarray, lags: int) -> float:
    """Long-run variance of ``d`` with Bartlett weights 1 - k/(lags+1), autocovariances divided by T."""
    d = np.asarray(d, dtype=float)
    e = d - d.mean()
    t = len(e)
    v = e @ e / t
    for k in range(1, lags + 1):
        v += 2 * (1 - k / (lags + 1)) * (e[k:] @ e[:-k]) / t
    return float(v)


def diebold_mariano(d: np.ndarray, horizon: int) -> tuple[float, float] | None:
    """(HLN-corrected DM statistic, two-sided p-value) of loss differences ``d``; None if too few or all equal."""
    d = np.asarray(d, dtype=float)
    t = len(d)
    if t < MIN_DM_PAIRS:
        return None
    v = newey_west_variance(d, horizon - 1)
    if not v > 0:
        return None
    dm = d.mean() / np.sqrt(v / t)
    hln = dm * np.sqrt((t + 1 - 2 * horizon + horizon * (horizon - 1) / t) / t)
    return float(hln), float(2 * stats.t.sf(abs(hln), df=t - 1))


def realized_targets(rv: pd.Series, horizon: int) -> pd.Series:
    """mean(RV_D..RV_{D+h-1}) for each day D of a contiguous daily RV series; NaN unless all h days have RV."""
    return rv.rolling(horizon, min_periods=horizon).mean().shift(-(horizon - 1))


@dataclass(frozen=True)
class Score:
    model: str
    horizon: int
    n: int
    qlike: float
    mse: float
    qlike_ratio: float | None
    mse_ratio: float | None
    dm_stat: float | None  # QLIKE loss differences against naive
    dm_pvalue: float | None
    dm_stat_mse: float | None
    dm_pvalue_mse: float | None


def evaluate(forecasts: pd.DataFrame, rv: pd.Series, as_of: date | None = None) -> list[Score]:
    """Scores per (model, horizon) of ``forecasts`` (columns day, model, horizon_days, forecast_variance) against the
    contiguous daily RV series ``rv``, using only targets that end by ``as_of``. Ratios and DM compare each model with
    naive on the days both forecast."""
    if as_of is not None:
        rv = rv.loc[rv.index <= as_of]
    scores = []
    for horizon, group in forecasts.groupby("horizon_days"):
        target = realized_targets(rv, int(horizon))
        table = group.pivot_table(index="day", columns="model", values="forecast_variance", aggfunc="last")
        table = table.join(target.rename("_y"), how="inner").dropna(subset=["_y"])
        for name in sorted(c for c in table.columns if c != "_y"):
            paired = name != NAIVE and NAIVE in table.columns
            # a model is scored on the days naive also forecast, so its losses and ratios cover the same targets
            rows = table[[name, NAIVE, "_y"] if paired else [name, "_y"]].dropna()
            if rows.empty:
                continue
            y = rows["_y"].to_numpy()
            lq, ls = qlike(y, rows[name]), mse(y, rows[name])
            score = dict(model=name, horizon=int(horizon), n=len(rows), qlike=float(lq.mean()), mse=float(ls.mean()),
                         qlike_ratio=None, mse_ratio=None, dm_stat=None, dm_pvalue=None, dm_stat_mse=None,
                         dm_pvalue_mse=None)
            if paired:
                lq_n, ls_n = qlike(y, rows[NAIVE]), mse(y, rows[NAIVE])
                score["qlike_ratio"] = float(lq.mean() / lq_n.mean())
                score["mse_ratio"] = float(ls.mean() / ls_n.mean())
                dm_q, dm_s = diebold_mariano(lq - lq_n, int(horizon)), diebold_mariano(ls - ls_n, int(horizon))
                if dm_q:
                    score["dm_stat"], score["dm_pvalue"] = dm_q
                if dm_s:
                    score["dm_stat_mse"], score["dm_pvalue_mse"] = dm_s
            scores.append(Score(**score))
    return scores
