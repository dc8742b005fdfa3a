"""GARCH(1,1) with Student-t errors on daily log returns, fitted with the ``arch`` package (ADR 0022).

Returns are multiplied by ``SCALE`` (100: percent) before fitting, as arch recommends: its optimizer is tuned for
variances of order 1-1000, and daily crypto returns (~0.02) would put omega near 1e-5, where the optimizer stops early
or arch warns (DataScaleWarning). Forecast variances are divided by SCALE^2 to get back to log-return units. The mean
is zero: a daily drift is tiny next to the daily sigma, and estimating it only adds noise to the variance.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

SCALE = 100.0
MIN_RETURNS = 100  # below ~100 daily returns GARCH-t's four parameters are not identified: the fit is noise
MAX_HORIZON = 5


@dataclass(frozen=True)
class GarchFit:
    params: dict[str, float]
    variance_path: np.ndarray  # forecast daily variances (log-return units) for the next MAX_HORIZON days

    def forecast(self, horizon: int) -> float:
        """Mean daily variance over the next ``horizon`` days."""
        return float(self.variance_path[:horizon].mean())


def model(returns: pd.Series):
    """arch's model object for these returns (log returns, unscaled): the one definition the fit and its check use."""
    from arch import arch_model  # imported when a fit runs, not when the code location loads

    return arch_model(returns.to_numpy() * SCALE, mean="Zero", vol="GARCH", p=1, q=1, dist="t")


def fit(returns: pd.Series) -> GarchFit | str:
    """Fit on ``returns`` (daily log returns in time order, the last one the day before the forecast day), or the
    reason there is no forecast."""
    returns = returns.dropna()
    if len(returns) < MIN_RETURNS:
        return f"{len(returns)} daily returns (< {MIN_RETURNS})"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = model(returns).fit(disp="off", show_warning=False)
    # arch's own warnings (ConvergenceWarning, DataScaleWarning, StartingValueWarning) say this fit is not to be
    # trusted: the forecast is skipped with the reason. Anyone else's (a library deprecation) is passed on as it was.
    own = [w for w in caught if w.category.__module__.startswith("arch")]
    for w in caught:
        if w not in own:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if result.convergence_flag != 0:
        return f"GARCH optimizer did not converge (flag {result.convergence_flag})"
    params = {k: float(v) for k, v in result.params.items()}
    if own:
        return "GARCH fit warned: " + "; ".join(sorted({" ".join(str(w.message).split())[:120] for w in own}))
    path = result.forecast(horizon=MAX_HORIZON, reindex=False).variance.to_numpy()[-1] / SCALE**2
    if not np.all(np.isfinite(path)) or np.any(path <= 0):
        return "GARCH forecast variance not finite and positive"
    return GarchFit({**params, "scale": SCALE, "loglik": float(result.loglikelihood)}, path)
