"""Volatility forecasts evaluated out of sample on real Upbit history, and what fitting them costs (issue 19, ADR 0022).

``python -m benchmarks.volatility_forecast [--min-train-days 365] [--runs 5]`` (about two minutes on one core).
Writes benchmarks/results/volatility_forecast.json and benchmarks/results/volatility_forecast.md.

1. Main evaluation: Upbit KRW-BTC hourly candles 2022-01-01..2025-09-29 (exchange_sim/recorded). Daily RV from hourly
   log returns; every day D from the first with ``min-train-days`` of history gets HAR (log, level), GARCH(1,1)-t and
   naive forecasts made from the days before D only (forecast_day, the same function the Dagster asset runs), for
   h = 1 and 5; QLIKE, MSE, ratios to naive and Diebold-Mariano (HLN) per model and horizon.
2. Check against a better proxy: the forecasts of 1. for 2025-09 scored against RV from the recorded 1-minute candles
   (KRW-BTC; only ~30 days, so low power), and the 1-minute vs hourly RV level on the days both cover.
3. Cost: wall time of the HAR fits (4 per market-day) and the GARCH fit (1) per market-day, and of reading a market's
   year of 1-minute bars from a lake and turning it into daily RV; extrapolated to 250 markets.

The settings (min-train-days, horizons, models, loss functions, the rule for "beats naive") were fixed in ADR 0022
before the evaluation was first run; changing them after looking is what the ADR rules out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import RESULTS, REPO, Result, summarize, write_result
from cryptoflow_dagster.forecast.daily import HORIZONS, forecast_day
from cryptoflow_dagster.forecast.evaluation import NAIVE, evaluate
from cryptoflow_dagster.forecast.realized import daily_realized

RECORDED = REPO / "exchange_sim" / "recorded" / "upbit"
HOURLY = RECORDED / "KRW-BTC_1h_2022-01-01_2025-09-29.csv"
MINUTE = {m: RECORDED / f"{m}_1m_2025-09-01_2025-10-04.csv" for m in ("KRW-BTC", "KRW-ETH")}
ALPHA = 0.05  # "beats naive": lower mean loss AND DM two-sided p < ALPHA with a negative statistic (ADR 0022)
MARKETS, BACKFILL_DAYS, DAYS_PER_RUN = 250, 365, 31


def bars(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).rename(columns={"timestamp": "ts"})


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def backtest(realized, min_train: int, first: date | None = None, last: date | None = None):
    days = realized.days.index
    first = first or days[0] + timedelta(days=1)
    last = last or days[-1] + timedelta(days=1)
    rows, har_s, garch_s, skipped = [], [], [], {}
    day = first
    while day <= last:
        result = forecast_day(realized, day, min_train)
        rows += [{"day": day, "model": f.model, "horizon_days": f.horizon_days, "forecast_variance": f.variance}
                 for f in result.forecasts]
        if "har" in result.fit_seconds:
            har_s.append(result.fit_seconds["har"])
        if "garch" in result.fit_seconds and any(f.model == "garch_t" for f in result.forecasts):
            garch_s.append(result.fit_seconds["garch"])
        for reason in result.skipped.values():
            key = reason.split(" (")[0] if "days of realized variance" not in reason else "before the minimum window"
            skipped[key] = skipped.get(key, 0) + 1
        day += timedelta(days=1)
    return pd.DataFrame(rows), har_s, garch_s, skipped


def verdict(score: dict) -> str:
    if score["qlike_ratio"] is None:
        return "baseline"
    if score["dm_pvalue"] is not None and score["dm_pvalue"] < ALPHA:
        return "beats naive" if score["dm_stat"] < 0 else "worse than naive"
    return "no significant difference"


def lake_read_cost(runs: int) -> dict:
    """Read one market's year of 1-minute bars from a lake (real DuckLake in a temporary home) into daily RV: the
    year is the recorded September 2025 BTC minutes repeated, shifted a month at a time (timing only)."""
    import os

    import polars as pl

    from cryptoflow_core.settings import load_settings
    from cryptoflow_dagster import lake
    from cryptoflow_dagster.forecast import lake_io

    month = pl.read_csv(MINUTE["KRW-BTC"], try_parse_dates=True).filter(pl.col("timestamp") < datetime(2025, 9, 30))
    frames = []
    for k in range(13):
        shifted = month.with_columns((pl.col("timestamp") + timedelta(days=29 * k)).dt.replace_time_zone("UTC").alias("ts"))
        frames.append(shifted.select(pl.lit("upbit").alias("exchange"), pl.lit("KRW-BTC").alias("market"), "ts", "open",
                                     "high", "low", "close", "volume", (pl.col("volume") * pl.col("close")).alias("quote_volume"),
                                     pl.col("ts").dt.date().alias("day")))
    year = pl.concat(frames).unique("ts").sort("ts")
    end = year["ts"].max().date()
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings({**os.environ, "CRYPTOFLOW_HOME": home})
        with lake.session(settings) as con:
            lake.ensure_schema(con)
            lake.write(con, lambda c: lake.insert(c, "silver.candles_1m", year))
            times = []
            for _ in range(runs):
                began = time.perf_counter()
                realized = lake_io.realized(con, "upbit", "KRW-BTC", before=end)
                times.append(time.perf_counter() - began)
    return {"bars": year.height, "days": len(realized.days), "seconds": times}


def run(quick: bool = False, runs: int = 5, min_train: int = 365) -> Result:
    result = Result("volatility_forecast", f"KRW-BTC 1h 2022-01..2025-09, min_train={min_train}")
    hourly = daily_realized(bars(HOURLY), timedelta(hours=1))
    forecasts, har_s, garch_s, skipped = backtest(hourly, min_train)
    scores = [asdict(s) for s in evaluate(forecasts, hourly.rv())]
    for s in scores:
        s["verdict"] = verdict(s)
    gaps = {str(d): int(r) for d, r in hourly.days["returns"].items() if r < 24}

    # 2. the same forecasts for September 2025 against 1-minute RV
    minute = {m: daily_realized(bars(p), timedelta(minutes=1)) for m, p in MINUTE.items()}
    btc = minute["KRW-BTC"]
    overlap = hourly.rv().index.intersection(btc.rv().dropna().index)
    ratio_1m_1h = (btc.rv().loc[overlap] / hourly.rv().loc[overlap]).astype(float)
    corr = float(np.corrcoef(np.log(btc.rv().loc[overlap].astype(float)), np.log(hourly.rv().loc[overlap].astype(float)))[0, 1])
    september = forecasts[forecasts["day"] >= date(2025, 9, 1)]
    scores_1m = [asdict(s) for s in evaluate(september, btc.rv().astype(float))]
    for s in scores_1m:
        s["verdict"] = verdict(s)
    # what the 34 days of 1-minute bars give on their own, even at the smallest minimum window the settings allow
    minute_only = {}
    for m, r in minute.items():
        own, *_ = backtest(r, 23)
        minute_only[m] = {"days_with_rv": int(r.rv().notna().sum()), "skipped": {str(d): why for d, why in r.skipped.items()},
                          "forecasts_at_min_train_23": {f"{model} h={h}": int(n) for (model, h), n in
                                                        own.groupby(["model", "horizon_days"]).size().items()}
                          if len(own) else {}}

    # 3. cost
    read = lake_read_cost(1 if quick else runs)
    har_med, garch_med, read_med = statistics.median(har_s), statistics.median(garch_s), statistics.median(read["seconds"])
    # one day partition: read + RV, the day's fits, and the checks (a second read cut at 00:00 with the same fits,
    # statsmodels OLS x4, a direct arch fit)
    per_market_day_run = 2 * read_med + 2 * (har_med + garch_med) + garch_med + har_med
    runs_in_backfill = -(-BACKFILL_DAYS // DAYS_PER_RUN)
    per_market_backfill = runs_in_backfill * (2 * read_med + har_med + 2 * garch_med) + BACKFILL_DAYS * (har_med + garch_med)
    result.add("har_fits_per_market_day_s", "s", har_s, note="4 OLS fits (log, level x h=1, 5) on an expanding window of 365..1,368 days")
    result.add("garch_fit_per_market_day_s", "s", garch_s, baseline="har_fits_per_market_day_s",
               note="one arch GARCH(1,1)-t fit + 5-day forecast on 365..1,367 daily returns")
    result.add("lake_read_year_of_1m_bars_to_rv_s", "s", read["seconds"], note=f"{read['bars']:,} bars, {read['days']} days")
    cost = {
        "har_median_s": har_med, "har_p95_s": pct(har_s, 95), "har_max_s": max(har_s),
        "garch_median_s": garch_med, "garch_p95_s": pct(garch_s, 95), "garch_max_s": max(garch_s),
        "read_year_median_s": read_med, "read_year_min_s": min(read["seconds"]), "read_year_max_s": max(read["seconds"]),
        "day_partition_250_markets_s": MARKETS * per_market_day_run,
        "backfill_365_days_250_markets_s": MARKETS * per_market_backfill,
        "backfill_runs": runs_in_backfill,
    }
    result.details = {
        "settings": {"min_train_days": min_train, "horizons": list(HORIZONS), "alpha": ALPHA,
                     "rv_from": "hourly log returns (24 a day), day-boundary return included"},
        "hourly": {"days": len(hourly.days), "first_day": str(hourly.days.index[0]), "last_day": str(hourly.days.index[-1]),
                   "days_with_fewer_than_24_returns": gaps, "skipped_days": {str(d): w for d, w in hourly.skipped.items()},
                   "forecast_days": int(forecasts["day"].nunique()),
                   "model_forecast_days": int(forecasts.loc[forecasts["model"] == "har_log", "day"].nunique()),
                   "skipped_forecasts": skipped},
        "scores": scores,
        "september_2025_vs_1m_rv": {"scores": scores_1m, "days_both": len(overlap),
                                     "rv_1m_over_rv_1h": summarize(ratio_1m_1h.tolist()) | {"values": None},
                                     "log_rv_correlation": corr},
        "minute_samples": minute_only,
        "cost": cost,
    }
    return result


def _fmt(v, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def _table(scores: list[dict]) -> list[str]:
    lines = ["| model | h | n | QLIKE | QLIKE ratio | DM (QLIKE) | p | MSE ratio | DM (MSE) | p | verdict (QLIKE) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in sorted(scores, key=lambda s: (s["horizon"], s["model"] != NAIVE, s["model"])):
        lines.append(f"| {s['model']} | {s['horizon']} | {s['n']} | {s['qlike']:.4f} | {_fmt(s['qlike_ratio'], '.3f')} | "
                     f"{_fmt(s['dm_stat'], '.2f')} | {_fmt(s['dm_pvalue'], '.3g')} | {_fmt(s['mse_ratio'], '.3f')} | "
                     f"{_fmt(s['dm_stat_mse'], '.2f')} | {_fmt(s['dm_pvalue_mse'], '.3g')} | {s['verdict']} |")
    return lines


def _sentence(scores: list[dict]) -> str:
    parts = []
    for h in HORIZONS:
        winners = [s["model"] for s in scores if s["horizon"] == h and s["verdict"] == "beats naive"]
        losers = [s["model"] for s in scores if s["horizon"] == h and s["verdict"] == "worse than naive"]
        best = min((s for s in scores if s["horizon"] == h and s["qlike_ratio"] is not None), key=lambda s: s["qlike_ratio"])
        text = (f"at h={h}, " + (", ".join(winners) + " beat naive on QLIKE (p < 0.05)" if winners
                                 else "no model beats naive on QLIKE at p < 0.05")
                + (f"; {', '.join(losers)} significantly worse" if losers else "")
                + f"; lowest QLIKE ratio: {best['model']} ({best['qlike_ratio']:.3f})")
        parts.append(text)
    mse_winners = sorted({f"{s['model']} (h={s['horizon']})" for s in scores if s["dm_pvalue_mse"] is not None
                          and s["dm_pvalue_mse"] < ALPHA and s["dm_stat_mse"] < 0})
    mse = ("On MSE, " + (", ".join(mse_winners) + " also beat naive at p < 0.05." if mse_winners else
                         "no model's advantage over naive is significant at 5 % (crash days dominate that loss)."))
    return "; ".join(parts) + ". " + mse


def _short_days(hourly: dict) -> str:
    short = hourly["days_with_fewer_than_24_returns"]
    first = " and the first day, which has no previous close" if hourly["first_day"] in short else ""
    gap_days = len(short) - (1 if first else 0)
    return f"{len(short)} days with fewer than 24 returns: {gap_days} gap days{first}"


def _counts(samples: dict) -> str:
    parts = []
    for market, sample in samples.items():
        got = sample["forecasts_at_min_train_23"]
        models = ", ".join(f"{k}: {v}" for k, v in sorted(got.items()) if not k.startswith(NAIVE)) or "none"
        parts.append(f"{market} {models} (naive {got.get('naive h=1', 0)} days)")
    return "; ".join(parts)


def markdown(data: dict) -> str:
    d = data["details"]
    c = d["cost"]
    sep = d["september_2025_vs_1m_rv"]
    hourly = d["hourly"]
    figures = {f["name"]: f for f in data["figures"]}
    lines = [
        "## Volatility forecasts: out of sample on real Upbit history",
        "",
        f"Measured {data['started_at']} on {data['machine']['cores']} cores ({data['machine']['cpu']}), load at start "
        f"{data['load_avg_at_start']}. Reproduce: `python -m benchmarks.volatility_forecast` "
        f"(raw figures: `benchmarks/results/volatility_forecast.json`). Choices fixed before the first run: ADR 0022.",
        "",
        f"**Sample**: Upbit KRW-BTC hourly candles, {hourly['first_day']}..{hourly['last_day']} ({hourly['days']} days). "
        f"Daily RV = sum of squared hourly log returns (24 a day, the midnight return counted in the new day). "
        f"The 18 gaps in the file (2-6 missing hours each; {_short_days(hourly)}) are not filled: the return across a gap carries the move of the missing hours, so "
        f"those days keep an unbiased RV; no day fell below the 50 % coverage that would skip it "
        f"(skipped days: {len(hourly['skipped_days'])}). Minimum training window {d['settings']['min_train_days']} days, "
        f"then an expanding window refitted every day: HAR and GARCH forecasts for {hourly['model_forecast_days']} days "
        f"(naive for {hourly['forecast_days']}), each made only from days before its target; a model is scored on the "
        f"days naive also has, so its n is the paired count. h = 5 is the mean daily variance of the next five days.",
        "",
        f"**Headline** (rule fixed in advance: a model beats naive when its mean loss is lower and the Diebold-Mariano "
        f"test with the Harvey-Leybourne-Newbold correction rejects equal loss at 5 %, two-sided): "
        f"{_sentence(d['scores'])}",
        "",
        *_table(d["scores"]),
        "",
        "Ratios are the model's mean loss over naive's on the same target days (below 1: better). DM < 0 means the "
        "model's loss is lower; p is two-sided (Student t, T-1 df; Newey-West variance with lag h-1). MSE is dominated "
        "by a handful of crash days (variance squared), so its DM test has little power; QLIKE is the loss to read.",
        "",
        "How far this goes: naive (one day's RV from 24 hourly returns) is a noisy forecast, and any model that "
        "averages over days beats noise; at h = 5 naive must also stand for five days. That is the baseline the "
        "issue set; a smoother one (a 22-day mean) would be a harder test and was not in the pre-registered set. The "
        "sample is one market (KRW-BTC) and one exchange, 2023-2025 out of sample; the hourly target is itself noisy "
        "(next section).",
        "",
        "### The same forecasts for September 2025, scored against 1-minute RV",
        "",
        f"The recorded 1-minute candles (KRW-BTC and KRW-ETH, 2025-09-01..2025-10-04, 34 days) are far too short to "
        f"fit HAR (22-day monthly term plus a training sample) or GARCH (100 daily returns at least) on their own: with "
        f"the minimum window they produce no HAR or GARCH forecast, only naive; even at the smallest window the settings "
        f"allow (23 days) they give {_counts(d['minute_samples'])}. What they can show: whether the ranking "
        f"above survives a more precise target. On the {sep['days_both']} days both files cover, 1-minute RV is "
        f"{sep['rv_1m_over_rv_1h']['median']:.2f}x the hourly RV (median; min {sep['rv_1m_over_rv_1h']['min']:.2f}, max "
        f"{sep['rv_1m_over_rv_1h']['max']:.2f}) and their logs correlate at {sep['log_rv_correlation']:.2f}: hourly RV "
        f"is a noisy, lower-level proxy. The table scores the hourly-trained forecasts against 1-minute RV for the "
        f"September days; n is about 30, so a DM p-value here says little either way, and all models (naive included) "
        f"carry the level difference.",
        "",
        *_table(sep["scores"]),
        "",
        "### Cost of fitting",
        "",
        f"Wall times on the shared 2-core machine under a load average of {data['load_avg_at_start'][0]:.0f} at the start "
        "(other engineers' test runs): an idle core is faster; the ratio between the rows is the steadier figure.",
        "",
        "| figure | median | p95 | max | n |",
        "|---|---|---|---|---|",
        f"| HAR: 4 OLS fits per market-day (expanding window) | {c['har_median_s'] * 1000:.1f} ms | {c['har_p95_s'] * 1000:.1f} ms "
        f"| {c['har_max_s'] * 1000:.1f} ms | {figures['har_fits_per_market_day_s']['runs']} |",
        f"| GARCH(1,1)-t: 1 arch fit + 5-day path per market-day | {c['garch_median_s'] * 1000:.1f} ms | "
        f"{c['garch_p95_s'] * 1000:.1f} ms | {c['garch_max_s'] * 1000:.1f} ms | {figures['garch_fit_per_market_day_s']['runs']} |",
        f"| lake read of a market's year of 1-minute bars -> daily RV | {c['read_year_median_s'] * 1000:.0f} ms | - | "
        f"{c['read_year_max_s'] * 1000:.0f} ms (min {c['read_year_min_s'] * 1000:.0f}) | "
        f"{figures['lake_read_year_of_1m_bars_to_rv_s']['runs']} |",
        "",
        f"The baseline for the fits is HAR itself: GARCH costs {c['garch_median_s'] / c['har_median_s']:.1f}x the four "
        f"HAR fits. A day partition at {MARKETS} markets (every market: read + RV and fits, then the checks' second read "
        f"cut at 00:00 with the same fits, statsmodels OLS and a direct arch fit) is about "
        f"{c['day_partition_250_markets_s']:.0f} s of one core; a {BACKFILL_DAYS}-day backfill at {MARKETS} markets "
        f"({c['backfill_runs']} runs of {DAYS_PER_RUN} days, each reading a market's bars once) is about "
        f"{c['backfill_365_days_250_markets_s'] / 60:.0f} core-minutes, of which the daily GARCH refits are most. "
        f"Estimates from the medians above (one market's year of bars; the read grows with history, the fits with the "
        f"window), not a measured 250-market run.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.volatility_forecast", description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-train-days", type=int, default=365, help="ADR 0022's fixed setting (default 365)")
    parser.add_argument("--runs", type=int, default=5, help="repetitions of the lake read timing")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the existing .json")
    args = parser.parse_args(argv)
    path = args.out / "volatility_forecast.json"
    if not args.markdown_only:
        path = write_result(run(runs=args.runs, min_train=args.min_train_days), args.out)
    data = json.loads(path.read_text())
    (args.out / "volatility_forecast.md").write_text(markdown(data))
    print(f"wrote {path} and {args.out / 'volatility_forecast.md'}")
    print(_sentence(data["details"]["scores"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
