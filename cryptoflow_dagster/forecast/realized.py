"""Daily realized variance and daily log returns from intraday bars (1-minute in the lake, 1-hour in the long recorded
history): what the forecasts are fitted on and judged against (ADR 0022).

RV_D is the sum of squared log returns r_i = ln(C_i / C_{i-1}) over the bars whose close falls in UTC day D, where
C_{i-1} is the close of the bar before, whatever day it is in:

- The day-boundary return (the previous day's last close to D's first close) belongs to D. Crypto trades through
  midnight, so it is an ordinary intraday return; with it a full day of 1-minute bars has 1,440 returns and the RVs of
  consecutive days add up to the variance of the whole span.
- A missing bar (Upbit writes no candle for a minute without trades) is not filled: the return from the last close
  before the hole to the first close after it spans the hole and carries its price move, so RV stays an unbiased
  measure of the day's variance. A return spanning more than ``MAX_RETURN_SPAN`` is not an intraday return any more
  (a day or more of missing data) and is dropped, counted in ``dropped_returns``.
- A day with fewer than ``MIN_COVERAGE`` of its expected returns (1,440 for 1-minute bars, 24 for hourly) is skipped:
  its RV and return are NaN here and the reason is in :attr:`Realized.skipped`. Forecasts that need a skipped day
  are skipped in turn, with the reason; nothing NaN reaches a table.
- A bar whose close is not a finite positive number makes its day skipped (a log return of it is meaningless), and so
  does a day whose price never moved (RV = 0: nothing to take the log of or to divide a loss by).

The daily log return (for GARCH) is ln(last close of D / last close of D-1), the sum of D's intraday returns; NaN when
either day is skipped or absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

MIN_COVERAGE = 0.5
MAX_RETURN_SPAN = timedelta(hours=12)


@dataclass
class Realized:
    """Per UTC day, contiguous from the first to the last day with bars: ``rv`` (variance, NaN if skipped), ``ret``
    (daily log return, NaN if not computable), ``returns`` (intraday returns used), ``dropped_returns``."""

    days: pd.DataFrame
    skipped: dict[date, str] = field(default_factory=dict)

    def rv(self) -> pd.Series:
        return self.days["rv"]

    def ret(self) -> pd.Series:
        return self.days["ret"]

    def before(self, day: date) -> "Realized":
        """Only the days strictly before ``day``: what a forecast for ``day`` may see."""
        keep = self.days.index < day
        return Realized(self.days.loc[keep], {d: r for d, r in self.skipped.items() if d < day})


def daily_realized(bars: pd.DataFrame, interval: timedelta) -> Realized:
    """Realized variance per UTC day from bars with columns ``ts`` (UTC timestamps, bar start) and ``close``.

    ``interval`` is the bar length (1 minute, 1 hour): it sets the expected number of returns per day."""
    expected = int(timedelta(days=1) / interval)
    if bars.empty:
        return Realized(pd.DataFrame(columns=["rv", "ret", "returns", "dropped_returns"], index=pd.Index([], name="day")))
    # UTC as plain datetime64 (tz-aware pandas values become Python objects in numpy: 30x slower on a year of minutes)
    ts = pd.DatetimeIndex(pd.to_datetime(bars["ts"], utc=True)).tz_convert(None).to_numpy()
    close = bars["close"].to_numpy(dtype=float)
    order = np.argsort(ts, kind="stable")
    ts, close = ts[order], close[order]
    if (np.diff(ts) == np.timedelta64(0)).any():
        raise ValueError("bars hold the same timestamp twice: deduplicate before computing realized variance")
    day = ts.astype("datetime64[D]")
    bad = ~(np.isfinite(close) & (close > 0))
    skipped: dict[date, str] = {}
    for d, n in zip(*np.unique(day[bad], return_counts=True)):
        skipped[d.astype(object)] = f"{n} bar(s) with a close that is not a finite positive price"
    # bad closes are removed before the returns are taken, so they cannot spoil the neighbouring day's first return
    ts, close, day = ts[~bad], close[~bad], day[~bad]
    r = np.diff(np.log(close), prepend=np.nan)
    span = np.diff(ts, prepend=ts[:1])
    use = ~np.isnan(r) & (span <= np.timedelta64(MAX_RETURN_SPAN))
    frame = pd.DataFrame({"day": day, "r2": np.where(use, r * r, 0.0), "used": use.astype(int),
                          "dropped": (~np.isnan(r) & ~use).astype(int), "last": close})
    per_day = frame.groupby("day").agg(
        rv=("r2", "sum"), returns=("used", "sum"), dropped_returns=("dropped", "sum"), last=("last", "last")
    )
    per_day.index = [d.date() for d in per_day.index]
    known = [*per_day.index, *skipped]
    all_days = [d.date() for d in pd.date_range(min(known), max(known), freq="D")]
    per_day = per_day.reindex(pd.Index(all_days, name="day"))
    for day_, row in per_day.iterrows():
        if day_ in skipped:
            continue
        if pd.isna(row["returns"]):
            skipped[day_] = "no bars"
        elif row["returns"] < MIN_COVERAGE * expected:
            skipped[day_] = f"{int(row['returns'])} of {expected} returns (< {MIN_COVERAGE:.0%} coverage)"
        elif row["rv"] <= 0:  # a price that never moved: no variance to take a log of or to divide a loss by
            skipped[day_] = "the price did not move all day (RV = 0)"
    ok = ~per_day.index.isin(list(skipped))
    last = per_day["last"].where(ok)
    ret = np.log(last / last.shift(1))
    days = pd.DataFrame(
        {
            "rv": per_day["rv"].where(ok),
            "ret": ret,
            "returns": per_day["returns"].fillna(0).astype(int),
            "dropped_returns": per_day["dropped_returns"].fillna(0).astype(int),
        },
        index=per_day.index,
    )
    return Realized(days, dict(sorted(skipped.items())))
