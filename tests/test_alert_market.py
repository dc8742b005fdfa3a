"""Market rules on micro-batches of trades, through the real lake and outbox: price shock, cooldown, restart, volume
spike, volatility, Korean premium, and the rules file."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from cryptoflow_dagster import lake
from cryptoflow_dagster.alerting import outbox
from cryptoflow_dagster.alerting.market import VolatilityMemo, evaluate_market_rules
from cryptoflow_dagster.alerting.rules import RuleError, load_rules, parse_rules, rules_path

T0 = datetime(2025, 3, 4, 0, 0, tzinfo=timezone.utc)


def trades(exchange: str, market: str, rows: list[tuple[int, datetime, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "exchange": [exchange] * len(rows),
            "market": [market] * len(rows),
            "trade_id": [r[0] for r in rows],
            "ts": [r[1] for r in rows],
            "price": [float(r[2]) for r in rows],
            "volume": [float(r[3]) for r in rows],
            "quote_volume": [float(r[2] * r[3]) for r in rows],
            "side": ["buy"] * len(rows),
            "ingest_time": [r[1] for r in rows],
            "day": [r[1].date() for r in rows],
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC"), "ingest_time": pl.Datetime("us", "UTC"), "trade_id": pl.Int64},
    )


def real_trx_trades(recorded_data: Path) -> pl.DataFrame:
    """Real Binance TRXUSDT trades (48 minutes, exchange_sim/recorded) as silver rows: a calm baseline."""
    raw = pl.read_csv(recorded_data / "binance" / "ws_trades_TRXUSDT_spot_2025-03-04.csv")
    ts = pl.from_epoch(pl.col("TransactionTime"), time_unit="us").dt.replace_time_zone("UTC")
    return raw.select(
        pl.lit("binance").alias("exchange"), pl.lit("TRXUSDT").alias("market"), pl.col("TradeId").alias("trade_id"),
        ts.alias("ts"), pl.col("Price").cast(pl.Float64).alias("price"), pl.col("Quantity").cast(pl.Float64).alias("volume"),
        (pl.col("Price") * pl.col("Quantity")).alias("quote_volume"),
        pl.when(pl.col("IsBuyerMarketMaker") == 1).then(pl.lit("sell")).otherwise(pl.lit("buy")).alias("side"),
        ts.alias("ingest_time"), ts.dt.date().alias("day"),
    )


def land(con, frame: pl.DataFrame) -> None:
    """Silver rows, and the 1-minute gold bars of the minutes they touch (what the streaming run writes together)."""

    def work(c) -> None:
        lake.insert(c, "silver.trades", frame)
        c.register("_touched", frame.select("exchange", "market", pl.col("ts").dt.truncate("1m").alias("minute")).unique())
        c.execute("DELETE FROM gold.ohlcv_1m_from_trades g USING _touched t "
                  "WHERE g.exchange = t.exchange AND g.market = t.market AND g.ts = t.minute")
        c.execute(
            """INSERT INTO gold.ohlcv_1m_from_trades
               SELECT s.exchange, s.market, date_trunc('minute', s.ts) AS minute, arg_min(price, s.ts), max(price),
                      min(price), arg_max(price, s.ts), sum(volume), sum(quote_volume), count(*),
                      sum(quote_volume) / sum(volume), now(), CAST(date_trunc('minute', s.ts) AS DATE)
                 FROM silver.trades s JOIN (SELECT DISTINCT * FROM _touched) t
                   ON s.exchange = t.exchange AND s.market = t.market AND date_trunc('minute', s.ts) = t.minute
                GROUP BY ALL""")
        c.unregister("_touched")

    lake.write(con, work)


def step(con, frame: pl.DataFrame, rules, into_silver: bool = True):
    """What the streaming sensor does per micro-batch: evaluate, record in the outbox, then land the batch."""
    recorded = outbox.record(con, evaluate_market_rules(con, frame, rules, now=frame["ts"].max()))
    if into_silver:
        land(con, frame)
    return recorded


def alerts(con, rule: str | None = None) -> list[tuple]:
    sql = "SELECT rule, exchange, market, event_time, value, threshold, status, dedupe_key FROM gold.alerts"
    params: list = []
    if rule:
        sql += " WHERE rule = ?"
        params.append(rule)
    return con.execute(sql + " ORDER BY event_time", params).fetchall()


@pytest.fixture
def con(settings):
    with lake.session(settings) as c:
        lake.ensure_schema(c)
        yield c


@pytest.fixture
def rules(settings):
    return load_rules(rules_path(settings))


def test_price_shock_on_real_trades_gives_exactly_one_alert_and_cooldown_holds(con, rules, recorded_data):
    base = real_trx_trades(recorded_data)
    land(con, base)
    last = base.sort("ts").tail(1)
    t, p, tid = last["ts"][0], last["price"][0], int(last["trade_id"][0])
    # The calm real data alone triggers no price move (TRX moved well under 3% in those 48 minutes).
    assert evaluate_market_rules(con, base.tail(200), rules, now=t) == []
    # A +6% shock arrives over three micro-batches and stays: one alert, repeats suppressed by the cooldown.
    batches = [
        trades("binance", "TRXUSDT", [(tid + 10 * b + i, t + timedelta(seconds=1 + 10 * b + i), p * (1.06 + 0.002 * b), 50)
                                     for i in range(5)])
        for b in range(3)
    ]
    recorded = [step(con, b, rules) for b in batches]
    assert [len(r) for r in recorded] == [1, 0, 0]
    (rule, exchange, market, event_time, value, threshold, status, _), = alerts(con, "price_move")
    assert (rule, exchange, market, status) == ("price_move", "binance", "TRXUSDT", "pending")
    assert event_time == batches[0]["ts"][0]  # the first trade that crossed, not a later one
    assert value == pytest.approx((p * 1.06 / base.filter(pl.col("ts") >= t - timedelta(seconds=300))["price"].min() - 1) * 100)
    assert threshold == 3.0
    # A restart re-evaluates the same batch: same dedupe key, nothing new.
    assert step(con, batches[0], rules, into_silver=False) == []
    # A second shock (back down 6%) after the 600 s cooldown is a new alert.
    later = t + timedelta(seconds=700)
    drop = trades("binance", "TRXUSDT", [(tid + 100, later, p * 1.064, 50), (tid + 101, later + timedelta(seconds=5), p, 50)])
    assert [a.rule for a in step(con, drop, rules)] == ["price_move"]
    values = [row[4] for row in alerts(con, "price_move")]
    assert len(values) == 2 and values[1] < -3.0


def test_volume_spike_against_trailing_buckets(con, rules, recorded_data):
    base = real_trx_trades(recorded_data)
    land(con, base)
    last = base.sort("ts").tail(1)
    t, p, tid = last["ts"][0], last["price"][0], int(last["trade_id"][0])
    bucket_start = (t + timedelta(seconds=60)).replace(second=0, microsecond=0)
    per_minute = base.group_by(pl.col("ts").dt.truncate("1m")).agg(pl.col("volume").sum())["volume"]
    normal = trades("binance", "TRXUSDT", [(tid + 1, bucket_start + timedelta(seconds=1), p, float(per_minute.median()))])
    assert [a.rule for a in step(con, normal, rules)] == []
    huge = float(per_minute.mean() + 20 * per_minute.std())
    spike = trades("binance", "TRXUSDT", [(tid + 2, bucket_start + timedelta(seconds=2), p, huge)])
    (alert,) = step(con, spike, rules)
    assert alert.rule == "volume_spike" and alert.event_time == bucket_start and alert.value >= 4.0


def test_volatility_above_trailing_percentile(con, rules):
    calm = [(i, T0 + timedelta(seconds=20 * i), 100 * (1 + 0.0005 * ((i * 7) % 5 - 2)), 1.0) for i in range(3 * 240)]
    land(con, trades("upbit", "KRW-ETH", calm))
    start = T0 + timedelta(minutes=240)
    wild = [(10_000 + i, start + timedelta(seconds=20 * i), 100 * (1 + 0.01 * (1 if i % 6 < 3 else -1)), 1.0)
            for i in range(3 * 8)]  # 8 wild minutes: inside one 600 s cooldown
    got = [a for b in range(0, len(wild), 9) for a in step(con, trades("upbit", "KRW-ETH", wild[b:b + 9]), rules)]
    vol = [a for a in got if a.rule == "volatility"]
    assert len(vol) == 1 and vol[0].value > vol[0].threshold
    assert alerts(con, "volatility")[0][2] == "KRW-ETH"


def test_volatility_limits_kept_for_the_minute_give_what_a_fresh_evaluation_gives(con, rules):
    """The sensor keeps each market's trailing limit for the minute (a day of bars read once a minute, not per batch):
    batch by batch, every alert, value and threshold equals an evaluation that computes everything afresh."""
    calm = [(i, T0 + timedelta(seconds=20 * i), 100 * (1 + 0.0005 * ((i * 7) % 5 - 2)), 1.0) for i in range(3 * 240)]
    land(con, trades("upbit", "KRW-ETH", calm))
    land(con, trades("upbit", "KRW-SOL", [(i, t, p * 2, v) for i, t, p, v in calm]))
    start = T0 + timedelta(minutes=240)
    wild = [(10_000 + i, start + timedelta(seconds=7 * i), 100 * (1 + 0.01 * (1 if i % 17 < 9 else -1)), 1.0)
            for i in range(8 * 60 // 7)]  # 8 wild minutes, ~9 batches a minute
    memo, kept, fresh, fired = VolatilityMemo(), 0, 0, 0
    for i, row in enumerate(wild):
        batch = pl.concat([trades("upbit", "KRW-ETH", [row]),
                           trades("upbit", "KRW-SOL", [(row[0], row[1], 200 + 0.01 * (i % 3), 1.0)])])
        now = batch["ts"].max()
        with_memo = evaluate_market_rules(con, batch, rules, now=now, memo=memo)
        assert with_memo == evaluate_market_rules(con, batch, rules, now=now)
        assert [(a.value, a.threshold) for a in with_memo] == [
            (a.value, a.threshold) for a in evaluate_market_rules(con, batch, rules, now=now)]
        fired += sum(a.rule == "volatility" for a in with_memo)
        minute = row[1].replace(second=0)
        kept += memo.get(("upbit", "KRW-ETH", 15, 360, 99), minute) is not None
        land(con, batch)
    assert fired >= 5  # the wild minutes fire, batch after batch (evaluate alone applies no cooldown)
    assert kept == len(wild)  # and the limit was the memo's after every batch's first evaluation


def test_kimchi_premium_from_the_three_legs(con, rules):
    t = T0 + timedelta(hours=1)
    land(con, trades("upbit", "KRW-USDT", [(1, t, 1400.0, 10)]))
    land(con, trades("binance", "BTCUSDT", [(1, t, 60_000.0, 1)]))
    fair = trades("upbit", "KRW-BTC", [(1, t + timedelta(seconds=1), 60_000 * 1400 * 1.01, 0.1)])
    assert [a for a in step(con, fair, rules) if a.rule == "kimchi_premium"] == []
    rich = trades("upbit", "KRW-BTC", [(2, t + timedelta(seconds=61), 60_000 * 1400 * 1.062, 0.1)])
    premium = [a for a in step(con, rich, rules) if a.rule == "kimchi_premium"]
    assert len(premium) == 1 and premium[0].value == pytest.approx(6.2) and premium[0].market == "KRW-BTC"


def test_rules_file_overrides_and_errors(rules, tmp_path):
    assert rules.for_market("upbit", "KRW-BTC").get("price_move")["pct"] == 2.0
    assert rules.for_market("upbit", "KRW-SOL").get("price_move")["pct"] == 3.0
    assert rules.for_market("upbit", "KRW-USDT").get("kimchi_premium") is None
    with pytest.raises(RuleError, match="unknown rule 'price_jump'"):
        parse_rules({"defaults": {"price_jump": {"pct": 1}}})
    with pytest.raises(RuleError, match="invalid Upbit market"):
        parse_rules({"markets": {"upbit:krw btc; drop": {"price_move": {"pct": 1}}}})
    with pytest.raises(RuleError, match="must be a number"):
        parse_rules({"defaults": {"price_move": {"pct": "lots"}}})
    bad = tmp_path / "rules.yaml"
    bad.write_text("defaults: [unclosed")
    with pytest.raises(RuleError, match="not valid YAML"):
        load_rules(bad)


def test_one_batch_many_markets_each_with_its_own_threshold(con, rules):
    base = [(i, T0 + timedelta(seconds=10 * i), 100.0, 1.0) for i in range(30)]
    land(con, pl.concat([trades("upbit", "KRW-BTC", base), trades("binance", "TRXUSDT", base)]))
    t = T0 + timedelta(seconds=300)
    # +2.5% on both: over KRW-BTC's 2% (its override in the rules file), under the default 3% that TRXUSDT has.
    batch = pl.concat([trades("upbit", "KRW-BTC", [(100, t, 102.5, 1.0)]), trades("binance", "TRXUSDT", [(100, t, 102.5, 1.0)])])
    got = evaluate_market_rules(con, batch, rules, now=t)
    assert [(a.rule, a.exchange, a.market, a.threshold) for a in got] == [("price_move", "upbit", "KRW-BTC", 2.0)]
    assert got[0].value == pytest.approx(2.5)


@pytest.mark.parametrize("span_s", [1, 90, 400])  # a second's batch, a long one, one longer than the 300 s window
def test_price_move_equals_a_trade_by_trade_reference(con, span_s):
    """The evaluation splits each window into the rows every batch trade shares (one min/max) and the rest (a window
    function): the first alerting trade, its move and the window's low/high equal a plain loop over the trades, for
    batches shorter and longer than the window, with ties in time and context trades that are not in silver."""
    import random

    rng = random.Random(span_s)
    rules = parse_rules({"defaults": {"price_move": {"pct": 0.8, "window_s": 300}}})
    markets = [("upbit", "KRW-BTC"), ("binance", "TRXUSDT"), ("upbit", "KRW-ETH")]
    history, batch, context, start = [], [], [], T0 + timedelta(seconds=1200)
    for k, (exchange, market) in enumerate(markets):
        price, tid = 100.0 + k, 0
        for second in range(0, 1200 + span_s, 2):
            when = T0 + timedelta(seconds=second, milliseconds=rng.choice([0, 500]))
            price *= 1 + rng.gauss(0, 0.0015)
            for _ in range(2 if rng.random() < 0.2 else 1):  # an order filled twice: a tie in time (and price)
                tid += 1
                row = (exchange, market, tid, when, price, 1.0)
                if when < start - timedelta(seconds=20):
                    history.append(row)
                elif when < start:
                    context.append(row)  # landed but not in silver yet: history for the rules, never alerts itself
                else:
                    batch.append(row)

    def frame(rows):
        return pl.concat([trades(e, m, [(t, ts, p, v) for e_, m_, t, ts, p, v in rows if (e_, m_) == (e, m)])
                          for e, m in markets])

    land(con, frame(history))
    got = evaluate_market_rules(con, frame(batch), rules, now=start + timedelta(seconds=span_s),
                                context=frame(context))
    moves = {(a.exchange, a.market): (a.event_time, a.value) for a in got if a.rule == "price_move"}

    expected = {}
    known = history + context + batch
    for exchange, market in markets:
        mine = sorted((r for r in known if r[:2] == (exchange, market)), key=lambda r: r[3])
        for e, m, tid, ts, price, _ in sorted((r for r in batch if r[:2] == (exchange, market)), key=lambda r: r[3]):
            window = [r[4] for r in mine if ts - timedelta(seconds=300) <= r[3] <= ts]
            lo, hi = min(window), max(window)
            move = (price / lo - 1) * 100 if price / lo - 1 >= 1 - price / hi else (price / hi - 1) * 100
            if abs(move) >= 0.8:
                expected[(e, m)] = (ts, move)
                break
    assert len(expected) >= 2  # the walk moves enough for the rule to fire on most markets
    assert moves.keys() == expected.keys()
    for key, (ts, move) in expected.items():
        assert moves[key][0] == ts and moves[key][1] == pytest.approx(move, rel=1e-12)


def test_a_low_that_left_the_window_during_the_batch_no_longer_counts(con):
    """A dip 295 s before the batch starts is inside the first batch trade's 300 s window but not inside the window of a
    trade 30 s later: against that trade's own window (low 99.5) 99.9 is no move; against the stale dip it would be +0.9 %."""
    rules = parse_rules({"defaults": {"price_move": {"pct": 0.8, "window_s": 300}}})
    start = T0 + timedelta(seconds=600)
    flat = [(i, T0 + timedelta(seconds=5 * i), 100.0, 1.0) for i in range(120) if T0 + timedelta(seconds=5 * i) < start]
    dip = [(1000, start - timedelta(seconds=295), 99.0, 1.0)]
    land(con, trades("upbit", "KRW-BTC", flat + dip))
    batch = trades("upbit", "KRW-BTC", [(2000, start, 99.5, 1.0), (2001, start + timedelta(seconds=30), 99.9, 1.0)])
    assert evaluate_market_rules(con, batch, rules, now=start + timedelta(seconds=30)) == []
    # the same price while the dip is still inside the window is a move
    batch = trades("upbit", "KRW-BTC", [(3000, start, 99.9, 1.0)])
    [alert] = evaluate_market_rules(con, batch, rules, now=start)
    assert alert.value == pytest.approx((99.9 / 99.0 - 1) * 100)


@pytest.mark.parametrize("in_silver", [False, True])  # the batch not yet in silver / already ingested
def test_volume_spike_and_volatility_equal_a_reference_over_every_trade(con, in_silver):
    """The evaluation reads the window summed per market and bucket inside the lake (not trade by trade), leaves out the
    batch's and context's trades there and adds them back once: the volume z-scores and volatility figures equal a
    plain computation over every trade (deduplicated by id), with 30 s buckets (not whole minutes), trades filled
    twice, context trades not in silver, and a batch that may already be in silver."""
    import math
    import random
    import statistics

    import numpy as np

    rng = random.Random(7 + in_silver)
    rules = parse_rules({"defaults": {
        "volume_spike": {"z": 0.0, "bucket_s": 30, "trailing_buckets": 20, "min_buckets": 3},
        "volatility": {"percentile": 5, "window_bars": 4, "trailing_bars": 40, "min_history": 3}}})
    markets = [("upbit", "KRW-BTC"), ("binance", "TRXUSDT")]
    start = T0 + timedelta(minutes=90, seconds=17)
    history, context, batch = [], [], []
    for k, (exchange, market) in enumerate(markets):
        price, tid, t = 100.0 + k, 0, T0
        while t < start + timedelta(seconds=3):
            t += timedelta(milliseconds=rng.randint(100, 9000))
            price *= 1 + rng.gauss(0, 0.003)
            volume = rng.expovariate(1.0) * (15 if rng.random() < 0.02 or t >= start else 1)  # the batch: a spike
            for _ in range(2 if rng.random() < 0.1 else 1):  # filled twice: another trade at the same time
                tid += 1
                row = (exchange, market, tid, t, price, volume)
                (history if t < start - timedelta(seconds=25) else context if t < start else batch).append(row)
    assert {r[:2] for r in batch} == set(markets)

    def frame(rows):
        return pl.concat([trades(e, m, [r[2:] for r in rows if r[:2] == (e, m)]) for e, m in markets])

    land(con, frame(history))
    if in_silver:
        land(con, frame(context + batch))
    got = evaluate_market_rules(con, frame(batch), rules, now=start, context=frame(context))

    expected = {}
    every = {r[:3]: r for r in history + context + batch}.values()  # each trade once
    for exchange, market in markets:
        mine = sorted((r for r in every if r[:2] == (exchange, market)), key=lambda r: r[3])
        lo, hi = min(r[3] for r in batch if r[:2] == (exchange, market)), max(r[3] for r in batch if r[:2] == (exchange, market))
        # volume: 30 s buckets from the look-back's start (21 buckets before the batch) to the batch's last one
        since = lo - timedelta(seconds=30 * 21)
        sums: dict[int, float] = {}
        for r in mine:
            if since <= r[3] <= hi:
                b = int(r[3].timestamp()) // 30 * 30
                sums[b] = sums.get(b, 0.0) + r[5]
        grid = [sums.get(b, 0.0) for b in range(min(sums), max(sums) + 1, 30)]
        trailing = grid[:-1]
        z = (grid[-1] - statistics.mean(trailing)) / statistics.stdev(trailing)
        expected[("volume_spike", market)] = (datetime.fromtimestamp(max(sums), timezone.utc), z)
        # volatility: each minute's last price, log returns between minutes with trades, sample stdev of 4 returns
        closes: dict[datetime, float] = {}
        for r in mine:
            if r[3] <= hi:
                closes[r[3].replace(second=0, microsecond=0)] = r[4]  # sorted by time: the minute's last trade
        minutes = sorted(closes)
        returns = [math.log(closes[b] / closes[a]) for a, b in zip(minutes, minutes[1:])]
        vols = [statistics.stdev(returns[i - 3:i + 1]) for i in range(3, len(returns))]
        limit = float(np.quantile(vols[-41:-1], 0.05))
        if vols[-1] > limit and minutes[-1] >= lo.replace(second=0, microsecond=0):
            expected[("volatility", market)] = (minutes[-1], vols[-1] * math.sqrt(1440), limit * math.sqrt(1440))
    volume = {("volume_spike", a.market): (a.event_time, a.value) for a in got if a.rule == "volume_spike"}
    volatility = {("volatility", a.market): (a.event_time, a.value, a.threshold) for a in got if a.rule == "volatility"}
    assert volume.keys() == {k for k in expected if k[0] == "volume_spike" and expected[k][1] >= 0} == {
        ("volume_spike", m) for _, m in markets}
    for key, (at, z) in volume.items():
        assert at == expected[key][0] and z == pytest.approx(expected[key][1], rel=1e-9)
    assert volatility.keys() == {k for k in expected if k[0] == "volatility"} and volatility
    for key, (at, value, threshold) in volatility.items():
        assert (at, value, threshold) == (expected[key][0], pytest.approx(expected[key][1], rel=1e-9),
                                          pytest.approx(expected[key][2], rel=1e-9))
