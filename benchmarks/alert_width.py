"""Market-alert evaluation cost by number of markets (issue 17): one evaluation of the packaged rules
(``alerting.market.evaluate_market_rules``) on a new second of trades of every market, over a lake that holds the last
two hours of trades (the rules look back an hour at most) and a day of 1-minute gold bars per market.

Sizes: 9 markets (the demo's) and 250 (``ALL`` + ``TOP50``), the same trades per market per second, so a figure that
grows 28x from 9 to 250 markets grows with the trades; one that grows more, with markets x history.
``CRYPTOFLOW_BENCH_ALERT_RATE`` trades/s per market in the history (default 2), ``..._MARKETS`` (default ``9,250``).
Each batch (a second of trades, all in one minute) is evaluated twice in the same run: afresh, the baseline, and with
the ``VolatilityMemo`` the market alert sensor keeps between batches; then it is committed to silver, as the streaming
run would (silver grows by a small file a batch, as it does between maintenance passes).
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa

from benchmarks.common import Result
from cryptoflow_core.settings import load_settings
from cryptoflow_dagster import lake
from cryptoflow_dagster.alerting.market import VolatilityMemo, evaluate_market_rules
from cryptoflow_dagster.alerting.rules import load_rules, rules_path

HISTORY_S = 7200


def _markets(n: int) -> list[tuple[str, str]]:
    upbit = [("upbit", f"KRW-A{i:03d}") for i in range(int(n * 0.8))]
    return upbit + [("binance", f"B{i:03d}USDT") for i in range(n - len(upbit))]


def _fill(con, markets: list[tuple[str, str]], rate: float, now: datetime) -> int:
    start = now - timedelta(seconds=HISTORY_S)
    con.register("_m", pa.table({"exchange": [e for e, _ in markets], "market": [m for _, m in markets],
                                 "k": list(range(len(markets)))}))
    every_ms = int(1000 / rate)

    def work(c):
        c.execute(
            """INSERT INTO silver.trades SELECT m.exchange, m.market, g.i, $start + g.i * INTERVAL (CAST($every AS INT)) MILLISECOND,
                   100 + m.k + sin(g.i / 50.0), 0.5 + (g.i % 7) / 10.0, 50.0, CASE WHEN g.i % 2 = 0 THEN 'buy' ELSE 'sell' END,
                   $start, NULL, 'ws', CAST($start + g.i * INTERVAL (CAST($every AS INT)) MILLISECOND AS DATE)
               FROM _m m, range(CAST($n AS BIGINT)) g(i)""",
            {"start": start, "every": every_ms, "n": int(HISTORY_S * rate)})
        c.execute(
            """INSERT INTO gold.ohlcv_1m_from_trades (exchange, market, ts, open, high, low, close, volume, quote_volume,
                   trade_count, vwap, day)
               SELECT m.exchange, m.market, $s + g.i * INTERVAL 1 MINUTE, 100, 101, 99, 100 + m.k + sin(g.i / 7.0), 10, 1000,
                   60, 100, CAST($s + g.i * INTERVAL 1 MINUTE AS DATE)
               FROM _m m, range(1440) g(i)""", {"s": now - timedelta(days=1, hours=2)})
        return c.execute("SELECT count(*) FROM silver.trades").fetchone()[0]

    try:
        return lake.write(con, work)
    finally:
        con.unregister("_m")


def _batch(markets, rate: float, now: datetime, first_id: int) -> pa.Table:
    per = max(1, int(rate))
    rows = [(e, m, first_id + j, now + timedelta(milliseconds=j * 1000 // per), 100.0 + k, 0.5)
            for k, (e, m) in enumerate(markets) for j in range(per)]
    cols = list(zip(*rows))
    return pa.table({"exchange": cols[0], "market": cols[1], "trade_id": pa.array(cols[2], pa.int64()),
                     "ts": pa.array(cols[3], pa.timestamp("us", "UTC")), "price": cols[4], "volume": cols[5]})


def _commit(con, batch: pa.Table) -> None:
    con.register("_b", batch)
    try:
        lake.write(con, lambda c: c.execute(
            "INSERT INTO silver.trades SELECT exchange, market, trade_id, ts, price, volume, price * volume, 'buy', ts, "
            "NULL, 'ws', CAST(ts AS DATE) FROM _b"))
    finally:
        con.unregister("_b")


def run(quick: bool, runs: int) -> Result:
    rate = float(os.environ.get("CRYPTOFLOW_BENCH_ALERT_RATE", 2))
    sizes = [int(n) for n in os.environ.get("CRYPTOFLOW_BENCH_ALERT_MARKETS", "9,250").split(",")]
    result = Result("alert_width", f"one market-rule evaluation on a new second of trades of every market; history "
                                   f"{HISTORY_S // 3600} h of trades at {rate:g}/s per market + a day of 1m bars; "
                                   f"markets {sizes}, {runs} evaluations each")
    details = {}
    for n in sizes:
        markets = _markets(n)
        with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp:
            settings = load_settings({**os.environ, "CRYPTOFLOW_HOME": str(Path(tmp))})
            now = datetime.now(timezone.utc).replace(second=0, microsecond=0)  # every batch in one minute
            with lake.session(settings) as con:
                lake.ensure_schema(con)
                rows = _fill(con, markets, rate, now - timedelta(seconds=1))
                rules = load_rules(rules_path(settings))
                memo = VolatilityMemo()
                wall, cpu, memo_wall, memo_cpu = [], [], [], []
                for i in range(min(runs, 59)):
                    batch = _batch(markets, rate, now + timedelta(seconds=i), 10**9 + i * 1000)
                    # the same batch twice: afresh (the baseline), then as the sensor evaluates it, with its memo
                    for walls, cpus, kept in ((wall, cpu, None), (memo_wall, memo_cpu, memo)):
                        w, c = time.perf_counter(), time.process_time()
                        evaluate_market_rules(con, batch, rules, now + timedelta(seconds=i), memo=kept)
                        walls.append(time.perf_counter() - w)
                        cpus.append(time.process_time() - c)
                    _commit(con, batch)  # as the streaming run does
        details[n] = {"history_trades": rows, "batch_trades": len(batch), "wall_s": wall, "cpu_s": cpu,
                      "memo_wall_s": memo_wall, "memo_cpu_s": memo_cpu}
        result.add(f"{n} markets: evaluation wall time, afresh", "s", wall)
        result.add(f"{n} markets: evaluation CPU time, afresh", "cpu-s", cpu, None, None,
                   f"{rows:,} trades of history, {len(batch)} new trades per evaluation")
        # the first of the minute computes the limits (as afresh); the others are what the sensor pays most seconds
        result.add(f"{n} markets: evaluation wall time, later in the minute (volatility memo)", "s", memo_wall[1:])
        result.add(f"{n} markets: evaluation CPU time, later in the minute (volatility memo)", "cpu-s", memo_cpu[1:],
                   None, None, f"the minute's first evaluation: {memo_cpu[0]:.3f} CPU-s")
    result.details = details
    return result


if __name__ == "__main__":  # python -m benchmarks.alert_width: writes benchmarks/results/alert_width.json
    import sys

    from benchmarks.common import RESULTS, write_result

    label = sys.argv[1] if len(sys.argv) > 1 else ""
    out = run(False, 7)
    if label:
        out.benchmark = f"alert_width_{label}"
    print(write_result(out, RESULTS))
