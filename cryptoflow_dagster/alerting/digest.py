"""The daily digest: per market close, change, intraday and rolling volatility, RSI, cross signals and alert count.

When the day's gold is missing (or the caller says it failed), the latest earlier day's figures are sent instead,
labelled as such, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone

import duckdb

from cryptoflow_dagster.alerting.model import Alert


ROLLING_WINDOW = 20
# The one forecast the digest shows: next-day HAR-RV in logs, with its out-of-sample record against naive (ADR 0022).
FORECAST_MODEL = "har_log"


@dataclass(frozen=True)
class MarketLine:
    exchange: str
    market: str
    close: float | None
    change_pct: float | None
    vol_day_pct: float | None
    vol_rolling_pct: float | None
    rsi: float | None
    cross: str | None
    alerts: int
    forecast_day: date | None = None
    forecast_vol_pct: float | None = None
    forecast_qlike_ratio: float | None = None
    forecast_dm_pvalue: float | None = None
    forecast_n: int | None = None

    def render(self) -> str:
        parts = [f"*{self.exchange} {self.market}*"]
        if self.close is not None:
            change = f" ({self.change_pct:+.2f}%)" if self.change_pct is not None else ""
            parts.append(f"close {self.close:,.8g}{change}")
        if self.vol_day_pct is not None or self.vol_rolling_pct is not None:
            day = f"{self.vol_day_pct:.2f}% day" if self.vol_day_pct is not None else "n/a day"
            roll = f"{self.vol_rolling_pct:.1f}% ann. {ROLLING_WINDOW}d" if self.vol_rolling_pct is not None else "n/a rolling"
            parts.append(f"vol {day} / {roll}")
        if self.rsi is not None:
            parts.append(f"RSI {self.rsi:.1f}")
        if self.cross:
            parts.append(":large_green_circle: golden cross" if self.cross == "golden_cross" else ":red_circle: dead cross")
        if self.forecast_vol_pct is not None:
            record = "not evaluated yet"
            if self.forecast_qlike_ratio is not None:
                p = f", DM p {self.forecast_dm_pvalue:.3f}" if self.forecast_dm_pvalue is not None else ""
                record = f"QLIKE {self.forecast_qlike_ratio:.2f}x naive{p}, n {self.forecast_n}"
            parts.append(f"forecast {self.forecast_day} {self.forecast_vol_pct:.2f}% ({FORECAST_MODEL}; {record})")
        parts.append(f"{self.alerts} alert{'s' if self.alerts != 1 else ''}")
        return " · ".join(parts)


def _table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    schema, name = table.split(".")
    return bool(con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake' AND schema_name = ? AND table_name = ?",
        [schema, name],
    ).fetchone()[0]) or bool(con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE database_name = 'lake' AND schema_name = ? AND view_name = ?",
        [schema, name],
    ).fetchone()[0])


def pick_day(con: duckdb.DuckDBPyConnection, day: date, failure: str | None) -> tuple[date | None, str | None]:
    """(the day whose figures to send, why it is not ``day`` or None)."""
    if not _table_exists(con, "gold.indicators_daily"):
        return None, "gold.indicators_daily does not exist yet (the gold models have never run)"
    has_day = con.execute("SELECT count(*) FROM gold.indicators_daily WHERE day = ?", [day]).fetchone()[0] > 0
    if has_day and failure is None:
        return day, None
    reason = failure or f"gold.indicators_daily has no rows for {day} (today's gold run has not produced them)"
    previous = con.execute("SELECT max(day) FROM gold.indicators_daily WHERE day < ?", [day]).fetchone()[0]
    return previous, reason


def market_lines(con: duckdb.DuckDBPyConnection, figures_day: date, alerts_day: date) -> list[MarketLine]:
    vol_day = "NULL"
    vol_roll = "NULL"
    joins = []
    if _table_exists(con, "gold.volatility_daily"):
        joins.append("LEFT JOIN gold.volatility_daily vd ON vd.exchange = i.exchange AND vd.market = i.market AND vd.day = i.day")
        vol_day = "vd.yang_zhang * 100"
    if _table_exists(con, "gold.volatility_rolling"):
        joins.append("LEFT JOIN gold.volatility_rolling vr ON vr.exchange = i.exchange AND vr.market = i.market "
                     f"AND vr.day = i.day AND vr.window = {ROLLING_WINDOW}")
        vol_roll = "vr.yang_zhang * 100"
    rows = con.execute(
        f"""
        WITH prev AS (
            SELECT exchange, market, arg_max(close, day) AS close FROM gold.indicators_daily WHERE day < $day GROUP BY 1, 2
        ),
        counts AS (
            SELECT exchange, market, count(*) AS n FROM gold.alerts
             WHERE coalesce(event_time, triggered_at) >= $from AND coalesce(event_time, triggered_at) < $to
               AND exchange IS NOT NULL GROUP BY 1, 2
        )
        SELECT i.exchange, i.market, i.close, (i.close / prev.close - 1) * 100, {vol_day}, {vol_roll}, i.rsi_14, i.cross,
               coalesce(counts.n, 0)
          FROM gold.indicators_daily i
          LEFT JOIN prev USING (exchange, market)
          LEFT JOIN counts USING (exchange, market)
          {' '.join(joins)}
         WHERE i.day = $day
         ORDER BY i.exchange, i.market
        """,
        {"day": figures_day, "from": datetime.combine(alerts_day, time(), timezone.utc),
         "to": datetime.combine(alerts_day, time(23, 59, 59, 999999), timezone.utc)},
    ).fetchall()
    forecasts = forecast_figures(con, figures_day)
    return [replace(MarketLine(*r), **forecasts.get((r[0], r[1]), {})) for r in rows]


def forecast_figures(con: duckdb.DuckDBPyConnection, figures_day: date) -> dict[tuple[str, str], dict]:
    """Per market: the latest next-day forecast for a day up to the one after ``figures_day`` (made from data through
    it) and the model's latest evaluation against naive as of ``figures_day``."""
    if not (_table_exists(con, "gold.volatility_forecast") and _table_exists(con, "gold.volatility_forecast_eval")):
        return {}
    rows = con.execute(
        """
        WITH f AS (
            SELECT exchange, market, max(day) AS day, arg_max(forecast_vol, day) AS vol FROM gold.volatility_forecast
             WHERE model = $model AND horizon_days = 1 AND day <= $next GROUP BY 1, 2
        ),
        e AS (
            SELECT exchange, market, arg_max(qlike_ratio, as_of) AS ratio, arg_max(dm_pvalue, as_of) AS p,
                   arg_max(n, as_of) AS n FROM gold.volatility_forecast_eval
             WHERE model = $model AND horizon_days = 1 AND as_of <= $day GROUP BY 1, 2
        )
        SELECT f.exchange, f.market, f.day, f.vol * 100, e.ratio, e.p, e.n FROM f LEFT JOIN e USING (exchange, market)
        """,
        {"model": FORECAST_MODEL, "next": figures_day + timedelta(days=1), "day": figures_day},
    ).fetchall()
    names = ("forecast_day", "forecast_vol_pct", "forecast_qlike_ratio", "forecast_dm_pvalue", "forecast_n")
    return {(r[0], r[1]): dict(zip(names, r[2:])) for r in rows}


def build_digest(con: duckdb.DuckDBPyConnection, day: date, now: datetime, failure: str | None = None) -> Alert:
    """The digest for ``day`` as an outbox alert (one per day: the dedupe key is the day)."""
    figures_day, reason = pick_day(con, day, failure)
    lines = market_lines(con, figures_day, day) if figures_day else []
    total = con.execute(
        "SELECT count(*) FROM gold.alerts WHERE coalesce(event_time, triggered_at) >= ? "
        "AND coalesce(event_time, triggered_at) < ? AND rule <> 'daily_digest'",
        [datetime.combine(day, time(), timezone.utc), datetime.combine(day, time(23, 59, 59, 999999), timezone.utc)],
    ).fetchone()[0]
    if reason is None:
        summary = f"Market figures for {day}."
    elif figures_day is not None:
        summary = (f":warning: Gold for {day} is missing or failed, so these are the previous day's figures "
                   f"({figures_day}). Why: {reason}.")
    else:
        summary = f":warning: No gold figures to report for {day}. Why: {reason}."
    sections = [line.render() for line in lines] or ["_no markets in gold.indicators_daily_"]
    return Alert(
        rule="daily_digest", triggered_at=now, event_time=datetime.combine(day, time(), timezone.utc),
        dedupe_key=f"daily_digest:{day}", value=float(total), message=summary,
        details={
            "title": f"Daily digest {day}" + (f" (figures from {figures_day})" if reason and figures_day else ""),
            "fields": {"Figures day": str(figures_day or "none"), "Markets": str(len(lines)), "Alerts that day": str(total)},
            "sections": sections[:40],
            "link": "/assets/gold/indicators_daily",
            "fallback_reason": reason,
        },
    )
