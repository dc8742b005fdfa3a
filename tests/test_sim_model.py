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
