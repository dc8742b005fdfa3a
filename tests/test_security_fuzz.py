"""Fuzzing (Hypothesis): whatever an exchange or an attacker sends, the sidecar's parsers answer with a verdict and never
raise, and the ingest run turns every landed frame into exactly one bronze row or one dead letter, never a crash.
"""

from __future__ import annotations

import json
import shutil
import time

import dagster as dg
from hypothesis import HealthCheck, Phase, given, settings as hsettings, strategies as st

from cryptoflow_dagster import lake
from cryptoflow_dagster.defs.streaming.jobs import single_pass, streaming_ingest_job
from cryptoflow_dagster.resources import build_resources
from streaming_sensor import feeds
from streaming_sensor.batches import MicroBatcher

UPBIT = feeds.UpbitFeed("ws://127.0.0.1:1/websocket/v1", ("KRW-BTC", "KRW-ETH"))
BINANCE = feeds.BinanceFeed("ws://127.0.0.1:1", ("BTCUSDT",))
KINDS = {feeds.TRADE, feeds.TICKER, feeds.CONTROL, feeds.DEAD}
T0 = 1_785_395_040_000

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Values that stress the fields the parsers and silver read: huge and negative numbers, numeric-looking strings.
odd_values = st.one_of(
    json_values,
    st.sampled_from([0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1e308, -0.0, 5e-324, "1e999", "nan", "inf", "-1", "1_0",
                     " 1", "0x10", "", "１２", True, "BID", "ASK", "KRW-BTC", "BTCUSDT", "KRW-BTC'; DROP TABLE x; --"]),
)
UPBIT_TRADE = {"type": "trade", "code": "KRW-BTC", "timestamp": T0, "trade_timestamp": T0, "trade_price": 100.0,
               "trade_volume": 0.5, "ask_bid": "BID", "sequential_id": 1, "stream_type": "REALTIME"}
BINANCE_TRADE = {"e": "trade", "E": T0, "s": "BTCUSDT", "t": 1, "p": "70000.5", "q": "0.001", "T": T0, "m": True,
                 "M": True}


@st.composite
def mutated(draw, base: dict) -> dict:
    """A valid trade with some fields replaced by odd values, some removed and some added."""
    msg = dict(base)
    for key in draw(st.lists(st.sampled_from(sorted(base)), max_size=3, unique=True)):
        if draw(st.booleans()):
            msg[key] = draw(odd_values)
        else:
            msg.pop(key)
    msg.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)))
    return msg


def upbit_frames():
    return st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                     mutated(UPBIT_TRADE).map(lambda m: json.dumps(m).encode()))


def binance_frames():
    return st.one_of(
        st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
        mutated(BINANCE_TRADE).map(lambda d: json.dumps({"stream": "btcusdt@trade", "data": d}).encode()),
        mutated(BINANCE_TRADE).map(lambda d: json.dumps(d).encode()),
    )


def check_verdict(parsed: feeds.Parsed) -> None:
    assert parsed.kind in KINDS
    if parsed.kind == feeds.DEAD:
        assert parsed.error
    if parsed.kind == feeds.TRADE:
        assert isinstance(parsed.trade_id, int) and isinstance(parsed.event_ms, int) and parsed.market
        assert 0 <= parsed.trade_id < 2**63 and 0 <= parsed.event_ms < 2**63  # they land in int64 columns


@hsettings(max_examples=400, deadline=None)
@given(frame=upbit_frames())
def test_upbit_parser_gives_a_verdict_for_any_frame(frame):
    parsed = UPBIT.parse(frame)
    check_verdict(parsed)
    if parsed.kind == feeds.TRADE:
        assert parsed.market in UPBIT.markets


@hsettings(max_examples=400, deadline=None)
@given(frame=binance_frames())
def test_binance_parser_gives_a_verdict_for_any_frame(frame):
    parsed = BINANCE.parse(frame)
    check_verdict(parsed)
    if parsed.kind == feeds.TRADE:
        assert parsed.market in BINANCE.markets


@hsettings(max_examples=200, deadline=None)
@given(text=st.text(max_size=100))
def test_parsers_take_text_frames_too(text):
    check_verdict(UPBIT.parse(text))
    check_verdict(BINANCE.parse(text))


def land(batcher: MicroBatcher, feed: feeds.Feed, frame: bytes) -> str:
    """What the sidecar's receive loop does with a frame (streaming_sensor/connection.py); returns the channel."""
    p = feed.parse(frame)
    receive_us = time.time_ns() // 1000
    if p.kind == feeds.DEAD:
        batcher.add(feed.exchange, feeds.TRADE, p.market, None, None, receive_us, "fuzzsession01", frame, p.error)
        return feeds.TRADE
    if p.kind == feeds.CONTROL:
        return feeds.CONTROL
    batcher.add(feed.exchange, p.kind, p.market, p.trade_id, p.event_ms, receive_us, "fuzzsession01", frame, None)
    return p.kind


# no shrinking: each example is a Dagster run, and a failing one is reported as drawn
@hsettings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.generate], suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.data_too_large, HealthCheck.too_slow])
@given(upbit=st.lists(upbit_frames(), min_size=1, max_size=40), binance=st.lists(binance_frames(), min_size=1, max_size=40))
def test_ingest_turns_any_landed_frames_into_bronze_rows_or_dead_letters(settings, upbit, binance):
    shutil.rmtree(settings.landing_dir, ignore_errors=True)  # each example starts empty (the fixture's home is shared)
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        for table in ("bronze.trades_raw", "bronze.dead_letters", "silver.trades", "ops.ingested_files"):
            con.execute(f"DELETE FROM {table}")
    batcher = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
    landed = sum(land(batcher, UPBIT, f) == feeds.TRADE for f in upbit)
    landed += sum(land(batcher, BINANCE, f) == feeds.TRADE for f in binance)
    dead_frames = [f for f in upbit if UPBIT.parse(f).kind == feeds.DEAD] + \
                  [f for f in binance if BINANCE.parse(f).kind == feeds.DEAD]
    batcher.flush()

    with dg.DagsterInstance.ephemeral() as instance:
        result = streaming_ingest_job.execute_in_process(run_config=single_pass(), instance=instance, resources=build_resources())
    assert result.success

    with lake.session(settings, read_only=True) as con:
        bronze = con.execute("SELECT count(*) FROM bronze.trades_raw").fetchone()[0]
        dead = [bytes(r[0]) for r in con.execute("SELECT raw FROM bronze.dead_letters").fetchall()]
        silver = con.execute("SELECT count(*), count(*) FILTER (WHERE price > 0 AND volume >= 0 AND side IN "
                             "('buy', 'sell')) FROM silver.trades").fetchone()
    assert bronze + len(dead) == landed  # each frame is exactly one of the two
    for frame in dead_frames:
        assert frame in dead
    assert silver[0] == silver[1]  # whatever reached silver is well-formed


def test_ingest_dead_letters_frames_that_pass_the_parser_but_hold_impossible_values(settings):
    """Field values the hot-path parser lets through (it checks types, not ranges) must still not crash the run."""
    upbit = [{**UPBIT_TRADE, "sequential_id": i, **extra} for i, extra in enumerate([
        {"trade_timestamp": 2**63 - 1}, {"trade_timestamp": -(2**63)}, {"trade_timestamp": -1}, {"trade_timestamp": 0},
        {"trade_price": 1e308, "trade_volume": 1e308}, {"trade_price": 5e-324}, {"sequential_id": -(2**63)}, {}], 1)]
    binance = [{**BINANCE_TRADE, "t": i, **extra} for i, extra in enumerate([
        {"p": "nan"}, {"p": "inf"}, {"p": "1e999"}, {"p": "1_0"}, {"p": " 1"}, {"q": "-inf"}, {"p": "-5"},
        {"T": 2**63 - 1}, {"T": -(2**63)}, {"t": 2**64 - 1}, {}], 1)]
    batcher = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
    frames = [(UPBIT, json.dumps(m).encode()) for m in upbit]
    frames += [(BINANCE, json.dumps({"stream": "btcusdt@trade", "data": d}).encode()) for d in binance]
    landed = sum(land(batcher, feed, frame) == feeds.TRADE for feed, frame in frames)
    # as an older sidecar (whose parser let non-finite decimals through) would have landed them: ingest must refuse too
    for i, price in enumerate(["nan", "inf", "-inf"], 100):
        raw = json.dumps({"stream": "btcusdt@trade", "data": {**BINANCE_TRADE, "t": i, "p": price}}).encode()
        batcher.add("binance", feeds.TRADE, "BTCUSDT", i, T0, T0 * 1000, "fuzzsession01", raw, None)
        frames.append((BINANCE, raw))
        landed += 1
    batcher.flush()
    with dg.DagsterInstance.ephemeral() as instance:
        assert streaming_ingest_job.execute_in_process(run_config=single_pass(), instance=instance,
                                                       resources=build_resources()).success
    with lake.session(settings, read_only=True) as con:
        bronze = con.execute("SELECT count(*) FROM bronze.trades_raw").fetchone()[0]
        dead = con.execute("SELECT count(*) FROM bronze.dead_letters").fetchone()[0]
        silver = con.execute("SELECT exchange, trade_id, price, volume, epoch_ms(ts) FROM silver.trades ORDER BY ALL").fetchall()
    assert bronze + dead == landed == len(frames)
    # the untouched frames reach silver; nothing non-finite or non-positive does
    assert ("upbit", len(upbit), 100.0, 0.5, T0) in silver and ("binance", len(binance), 70000.5, 0.001, T0) in silver
    assert all(0 < price < float("inf") and 0 <= volume < float("inf") for _, _, price, volume, _ in silver), silver
