"""Volatility forecasts (HAR-RV, GARCH(1,1)-t, naive) and their out-of-sample evaluation as daily-partitioned assets
(ADR 0022; the logic is in cryptoflow_dagster/forecast).

- ``gold/volatility_forecast`` partition D: forecasts for D made from the 1-minute bars before D only (its partition
  mapping on silver/candles_1m is D-1; the expanding window reaches back to the first bar). A run of several days (a
  backfill under the backfill policy) reads each market's bars once and makes the days in ascending order, each from
  the days before it, then writes one transaction per day.
- ``gold/volatility_forecast_eval`` partition A: losses of the stored forecasts whose target ended by A.
"""

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import dagster as dg

from cryptoflow_core.settings import Settings, load_settings
from cryptoflow_dagster.defs.checks.batch import CANDLES_1M
from cryptoflow_dagster.defs.lake_tables import add_row_counts, spec_metadata
from cryptoflow_dagster.defs.partitions import backfill_policy, daily_partitions, partition_days
from cryptoflow_dagster.resources import LakeResource

if TYPE_CHECKING:  # the forecast package (pandas, scipy; arch and statsmodels in it lazily) loads when an asset runs
    from cryptoflow_dagster.batch.quality import Outcome

VOL_FORECAST = dg.AssetKey(["gold", "volatility_forecast"])
VOL_EVAL = dg.AssetKey(["gold", "volatility_forecast_eval"])

FORECAST_CHECKS = {
    "finite_positive": "Every forecast of the run's days is a finite, positive variance and vol = sqrt(variance).",
    "no_look_ahead": "train_end < day everywhere, and the run's last day recomputed from bars cut at its 00:00 equals "
                     "what was stored from bars that include the day.",
    "har_matches_ols": "HAR coefficients of the run's last day equal statsmodels OLS on the same rows (1e-8).",
    "garch_matches_arch": "GARCH parameters of the run's last day equal a direct arch fit of the same returns.",
}
EVAL_CHECKS = {"scores_valid": "Losses finite and >= 0, ratios finite and > 0, p-values in [0, 1], n > 0."}


def _result(key: dg.AssetKey, name: str, outcome: "Outcome") -> dg.AssetCheckResult:
    metadata = dict(outcome.metadata)
    if outcome.offending:
        metadata["sample"] = dg.MetadataValue.json(outcome.offending)
    return dg.AssetCheckResult(asset_key=key, check_name=name, passed=outcome.passed,
                               severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)


def volatility_forecast(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    import polars as pl

    from cryptoflow_dagster.forecast import daily, lake_io, verify

    min_train = lake.settings().forecast_min_train_days
    days = partition_days(context)
    last = days[-1]
    made_at = datetime.now(timezone.utc)
    frames: dict = {d: [] for d in days}
    made, recomputed, realized = {}, {}, {}
    skipped_last: dict[str, dict[str, str]] = {}
    skipped_counts: dict[str, int] = {}
    bad_days: dict[str, dict[str, str]] = {}
    fit_s = {"har": 0.0, "garch": 0.0}
    garch_fits = 0
    with lake.connect() as con:
        markets = lake_io.markets(con, last)
        for n, market in enumerate(markets, start=1):
            # through the last day's bars where the lake has them: the cut at each day is forecast_day's, and the
            # no_look_ahead check compares with a read that stops at 00:00 of the last day
            realized[market] = lake_io.realized(con, *market, before=last + timedelta(days=1))
            for day in days:
                result = daily.forecast_day(realized[market], day, min_train)
                frames[day].append(lake_io.forecast_frame(*market, result, made_at))
                for reason in result.skipped.values():
                    skipped_counts[reason.split(" (")[0]] = skipped_counts.get(reason.split(" (")[0], 0) + 1
                for k, v in result.fit_seconds.items():
                    fit_s[k] += v
                garch_fits += any(f.model == "garch_t" for f in result.forecasts)
            made[market] = result
            recomputed[market] = daily.forecast_day(lake_io.realized(con, *market, before=last), last, min_train)
            name = "/".join(market)
            if result.skipped:
                skipped_last[name] = result.skipped
            if realized[market].skipped:
                bad_days[name] = {str(d): r for d, r in list(realized[market].skipped.items())[-10:]}
            context.log.info(f"volatility_forecast {n}/{len(markets)} markets ({name}): {len(days)} day(s)")
        written = {d: lake_io.write_forecasts(con, d, pl.concat(frames[d]) if frames[d] else
                                              pl.DataFrame(schema=lake_io.FORECAST_SCHEMA)) for d in days}
        checks = [
            _result(VOL_FORECAST, "finite_positive", verify.finite_positive(con, days[0], last)),
            _result(VOL_FORECAST, "no_look_ahead", verify.no_look_ahead(con, days[0], last, made, recomputed)),
            _result(VOL_FORECAST, "har_matches_ols", verify.har_matches_ols(last, made, realized)),
            _result(VOL_FORECAST, "garch_matches_arch", verify.garch_matches_arch(last, made, realized)),
        ]
        add_row_counts(context, con, VOL_FORECAST, days)
    return dg.MaterializeResult(
        metadata={
            "days": len(days),
            "markets": len(markets),
            "forecasts_written": sum(written.values()),
            "min_train_days": min_train,
            "skipped_forecasts_by_reason": dg.MetadataValue.json(skipped_counts),
            "skipped_on_last_day": dg.MetadataValue.json(skipped_last),
            "days_without_rv": dg.MetadataValue.json(bad_days),
            "fit_seconds_har": round(fit_s["har"], 3),
            "fit_seconds_garch": round(fit_s["garch"], 3),
            "garch_fits": garch_fits,
            "garch_seconds_per_fit": round(fit_s["garch"] / max(1, garch_fits), 4),
        },
        check_results=checks,
    )


def _scores_markdown(rows: list[dict]) -> str:
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    lines = ["| market | model | h | n | QLIKE ratio | MSE ratio | DM (QLIKE) | p |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['market']} | {r['model']} | {r['horizon_days']} | {r['n']} | {fmt(r['qlike_ratio'], '.3f')} "
                     f"| {fmt(r['mse_ratio'], '.3f')} | {fmt(r['dm_stat'], '.2f')} | {fmt(r['dm_pvalue'], '.3f')} |")
    return "\n".join(lines)


def volatility_forecast_eval(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    import polars as pl

    from cryptoflow_dagster.forecast import lake_io
    from cryptoflow_dagster.forecast.evaluation import evaluate

    days = partition_days(context)
    last = days[-1]
    frames: dict = {d: [] for d in days}
    latest: list[dict] = []
    with lake.connect() as con:
        markets = [tuple(r) for r in con.execute(
            "SELECT DISTINCT exchange, market FROM gold.volatility_forecast WHERE day <= ? ORDER BY 1, 2", [last]
        ).fetchall()]
        for market in markets:
            forecasts = lake_io.read_forecasts(con, *market, through=last)
            rv = lake_io.realized(con, *market, before=last + timedelta(days=1)).rv()
            for as_of in days:
                scores = evaluate(forecasts.loc[forecasts["day"] <= as_of], rv, as_of)
                frames[as_of].append(lake_io.eval_frame(*market, as_of, scores))
            latest += [{"market": "/".join(market), **{k: v for k, v in s.__dict__.items() if k != "horizon"},
                        "horizon_days": s.horizon} for s in scores if s.model != "naive"]
        for d in days:
            lake_io.write_eval(con, d, pl.concat(frames[d]) if frames[d] else pl.DataFrame(schema=lake_io.EVAL_SCHEMA))
        check = _result(VOL_EVAL, "scores_valid", _scores_valid(con, days[0], last))
        add_row_counts(context, con, VOL_EVAL)  # the table is keyed by as_of, not day: its total only
    return dg.MaterializeResult(
        metadata={
            "as_of": last.isoformat(),
            "markets": len(markets),
            "loss_ratios_vs_naive": dg.MetadataValue.md(_scores_markdown(latest) if latest else "_no scores yet_"),
            "scores": dg.MetadataValue.json(latest),
        },
        check_results=[check],
    )


def _scores_valid(con, first, last) -> "Outcome":
    from cryptoflow_dagster.batch.quality import SAMPLE, Outcome

    sql = (
        "SELECT exchange, market, as_of, model, horizon_days, n, qlike, mse, qlike_ratio, mse_ratio, dm_pvalue "
        "FROM gold.volatility_forecast_eval WHERE as_of BETWEEN ? AND ? AND NOT (n > 0 AND isfinite(qlike) AND qlike >= 0 "
        "AND isfinite(mse) AND mse >= 0 AND coalesce(isfinite(qlike_ratio) AND qlike_ratio > 0, true) "
        "AND coalesce(isfinite(mse_ratio) AND mse_ratio > 0, true) AND coalesce(dm_pvalue BETWEEN 0 AND 1, true) "
        "AND coalesce(dm_pvalue_mse BETWEEN 0 AND 1, true))"
    )
    rows = con.execute(sql, [first, last]).fetchall()
    return Outcome(not rows, {"offending_rows": len(rows)}, [dict(enumerate(map(str, r))) for r in rows[:SAMPLE]])


def forecast_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    common = dict(group_name="gold", kinds={"python", "duckdb"}, backfill_policy=backfill_policy(settings),
                  automation_condition=dg.AutomationCondition.eager())
    forecast = dg.asset(
        key=VOL_FORECAST,
        metadata=spec_metadata(VOL_FORECAST),
        description="Next-day and next-week volatility forecasts per market (HAR-RV log and level, GARCH(1,1)-t, "
                    "naive) for day D from the 1-minute bars before D (docs/volatility-forecasts.md).",
        # partition D reads the bars through D-1 (and every day before: an expanding window)
        deps=[dg.AssetDep(CANDLES_1M, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1))],
        partitions_def=daily_partitions(settings, through_today=True),
        check_specs=[dg.AssetCheckSpec(n, asset=VOL_FORECAST, description=d, blocking=True)
                     for n, d in FORECAST_CHECKS.items()],
        **common,
    )(volatility_forecast)
    evaluation = dg.asset(
        key=VOL_EVAL,
        metadata=spec_metadata(VOL_EVAL),
        description="Out-of-sample QLIKE and MSE of the stored forecasts whose target ended by the day, ratios to "
                    "naive and Diebold-Mariano tests against it.",
        deps=[VOL_FORECAST, CANDLES_1M],
        partitions_def=daily_partitions(settings),
        check_specs=[dg.AssetCheckSpec(n, asset=VOL_EVAL, description=d, blocking=True) for n, d in EVAL_CHECKS.items()],
        **common,
    )(volatility_forecast_eval)
    return [forecast, evaluation]


@dg.definitions
def defs() -> dg.Definitions:
    assets = forecast_assets(load_settings())
    automation = dg.AutomationConditionSensorDefinition(
        "volatility_forecast_automation",
        target=dg.AssetSelection.assets(*assets),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
    )
    return dg.Definitions(assets=assets, sensors=[automation])
