"""What the forecast asset checks measure (ADR 0022): each returns a ``quality.Outcome`` with numbers and a sample of
offending rows. The Dagster wiring is in defs/gold/forecast.py.

- :func:`finite_positive`: every stored forecast is a finite, positive variance with vol = sqrt(variance).
- :func:`no_look_ahead`: every stored forecast was trained on days before its target (``train_end < day``), and the
  forecasts the asset made from bars that include the target day equal forecasts recomputed from bars cut off at the
  target day's 00:00 by the query itself: if a model saw its own day, the two differ.
- :func:`har_matches_ols`: the stored HAR coefficients equal statsmodels' OLS on the same training rows (1e-8).
- :func:`garch_matches_arch`: the stored GARCH parameters equal a direct ``arch`` fit of the same returns.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import duckdb
import numpy as np

from cryptoflow_dagster.batch.quality import SAMPLE, Outcome
from cryptoflow_dagster.forecast import garch, har
from cryptoflow_dagster.forecast.daily import DayForecasts
from cryptoflow_dagster.forecast.realized import Realized

HAR_TOL = 1e-8
GARCH_RTOL = 1e-6


def finite_positive(con: duckdb.DuckDBPyConnection, first: date, last: date) -> Outcome:
    sql = (
        "SELECT exchange, market, day, model, horizon_days, forecast_vol, forecast_variance "
        "FROM gold.volatility_forecast WHERE day BETWEEN ? AND ? AND NOT (isfinite(forecast_variance) "
        "AND isfinite(forecast_vol) AND forecast_variance > 0 AND forecast_vol > 0 "
        "AND abs(forecast_vol * forecast_vol - forecast_variance) <= 1e-9 * forecast_variance)"
    )
    params = [first, last]
    # offending rows are fetched whole: there are none unless something is broken
    rows = con.execute(sql, params).fetchall()
    count = len(rows)
    scanned = con.execute("SELECT count(*) FROM gold.volatility_forecast WHERE day BETWEEN ? AND ?", params).fetchone()[0]
    names = ("exchange", "market", "day", "model", "horizon_days", "forecast_vol", "forecast_variance")
    sample = [dict(zip(names, (v if isinstance(v, (int, float)) else str(v) for v in row))) for row in rows[:SAMPLE]]
    return Outcome(count == 0, {"offending_rows": count, "rows_scanned": scanned}, sample)


def _key(f) -> tuple[str, int]:
    return f.model, f.horizon_days


def no_look_ahead(con: duckdb.DuckDBPyConnection, first: date, last: date,
                  made: dict[tuple[str, str], DayForecasts], recomputed: dict[tuple[str, str], DayForecasts]) -> Outcome:
    """``made``: the asset's forecasts for ``last`` per market, from bars that include ``last`` where the lake has
    them; ``recomputed``: the same from bars read strictly before ``last``."""
    late = con.execute(
        "SELECT count(*) FROM gold.volatility_forecast WHERE day BETWEEN ? AND ? AND NOT (train_end < day)", [first, last]
    ).fetchone()[0]
    offending: list[dict[str, Any]] = []
    compared = 0
    for market, result in made.items():
        stored = {_key(f): f.variance for f in result.forecasts}
        again = {_key(f): f.variance for f in recomputed[market].forecasts}
        # both ways: a model that forecast only with (or only without) the day's bars saw the day too
        for key in sorted(stored.keys() | again.keys()):
            compared += 1
            mine, other = stored.get(key), again.get(key)
            if mine is None or other is None or not np.isclose(mine, other, rtol=1e-12, atol=0):
                offending.append({"market": "/".join(market), "model": key[0], "horizon_days": key[1],
                                  "made": mine, "from_bars_before_day": other})
    return Outcome(late == 0 and not offending,
                   {"rows_trained_on_their_day": late, "forecasts_compared": compared, "differing": len(offending)},
                   offending[:SAMPLE])


def har_matches_ols(day: date, made: dict[tuple[str, str], DayForecasts], realized: dict[tuple[str, str], Realized]
                    ) -> Outcome:
    import statsmodels.api as sm  # imported when the check runs, not when the code location loads

    offending: list[dict[str, Any]] = []
    compared = 0
    for market, result in made.items():
        rv = realized[market].before(day).rv()
        for f in result.forecasts:
            if not f.model.startswith("har_"):
                continue
            x, y = har.design(rv, f.horizon_days, f.model.removeprefix("har_"))
            reference = sm.OLS(y, x).fit().params
            stored = np.array([f.params[k] for k in ("const", "beta_d", "beta_w", "beta_m")])
            compared += 1
            if not np.allclose(stored, reference, rtol=HAR_TOL, atol=HAR_TOL * 1e-4):
                offending.append({"market": "/".join(market), "model": f.model, "horizon_days": f.horizon_days,
                                  "stored": stored.tolist(), "statsmodels": reference.tolist()})
    return Outcome(not offending, {"fits_compared": compared, "differing": len(offending)}, offending[:SAMPLE])


def garch_matches_arch(day: date, made: dict[tuple[str, str], DayForecasts], realized: dict[tuple[str, str], Realized]
                       ) -> Outcome:
    from arch import arch_model  # see above

    offending: list[dict[str, Any]] = []
    compared = 0
    for market, result in made.items():
        fits = [f for f in result.forecasts if f.model == "garch_t"]
        if not fits:
            continue
        returns = realized[market].before(day).ret().dropna().to_numpy()
        direct = arch_model(returns * 100.0, mean="Zero", vol="GARCH", p=1, q=1, dist="t").fit(
            disp="off", show_warning=False).params
        stored = np.array([fits[0].params[k] for k in direct.index])
        compared += 1
        if fits[0].params["scale"] != garch.SCALE or not np.allclose(stored, direct.to_numpy(), rtol=GARCH_RTOL):
            offending.append({"market": "/".join(market), "stored": json.dumps(fits[0].params),
                              "arch": json.dumps({k: float(v) for k, v in direct.items()})})
    return Outcome(not offending, {"fits_compared": compared, "differing": len(offending)}, offending[:SAMPLE])
