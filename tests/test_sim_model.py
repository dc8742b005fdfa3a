"""The simulator's trade model, called directly: determinism, continuity, grids, ids, sums, real-data fitting, shocks."""

from __future__ import annotations

from functools import reduce
from operator import add

import numpy as np
import pytest

from exchange_sim.markets import upbit_spec, upbit_ticks
from exchange_sim.model import DAY_MS, Model, ModelConfig, ohlcv, seq_sum
from exchange_sim.realdata import load_csv

START_DAY = 20_332  # 2025-09-01


def model(seed: int = 42, real=None, live_day: int = 30_000) -> Model:
    return Model(ModelConfig(seed=seed, history_start_ms=START_DAY * DAY_MS, live_epoch_ms=live_day * DAY_MS,
                             real=real or {}))


def test_same_seed_same_trades_other_seed_other_trades():
    a, b, c = model(1), model(1), model(2)
    ta = a.trades("binance", "ETHUSDT", (START_DAY + 40) * DAY_MS, (START_DAY + 41) * DAY_MS)
    tb = b.trades("binance", "ETHUSDT", (START_DAY + 40) * DAY_MS, (START_DAY + 41) * DAY_MS)
    tc = c.trades("binance", "ETHUSDT", (START_DAY + 40) * DAY_MS, (START_DAY + 41) * DAY_MS)
    for name in ("ts", "price", "volume", "buy", "ids", "agg"):
        assert np.array_equal(getattr(ta, name), getattr(tb, name))
    assert len(ta) != len(tc) or not np.array_equal(ta.price, tc.price)


def test_paths_are_continuous_across_days_and_on_the_grid():
    m = model()
    for market in ("KRW-XRP", "KRW-SOL"):
        spec = upbit_spec(market)
        for day in range(START_DAY + 50, START_DAY + 55):
            last = m.day_trades(spec, day).price[-20:].mean()
            first = m.day_trades(spec, day + 1).price[:20].mean()
            assert abs(first / last - 1) < 0.01, (market, day)  # no jump at midnight
        prices = m.day_trades(spec, START_DAY + 50).price
        ticks = upbit_ticks(prices)
        assert np.allclose(np.round(prices / ticks) * ticks, prices, rtol=0, atol=1e-9)


def test_binance_ids_are_contiguous_across_days_and_locatable():
    m = model()
    spec = m.spec("binance", "BTCUSDT")
    t = m.trades("binance", "BTCUSDT", (START_DAY + 3) * DAY_MS - 3_600_000, (START_DAY + 3) * DAY_MS + 3_600_000)
    assert np.array_equal(np.diff(t.ids), np.ones(len(t) - 1, np.int64))
    assert set(np.diff(t.agg).tolist()) <= {0, 1}
    assert m.locate(spec, int(t.ids[-1]), agg=False, last_day=START_DAY + 10) == START_DAY + 3
    assert m.locate(spec, int(t.agg[0]), agg=True, last_day=START_DAY + 10) == START_DAY + 2
    # a fill that continues a taker order shares its time, price and side
    same = t.agg[1:] == t.agg[:-1]
    assert same.any()
    assert np.array_equal(t.ts[1:][same], t.ts[:-1][same]) and np.array_equal(t.price[1:][same], t.price[:-1][same])


def test_seq_sum_is_a_left_fold():
    rng = np.random.default_rng(0)
    values = rng.lognormal(0, 3, 5000)
    starts = np.array([0, 7, 1000, 1003, 4000])
    sums = seq_sum(values, starts)
    ends = list(starts[1:]) + [len(values)]
    assert sums.tolist() == [reduce(add, values[s:e].tolist()) for s, e in zip(starts, ends)]
    # the difference is real: numpy's pairwise sum disagrees in the last bits somewhere
    assert any(float(np.sum(values[s:e])) != x for s, e, x in zip(starts, ends, sums.tolist()))


def test_real_candles_drive_real_minutes(recorded_data):
    real = load_csv(next((recorded_data / "upbit").glob("KRW-ETH_1m_*.csv")))
    m = model(real={"KRW-ETH": real})
    day = START_DAY + 5
    c = ohlcv(m.day_trades(upbit_spec("KRW-ETH"), day), 60_000)
    lo, hi = np.searchsorted(real.minute, [day * 1440, (day + 1) * 1440])
    assert np.array_equal(c.start // 60_000, real.minute[lo:hi])
    for ours, theirs in ((c.open, real.open), (c.high, real.high), (c.low, real.low), (c.close, real.close)):
        assert np.array_equal(ours, theirs[lo:hi])
    # after the recording the path continues from its last close
    spec = upbit_spec("KRW-ETH")
    after = m.day_trades(spec, real.last_minute // 1440)
    tail = after.price[after.ts >= (real.last_minute + 1) * 60_000]
    assert abs(tail[0] / real.close[-1] - 1) < 0.01


def test_shocks_apply_from_their_time_and_stay_on_the_grid():
    m = model()
    spec = upbit_spec("KRW-BTC")
    day = START_DAY + 20
    before = m.day_trades(spec, day)
    at = int(before.ts[len(before) // 2])
    m.add_shock("upbit", "KRW-BTC", at, 5.0)
    after = m.day_trades(spec, day)
    early, late = before.ts < at, before.ts >= at
    assert np.array_equal(after.price[early], before.price[early])
    assert np.allclose(after.price[late] / before.price[late], 1.05, rtol=1e-4)
    assert np.all(after.price % 1000 == 0)
    with pytest.raises(ValueError):
        m.add_shock("upbit", "KRW-BTC", at - 1, 1.0)  # shocks come in time order


def test_bad_real_csv_is_refused_with_its_line(tmp_path):
    bad = tmp_path / "KRW-BTC_1m_bad.csv"
    bad.write_text("timestamp,open,high,low,close,volume\n2025-09-01 00:00:00,10,9,8,10,1\n")
    with pytest.raises(ValueError, match=r":2: inconsistent candle"):
        load_csv(bad)


def test_ticker_totals_are_the_day_candle_so_far():
    from exchange_sim.upbit_shapes import ticker_fields

    m = model()
    spec = upbit_spec("KRW-SOL")
    day = START_DAY + 30
    at = day * DAY_MS + 13 * 3_600_000
    fields = ticker_fields(m, spec, at)
    candle = m.day_candle(spec, day, at + 1)
    assert (fields["opening_price"], fields["high_price"], fields["low_price"]) == (
        candle.open[0], candle.high[0], candle.low[0])
    assert fields["acc_trade_volume"] == candle.volume[0] and fields["acc_trade_price"] == candle.quote[0]
    assert fields["trade_timestamp"] == candle.last_ts[0] and fields["trade_price"] == candle.close[0]
    assert fields["acc_bid_volume"] + fields["acc_ask_volume"] == pytest.approx(fields["acc_trade_volume"])
    last_24h = m.trades("upbit", "KRW-SOL", at - DAY_MS + 1, at + 1)
    assert fields["acc_trade_volume_24h"] == pytest.approx(float(last_24h.volume.sum()), rel=1e-9)


# ---- chunked generation: bounded memory, exact regeneration, shocks with a burst ---------------------------------
def live_model(rate: float, cache_trades: int = 3_000_000) -> Model:
    """Live from START_DAY 00:00 at ``rate`` trades/s per market: a day is far bigger than one chunk."""
    return Model(ModelConfig(seed=42, history_start_ms=START_DAY * DAY_MS, live_epoch_ms=START_DAY * DAY_MS,
                             live_rate=rate), cache_trades=cache_trades)


def _same(a, b) -> bool:
    return all(np.array_equal(getattr(a, n), getattr(b, n)) for n in ("ts", "price", "volume", "buy", "ids", "agg"))


def test_live_trades_come_in_bounded_chunks_and_regenerate_bit_for_bit():
    from exchange_sim.model import CHUNK_TRADES

    m = live_model(100.0, cache_trades=60_000)
    spec = m.spec("binance", "ETHUSDT")
    plan = m.plan(spec, START_DAY)
    sizes = np.diff(plan.first[plan.bounds])
    assert plan.chunks > 100 and sizes.max() <= CHUNK_TRADES + plan.n.max()  # ~8k trades a chunk, whole minutes
    first = m.trades("binance", "ETHUSDT", START_DAY * DAY_MS, START_DAY * DAY_MS + 600_000)
    for hour in range(1, 6):  # walk five hours: the LRU evicts the first chunks
        m.trades("binance", "ETHUSDT", START_DAY * DAY_MS + hour * 3_600_000, START_DAY * DAY_MS + hour * 3_600_000 + 600_000)
        assert m.cache_info()["chunk_trades"] <= 60_000
    again = m.trades("binance", "ETHUSDT", START_DAY * DAY_MS, START_DAY * DAY_MS + 600_000)
    assert _same(first, again) and len(first) > 50_000  # evicted and regenerated: the same trades
    assert _same(first, live_model(100.0).trades("binance", "ETHUSDT", START_DAY * DAY_MS, START_DAY * DAY_MS + 600_000))
    assert np.array_equal(np.diff(first.ids), np.ones(len(first) - 1, np.int64))  # contiguous over chunks...
    midnight = m.trades("binance", "ETHUSDT", (START_DAY + 1) * DAY_MS - 30_000, (START_DAY + 1) * DAY_MS + 30_000)
    assert np.array_equal(np.diff(midnight.ids), np.ones(len(midnight) - 1, np.int64))  # ...and days


def test_day_totals_are_left_folds_over_many_chunks_and_the_window_matches_its_trades():
    m = live_model(30.0)
    spec = m.spec("binance", "SOLUSDT")
    at = START_DAY * DAY_MS + 7 * 3_600_000 + 12_345
    trades = m.trades("binance", "SOLUSDT", START_DAY * DAY_MS, at)
    tot = m.totals(spec, START_DAY, at)
    assert m.plan(spec, START_DAY).chunk_of(7 * 60) > 20 and tot.count == len(trades)
    assert tot.volume == reduce(add, trades.volume.tolist())  # exactly: a fold carried from chunk to chunk
    assert tot.quote == reduce(add, (trades.price * trades.volume).tolist())
    assert (tot.high, tot.low, tot.close) == (trades.price.max(), trades.price.min(), trades.price[-1])
    start = at - 5 * 3_600_000 + 999
    w = m.window(spec, start, at)
    inside = m.trades("binance", "SOLUSDT", start, at)
    assert (w.count, w.first_id, w.last_id, w.open, w.close) == (
        len(inside), inside.ids[0], inside.ids[-1], inside.price[0], inside.price[-1])
    assert (w.high, w.low) == (inside.price.max(), inside.price.min())
    assert w.volume == pytest.approx(float(inside.volume.sum()), rel=1e-12)


def test_a_live_shock_keeps_earlier_trades_and_brings_a_burst():
    from exchange_sim.model import BURST_FACTOR, BURST_MINUTES

    m = live_model(20.0)
    day0 = START_DAY * DAY_MS
    at = day0 + 5 * 3_600_000 + 30_123  # mid-minute, mid-chunk
    span = (at - 600_000, at + 1_800_000)
    before = m.trades("binance", "BTCUSDT", *span)
    m.add_shock("binance", "BTCUSDT", at, 10.0)
    after = m.trades("binance", "BTCUSDT", *span)
    early = before.ts < at
    assert _same(before.mask(early), after.mask(after.ts < at))  # nothing already sent changes
    burst_start = (at // 60_000 + 1) * 60_000
    in_burst = lambda t: int(((t.ts >= burst_start) & (t.ts < burst_start + BURST_MINUTES * 60_000)).sum())  # noqa: E731
    assert in_burst(after) > 0.6 * BURST_FACTOR * in_burst(before)
    assert np.array_equal(np.diff(after.ids), np.ones(len(after) - 1, np.int64))  # ids stay contiguous
    late = after.ts >= at
    assert np.all(after.price[late] > 0) and after.price[late].mean() > 1.05 * before.price[before.ts < at][-100:].mean()
    next_day = m.trades("binance", "BTCUSDT", day0 + DAY_MS, day0 + DAY_MS + 60_000)
    last_of_day = m.trades("binance", "BTCUSDT", day0 + DAY_MS - 60_000, day0 + DAY_MS)
    assert next_day.ids[0] == last_of_day.ids[-1] + 1  # the burst's extra trades shift the next day's ids


def test_a_stream_cursor_follows_a_shock_without_gaps_or_changes():
    from exchange_sim.config import SimConfig
    from exchange_sim.state import Sim
    from exchange_sim.streams import Cursor

    sim = Sim(SimConfig(seed=42, history_start=None, history_days=3, trade_rate=20.0, real_csv={},
                        live_epoch_ms=None))
    spec = sim.binance["BTCUSDT"]
    t0 = sim.model.config.live_epoch_ms + 1_000
    cursor = Cursor(sim, spec, t0)
    sent = [cursor.take(t0 + 20_000, 100_000)]
    at = sim.emitted_until[("binance", "BTCUSDT")] + 1
    sim.model.add_shock("binance", "BTCUSDT", at, -3.0)
    for step in range(1, 60):  # ten minutes, in 10 s steps, past the burst
        sent.append(cursor.take(t0 + 20_000 + step * 10_000, 100_000))
    got = [t for t in sent if len(t)]
    ids = np.concatenate([t.ids for t in got])
    truth = sim.model.trades("binance", "BTCUSDT", t0 + 1, int(got[-1].ts[-1]) + 1)
    assert np.array_equal(ids, truth.ids) and np.array_equal(np.concatenate([t.price for t in got]), truth.price)


def test_upbit_empty_minutes_follow_the_rate_as_a_poisson_count_would():
    day0 = START_DAY * DAY_MS

    def empty_minutes(m: Model) -> int:
        t = m.trades("upbit", "KRW-SOL", day0, day0 + DAY_MS)
        return 1440 - len(np.unique(t.ts // 60_000))

    recorded = empty_minutes(model())  # history at the recorded rate (20 a minute): Upbit's ~3 % of gaps
    assert 15 <= recorded <= 70
    assert empty_minutes(live_model(1.0)) <= 1  # 3x the recorded rate: 0.03^3 a minute, none in a day
    thin = empty_minutes(live_model(0.2))  # 12 a minute: 0.03^0.6, about 12 %
    assert 100 <= thin <= 260 and thin > recorded
