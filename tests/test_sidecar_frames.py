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
def test_upbit_batches_without_a_pattern_resolve_frame_by_frame(frames):
    check_same(UPBIT, frames)
