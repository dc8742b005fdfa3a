"""Backfill against the simulator's real Upbit rate limit (10 requests/s per group per client address, 429 then 418).

The fetch path of the ``bronze/candles_raw`` asset, as it runs in a backfill: ``collect.collect_days`` puts every
(day, market) on one queue for 4 workers (the asset's default ``workers=4``) sharing one ``UpbitClient``, each
fetching ``collect.fetch_candles``. The lake write is left out: it is milliseconds per day, done by the asset's own
thread while the workers fetch on, and this measures how well the client uses the limit.
"""

from __future__ import annotations

import os
import time
from datetime import date, timedelta

import httpx

from benchmarks.common import Result
from cryptoflow_dagster.batch.collect import collect_days, fetch_candles
from cryptoflow_dagster.clients.binance import BinanceClient
from cryptoflow_dagster.clients.upbit import UpbitClient
from exchange_sim.testing import running_sim

MARKETS = ("KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL")
LIMIT_PER_S = 10  # the simulator's default, as Upbit publishes it for the candle group


WORKERS = 4


def one_backfill(url: str, days: list[date]) -> dict:
    upbit = UpbitClient(url, per_second=LIMIT_PER_S)
    binance = BinanceClient(url)  # fetch_candles' signature; no Binance market is fetched here
    candles = 0
    pairs = [("upbit", m) for m in MARKETS]
    try:
        started = time.monotonic()
        for _, fetched in collect_days(days, pairs, lambda md: fetch_candles(md, "1m", upbit, binance), workers=WORKERS):
            candles += sum(len(p.items) for _, pages in fetched for p in pages)
        wall = time.monotonic() - started
    finally:
        upbit.close()
        binance.close()
    requests = upbit.http.stats["requests"]
    return {"requests": requests, "candles": candles, "wall_s": wall, "requests_per_s": requests / wall,
            "responses_429": upbit.http.stats["429"],
            "429_after_first_second": sum(1 for t in upbit.http.limited_at if t - started > 1.0),
            "answers_with_none_left": upbit.limiter.none_left_answers("candle"),
            "learned_capacity": upbit.limiter.capacity("candle"),
            "theoretical_min_s": requests / LIMIT_PER_S}


def run(quick: bool, runs: int) -> Result:
    n_days = int(os.environ.get("CRYPTOFLOW_BENCH_BACKFILL_DAYS", 10 if quick else 30))
    last = date.today() - timedelta(days=2)
    days = [last - timedelta(days=i) for i in range(n_days)][::-1]
    result = Result("backfill", f"{n_days} days x {len(MARKETS)} Upbit markets of 1-minute candles, {WORKERS} workers on one "
                                f"(day, market) queue, simulator limit {LIMIT_PER_S} requests/s (429, then 418 bans), {runs} runs")
    rounds = []
    with running_sim(history_days=n_days + 5) as sim:
        for _ in range(runs):
            httpx.post(sim.url + "/_sim/reset", timeout=30).raise_for_status()  # each run starts with a clean window
            time.sleep(1.1)
            rounds.append(one_backfill(sim.upbit_rest_url, days))
    result.add("achieved requests/s / limit", "share", [r["requests_per_s"] / LIMIT_PER_S for r in rounds], (">=", 0.90),
               f"limit {LIMIT_PER_S}/s")
    result.add("achieved requests/s", "req/s", [r["requests_per_s"] for r in rounds])
    result.add("wall time / theoretical minimum", "ratio", [r["wall_s"] / r["theoretical_min_s"] for r in rounds], None,
               "requests / limit")
    result.add("wall time", "s", [r["wall_s"] for r in rounds])
    result.add("429 responses", "count", [r["responses_429"] for r in rounds])
    result.add("429 responses after the first second", "count", [r["429_after_first_second"] for r in rounds],
               ("<=", 0))
    result.details = {"rounds": rounds, "days": [days[0].isoformat(), days[-1].isoformat()], "markets": MARKETS}
    return result
