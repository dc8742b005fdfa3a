"""Batch resolution of raw frames (streaming_sensor/frames.py) against the per-frame parser it replaces on the hot path.

The reference is what the receive loop did before ADR 0010: ``Feed.parse`` on each frame, control frames dropped, dead
letters in the trade stream with their reason. On arbitrary input, the vectorized path must give the same rows in the
same order, the same dead letters and the same counters.
"""

from __future__ import annotations

import orjson
import pyarrow as pa
from hypothesis import given, settings as hsettings, strategies as st

from streaming_sensor import feeds
from streaming_sensor.frames import _fast_trades, resolve

BINANCE = feeds.BinanceFeed("ws://127.0.0.1:1", ("BTCUSDT", "ETHUSDT"))
UPBIT = feeds.UpbitFeed("ws://127.0.0.1:1/websocket/v1", ("KRW-BTC",))
SESSION = "0123456789abcdef"
T0 = 1_785_395_040_000


def reference(feed: feeds.Feed, frames: list[bytes], times_ns: list[int]):
    rows: dict[str, list[tuple]] = {}
    messages = malformed = 0
    lag = 0.0
    for frame, now_ns in zip(frames, times_ns):
        p = feed.parse(frame)
        if p.kind == feeds.CONTROL:
            continue
        messages += 1
        if p.kind == feeds.DEAD:
            malformed += 1
            row = (feed.exchange, p.market, None, None, now_ns // 1000, SESSION, frame, p.error)
            rows.setdefault(feeds.TRADE, []).append(row)
            continue
        rows.setdefault(p.kind, []).append((feed.exchange, p.market, p.trade_id, p.event_ms, now_ns // 1000, SESSION,
                                            frame, None))
        if p.kind == feeds.TRADE:
            lag = max(lag, now_ns / 1e9 - p.event_ms / 1e3)
    return rows, messages, malformed, lag


def check_same(feed: feeds.Feed, frames: list[bytes]) -> None:
    if feed.trade_pattern and frames:  # resolve() falls back to the per-frame path if it raises: here it must not
        _fast_trades(feed, pa.array(frames, pa.binary()))
    times = [T0 * 1_000_000 + 1_234_567 * i for i in range(len(frames))]
    out = resolve(feed, SESSION, frames, times)
    rows, messages, malformed, lag = reference(feed, frames, times)
    got = {ch: [tuple(r.values()) for r in b.to_pylist()] for ch, b in out.batches.items()}
    assert got == rows
    assert (out.messages, out.malformed) == (messages, malformed)
    assert abs(out.lag_s - lag) < 1e-5


def trade(t: int = 1, market: str = "BTCUSDT", p: str = "70000.5", q: str = "0.001", ts: int = T0, m: bool = True) -> dict:
    return {"e": "trade", "E": ts + 3, "s": market, "t": t, "p": p, "q": q, "T": ts, "m": m, "M": True}


def combined(data) -> bytes:
    return orjson.dumps({"stream": "btcusdt@trade", "data": data})  # compact, key order kept: the exchange's shape


odd = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False), st.text(max_size=12),
    st.sampled_from([0, 1, 2, "1", "0", {}, [], -1, 2**63 - 1, 2**63, 10**18, 10**17, 1.0, -0.0, "1e3", "1.", ".5", "0" * 31, "1" * 31,
                     "1." + "0" * 31, "nan", "inf", " 1", "1_0", "１", "", "BTCUSDT", "DOGEUSDT", "btcusdt", "ETHUSDT"]),
)


@st.composite
def near_trade(draw) -> bytes:
    """A valid trade frame with fields replaced, removed or added, or bytes inserted, deleted or replaced."""
    data = trade(draw(st.integers(0, 2**63 - 1)), draw(st.sampled_from(["BTCUSDT", "ETHUSDT", "XRPUSDT"])),
                 draw(st.from_regex(r"\A[0-9]{1,5}(\.[0-9]{1,8})?\Z")), draw(st.from_regex(r"\A[0-9]{1,3}\.[0-9]{1,8}\Z")),
                 draw(st.integers(0, 2**63 - 1)), draw(st.booleans()))
    how = draw(st.sampled_from(["as is", "fields", "bytes", "bare"]))
    if how == "fields":
        for key in draw(st.lists(st.sampled_from(sorted(data) + ["result", "id"]), min_size=1, max_size=3, unique=True)):
            if draw(st.booleans()):
                data[key] = draw(odd)
            else:
                data.pop(key, None)
    frame = orjson.dumps(data) if how == "bare" else combined(data)
    if how == "bytes":
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(frame)))
            new = draw(st.sampled_from([b"", b" ", b"\n", b"0", b"9", b"-", b".", b"e", b'"', b"\\", b",", b"}", b"\xff",
                                        b"\xc3\xa9", b'"t":1,', b"{}", b"00"]))
            frame = frame[:i] + new + frame[i + draw(st.integers(0, 2)):]
    return frame


binance_frames = st.one_of(
    near_trade(), near_trade(), near_trade(), st.binary(max_size=60),
    st.sampled_from([b'{"result":null,"id":1}', combined({"e": "serverShutdown", "E": 1}), b"", b"null", b"[]",
                     combined({**trade(), "result": None, "id": 1}), combined(trade()) + b" ", combined(trade()) + b"\n",
                     combined(trade()).replace(b'"t":1', b'"t":1,"t":2'), combined(trade()).replace(b'"s"', b'"\\u0073"')]),
)


@hsettings(max_examples=300, deadline=None)
@given(frames=st.lists(binance_frames, max_size=30))
def test_binance_batches_resolve_exactly_as_the_per_frame_parser(frames):
    check_same(BINANCE, frames)


ODD_VALUES = [None, True, False, 0, 1, 2, -1, 1.0, 1e2, -0.0, 2**63 - 1, 2**63, 2**64 - 1, 10**18, 10**17, "", "1", "0",
              "1.5", "1e3", "1.", ".5", "0" * 31, "1" * 31, "1." + "1" * 31, "nan", "inf", " 1", "1_0", "１", "true",
              "BTCUSDT", "DOGEUSDT", "btcusdt", "ETHUSDT", "BTC\"USDT", {}, [], {"e": "trade"}, ["BTCUSDT"]]
EDITS = [b"", b" ", b"\n", b"0", b"1", b"9", b"-", b"+", b".", b"e", b"E", b'"', b"\\", b",", b":", b"{", b"}", b"[",
         b"\xff", b"\xc3\xa9", b"A", b"a", b"00", b'"t":1,', b"{}", b"true"]


def test_every_single_field_substitution_resolves_as_the_parser():
    """Exhaustive, not drawn: each field of a valid trade (and "result"/"id") replaced by each odd value or removed."""
    frames = []
    for key in [*trade(), "result", "id", "extra"]:
        for value in [*ODD_VALUES, "<removed>"]:
            data = trade(len(frames) + 1)
            if value == "<removed>":
                data.pop(key, None)
            else:
                data[key] = value
            frames.append(combined(data))
            frames.append(orjson.dumps(data))  # the raw-stream shape (no "stream" wrapper)
    frames.append(orjson.dumps({"data": trade()}))  # "data" without "stream"
    check_same(BINANCE, frames)


def test_every_single_byte_edit_of_a_valid_frame_resolves_as_the_parser():
    """Exhaustive: at every position of a valid trade frame, each edit inserted, or replacing one or two bytes."""
    base = combined(trade(123456789, "ETHUSDT", "70000.12", "0.5", T0, False))
    frames = [base[:i] + new + base[i + cut:] for i in range(len(base) + 1) for new in EDITS for cut in (0, 1, 2)]
    check_same(BINANCE, frames)


@hsettings(max_examples=50, deadline=None)
@given(ids=st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=50))
def test_clean_trade_batches_take_the_vectorized_path_and_match(ids):
    frames = [combined(trade(t, "ETHUSDT" if t % 2 else "BTCUSDT")) for t in ids]
    check_same(BINANCE, frames)
    assert all(BINANCE.parse(f).kind == feeds.TRADE for f in frames)


def test_the_pattern_matches_the_exchanges_own_trade_frames(recorded_data):
    """Real recorded frames (and the simulator's format) are ordinary trades: they must take the fast path."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from exchange_sim.binance_ws import TRADE as SIM_TRADE
    from test_sidecar_parsers import binance_frames as recorded  # tests/ is on sys.path (pytest's rootdir-relative import)

    frames = [frame for _, frame in recorded(recorded_data, limit=2_000)]
    # the simulator's combined-stream frame, byte for byte as it builds it
    frames.append(b'{"stream":"btcusdt@trade","data":' + (SIM_TRADE % (T0, "BTCUSDT", 7, 1.5, 2.5, T0, "true")).encode() + b"}")
    matched = pc.extract_regex(pa.array(frames, pa.binary()), BINANCE.trade_pattern).is_valid()
    assert pc.all(matched).as_py()
    check_same(feeds.BinanceFeed("ws://x", ("TRXUSDT", "BTCUSDT")), frames)


@hsettings(max_examples=100, deadline=None)
@given(frames=st.lists(st.one_of(st.binary(max_size=40), st.sampled_from([
    b'{"status":"UP"}', orjson.dumps({"type": "ticker", "code": "KRW-BTC", "timestamp": T0}),
    orjson.dumps({"type": "trade", "code": "KRW-BTC", "trade_timestamp": T0, "trade_price": 1.0, "trade_volume": 1.0,
                  "ask_bid": "BID", "sequential_id": 5}), b'{"type":"trade","code":"KRW-ETH"}'])), max_size=20))
def test_upbit_odd_and_control_frames_resolve_as_the_parser(frames):
    check_same(UPBIT, frames)


# ---- Upbit (issue 17): trade and ticker patterns -------------------------------------------------------------------
UPBIT2 = feeds.UpbitFeed("ws://127.0.0.1:1/websocket/v1", ("KRW-BTC", "KRW-ETH"))


def upbit_trade(sid: int = 17853950437790001, market: str = "KRW-BTC", price=91361000.0, volume=0.01275549,
                ts: int = T0, side: str = "BID", quotes: bool = True) -> dict:
    """The simulator's (and today's Upbit's) trade frame, key order kept; ``quotes=False``: the 2023 shape."""
    frame = {"type": "trade", "code": market, "timestamp": ts + 20, "trade_date": "2026-07-30", "trade_time": "07:04:03",
             "trade_timestamp": ts, "trade_price": price, "trade_volume": volume, "ask_bid": side,
             "prev_closing_price": 91424000.0, "change": "FALL", "change_price": 63000.0, "sequential_id": sid}
    if quotes:
        frame |= {"best_ask_price": 91370000, "best_ask_size": 0.12, "best_bid_price": 91361000, "best_bid_size": 0.002}
    return frame | {"stream_type": "REALTIME"}


def upbit_ticker(market: str = "KRW-BTC", ts: int = T0) -> dict:
    keys = ["opening_price", "high_price", "low_price", "trade_price", "prev_closing_price", "change", "change_price",
            "signed_change_price", "change_rate", "signed_change_rate", "trade_volume", "acc_trade_volume",
            "acc_trade_volume_24h", "acc_trade_price", "acc_trade_price_24h", "trade_date", "trade_time",
            "trade_timestamp", "ask_bid", "acc_ask_volume", "acc_bid_volume", "highest_52_week_price",
            "highest_52_week_date", "lowest_52_week_price", "lowest_52_week_date", "market_state",
            "is_trading_suspended", "delisting_date", "market_warning"]
    values = {k: 1.5 for k in keys} | {"change": "RISE", "trade_date": "20260730", "ask_bid": "BID", "trade_timestamp": ts,
                                      "is_trading_suspended": False, "delisting_date": None, "market_warning": "NONE"}
    return {"type": "ticker", "code": market, **values, "timestamp": ts, "stream_type": "REALTIME"}


UPBIT_ODD = [*ODD_VALUES, "KRW-BTC", "KRW-ETH", "KRW-DOGE", "ASK", "BID", "bid", 0.0, 1e-05, 5e-324, 1e308, -1.5,
             "trade", "ticker", "é", "a\nb", "a\"b"]


def test_every_upbit_field_substitution_resolves_as_the_parser():
    """Exhaustive: each field of a trade (both shapes) and a ticker replaced by each odd value, or removed, or a key
    added; every frame resolves as ``parse`` says, fast path or not."""
    frames = []
    for base in (upbit_trade(), upbit_trade(quotes=False), upbit_ticker()):
        for key in [*base, "extra"]:
            for value in [*UPBIT_ODD, "<removed>"]:
                data = dict(base)
                if value == "<removed>":
                    data.pop(key, None)
                else:
                    data[key] = value
                frames.append(orjson.dumps(data))
    check_same(UPBIT2, frames)


def test_every_single_byte_edit_of_an_upbit_frame_resolves_as_the_parser():
    for base in (orjson.dumps(upbit_trade(123456789, "KRW-ETH", 4123000.5, 0.5, T0, "ASK")), orjson.dumps(upbit_ticker())):
        frames = [base[:i] + new + base[i + cut:] for i in range(len(base) + 1) for new in EDITS for cut in (0, 1, 2)]
        check_same(UPBIT2, frames)


upbit_frames = st.one_of(
    st.builds(lambda sid, m, p, v, side, q: orjson.dumps(upbit_trade(sid, m, p, v, T0, side, q)),
              st.integers(0, 2**63 - 1), st.sampled_from(["KRW-BTC", "KRW-ETH", "KRW-XRP"]),
              st.one_of(st.floats(min_value=0, max_value=1e12), st.integers(0, 10**19)),
              st.one_of(st.floats(min_value=-1, max_value=1e6), st.integers(-1, 10**19)),
              st.sampled_from(["ASK", "BID", "SELL"]), st.booleans()),
    st.builds(lambda m, ts: orjson.dumps(upbit_ticker(m, ts)), st.sampled_from(["KRW-BTC", "KRW-ETH", "KRW-XRP"]),
              st.integers(-1, 2**64 - 1)),
    st.sampled_from([b'{"status":"UP"}', b'{"error":{"name":"WRONG_FORMAT","message":"x"}}', b"", b"[]"]),
    st.binary(max_size=40),
)


@hsettings(max_examples=80, deadline=None)
@given(frames=st.lists(upbit_frames, max_size=30))
def test_upbit_batches_resolve_exactly_as_the_per_frame_parser(frames):
    check_same(UPBIT2, frames)


def test_upbit_trades_and_tickers_of_the_exchange_and_the_simulator_take_the_fast_path(recorded_data):
    """The recorded 2023 frames (without quotes), the simulator's own trade and ticker frames: all matched."""
    import asyncio
    import json

    import pyarrow.compute as pc
    from websockets.asyncio.client import connect

    from exchange_sim.testing import running_sim

    recorded = json.loads((recorded_data / "upbit" / "native_samples.json").read_text())
    frames = [orjson.dumps(f) for f in recorded["ws_trade_default_format__captured_2023-11-19"]]

    async def sim_frames(url: str) -> list[bytes]:
        async with connect(url) as ws:
            codes = ["KRW-BTC", "KRW-ETH"]
            await ws.send(json.dumps([{"ticket": "t"}, {"type": "trade", "codes": codes, "is_only_realtime": True},
                                      {"type": "ticker", "codes": codes, "is_only_realtime": True},
                                      {"format": "DEFAULT"}]))
            return [await ws.recv(decode=False) for _ in range(40)]

    with running_sim(trade_rate=20, upbit_markets=["KRW-BTC", "KRW-ETH"]) as sim:
        live = asyncio.run(sim_frames(sim.upbit_ws_url))
    kinds = {UPBIT2.parse(f).kind for f in live}
    assert kinds == {feeds.TRADE, feeds.TICKER}, kinds
    raw = pa.array(frames + live, pa.binary())
    trades = pc.match_substring_regex(raw, UPBIT2.trade_pattern)
    tickers = pc.match_substring_regex(raw, UPBIT2.ticker_pattern)
    assert pc.all(pc.or_(trades, tickers)).as_py()
    out = resolve(UPBIT2, SESSION, frames + live, [T0 * 1_000_000] * len(raw))
    assert out.malformed == 0 and set(out.batches) == {feeds.TRADE, feeds.TICKER}
    check_same(UPBIT2, frames + live)
