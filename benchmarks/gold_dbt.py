"""Cost of the gold dbt marts: a dbt invocation on an empty lake, and the marts on ~5 years x 9 markets.

``python -m benchmarks.gold_dbt [--years 5] [--markets 9] [--minute-days 30] [--out results.json]``. Builds a lake in a
temporary home (daily candles for every market, 1-minute bars for the last `minute-days` days), then times:
- `dbt build` on an empty lake (the fixed cost of one invocation: start-up, parse, hook, empty models, tests);
- `dbt build` on the data, with per-model times from run_results.json (indicators_daily is the recursive CTE).
Figures depend on the machine's load; docs/decisions/0003-gold-automation.md records what was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from cryptoflow_dagster import lake
from cryptoflow_dagster.dbt_project import prepare_lake, run_dbt
from cryptoflow_core.settings import load_settings


def daily_candles(markets: int, days: int, rng: np.random.Generator) -> pl.DataFrame:
    frames = []
    start = date(2021, 1, 1)
    for m in range(markets):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, days)))
        open_ = np.concatenate([[100.0], close[:-1]])
        frames.append(
            pl.DataFrame(
                {
                    "exchange": "upbit",
                    "market": f"KRW-M{m}",
                    "day": [start + timedelta(days=i) for i in range(days)],
                    "open": open_,
                    "high": np.maximum(open_, close) * 1.01,
                    "low": np.minimum(open_, close) * 0.99,
                    "close": close,
                    "volume": 1.0,
                    "quote_volume": close,
                }
            )
        )
    return pl.concat(frames)


def minute_bars(markets: int, days: int, rng: np.random.Generator) -> pl.DataFrame:
    n = days * 1440
    start = datetime(2025, 9, 1, tzinfo=timezone.utc)
    ts = pl.datetime_range(start, start + timedelta(minutes=n - 1), "1m", time_zone="UTC", eager=True)
    frames = []
    for m in range(markets):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 8e-4, n)))
        open_ = np.concatenate([[100.0], close[:-1]])
        frames.append(
            pl.DataFrame(
                {
                    "exchange": "upbit",
                    "market": f"KRW-M{m}",
                    "ts": ts,
                    "open": open_,
                    "high": np.maximum(open_, close) * 1.0005,
                    "low": np.minimum(open_, close) * 0.9995,
                    "close": close,
                    "volume": 1.0,
                    "quote_volume": close,
                }
            )
        )
    return pl.concat(frames)


def timed_build(settings) -> tuple[float, dict[str, float]]:
    target = settings.home / "dbt" / f"bench-{time.time_ns()}"
    started = time.perf_counter()
    result = run_dbt(["build"], settings, target_path=target)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-3000:])
    results = json.loads((target / "run_results.json").read_text())["results"]
    per_node = {r["unique_id"].split(".")[-1]: round(r["execution_time"], 3) for r in results if r["unique_id"].startswith("model.")}
    return elapsed, per_node


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--years", type=int, default=5)
    parser.add_argument("--markets", type=int, default=9)
    parser.add_argument("--minute-days", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CRYPTOFLOW_HOME"] = tmp
        settings = load_settings()
        prepare_lake(settings)
        empty_s, _ = timed_build(settings)
        rng = np.random.default_rng(1)
        daily = daily_candles(args.markets, args.years * 365 + 1, rng)
        minutes = minute_bars(args.markets, args.minute_days, rng)
        with lake.session(settings) as con:
            lake.write(con, lambda c: (lake.insert(c, "silver.candles_1d", daily), lake.insert(c, "silver.candles_1m", minutes)))
        data_s, per_model = timed_build(settings)
    report = {
        "load_average_1m": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "daily_rows": daily.height,
        "minute_rows": minutes.height,
        "dbt_build_empty_lake_s": round(empty_s, 2),
        "dbt_build_with_data_s": round(data_s, 2),
        "model_execution_s": per_model,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
