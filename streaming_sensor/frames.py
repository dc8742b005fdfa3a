"""Raw frames -> landing rows, a whole batch at a time, off the receive loop (ADR 0010).

The receive loop only keeps each frame and its receive time; this module gives every frame its verdict at flush time.
Frames matching the feed's ``trade_pattern`` (or ``ticker_pattern``) are resolved in one pass of Arrow's RE2 kernels
(native code that releases the GIL, so the event loop keeps reading sockets meanwhile); every other frame (a control
frame, a malformed or drifted one) goes through ``Feed.parse``, which stays the reference: the resolved rows, dead letters and counters are
exactly what the per-frame parser gives (tests/test_sidecar_frames.py checks that on arbitrary input).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from streaming_sensor import feeds
from cryptoflow_core import landing_files

log = logging.getLogger(__name__)

SCHEMA = landing_files.schema()


@dataclass
class Resolved:
    batches: dict[str, pa.RecordBatch]  # channel -> rows in SCHEMA, in arrival order
    messages: int = 0  # frames landed (control frames are not)
    malformed: int = 0  # dead letters among them
    lag_s: float = 0.0  # the largest receive time minus trade time seen


def resolve(feed: feeds.Feed, session: str, frames: list[bytes], times_ns: list[int]) -> Resolved:
    n = len(frames)
    if n == 0:
        return Resolved({})
    raw = pa.array(frames, pa.binary())
    receive_us = pc.divide(pa.array(times_ns, pa.int64()), 1000)
    try:
        fast = _fast_trades(feed, raw)
    except Exception:  # the fast path is an optimisation: whatever goes wrong in it, the per-frame parser decides
        log.exception("vectorized frame resolution failed; parsing the batch frame by frame")
        fast = None
    if fast is not None and fast[0].null_count == 0:  # the usual case: every frame an ordinary trade
        market, trade_id, event_ms = fast
        out = Resolved({feeds.TRADE: _batch(feed.exchange, session, market, trade_id, event_ms, receive_us, raw, None)})
        out.messages = n
        out.lag_s = _max_lag(receive_us, event_ms)
        return out
    tickers = None
    if fast is not None and feed.ticker_pattern is not None:
        try:
            tickers = _fast_tickers(feed, raw)
        except Exception:
            log.exception("vectorized ticker resolution failed; parsing the batch frame by frame")
    if tickers is not None:
        is_trade, is_ticker = fast[0].is_valid(), tickers[0].is_valid()
        if pc.all(pc.or_(is_trade, is_ticker)).as_py():  # Upbit's usual batch: trades and tickers, nothing else
            return _split(feed, session, raw, receive_us, fast, tickers, is_trade, is_ticker)
    return _mixed(feed, session, frames, raw, receive_us, fast, tickers)


def _fast_trades(feed: feeds.Feed, raw: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array] | None:
    """(market, trade_id, event_ms), null where the frame is not an ordinary trade of a subscribed market."""
    if feed.trade_pattern is None:
        return None
    market, trade_id, event_ms = _groups(raw, feed.trade_pattern, feed.trade_fields, ("market", "trade_id", "event_ms"))
    # every captured byte is ASCII digits or [A-Z0-9] (the pattern says so): these casts cannot fail
    market = market.cast(pa.string())
    subscribed = pc.is_in(market, value_set=pa.array(sorted(feed.markets), pa.string()))
    market = pc.if_else(subscribed, market, None)  # null stays null: unmatched frames are not ordinary trades either
    trade_id = pc.if_else(subscribed, trade_id.cast(pa.string()).cast(pa.int64()), None)
    event_ms = pc.if_else(subscribed, event_ms.cast(pa.string()).cast(pa.int64()), None)
    return market, trade_id, event_ms


def _groups(raw: pa.Array, pattern: str, fields: dict[str, str] | None, names: tuple[str, ...]) -> list[pa.Array]:
    """The named values of frames matching ``pattern`` in full, null elsewhere: from the pattern's own groups, or (with
    ``fields``) a plain match and then one small pattern per value, on the matched frames only."""
    if fields is None:
        found = pc.extract_regex(raw, pattern)
        # flatten(), not field(): a frame that did not match is null in every group (field() would give "" there)
        flat = found.flatten()
        return [flat[found.type.get_field_index(name)] for name in names]
    matched = pc.match_substring_regex(raw, pattern)
    if not pc.any(matched).as_py():
        return [pa.nulls(len(raw), pa.binary()) for _ in names]
    out = []
    for name in names:
        value = pc.extract_regex(raw, fields[name]).field(0)
        out.append(pc.if_else(matched, value, pa.scalar(None, value.type)))
    return out


def _fast_tickers(feed: feeds.Feed, raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(market, event_ms), null where the frame is not an ordinary ticker of a subscribed market."""
    market, event_ms = _groups(raw, feed.ticker_pattern, feed.ticker_fields, ("market", "event_ms"))
    market = market.cast(pa.string())
    subscribed = pc.is_in(market, value_set=pa.array(sorted(feed.markets), pa.string()))
    return pc.if_else(subscribed, market, None), pc.if_else(subscribed, event_ms.cast(pa.string()).cast(pa.int64()), None)


def _split(feed, session, raw, receive_us, trades, tickers, is_trade, is_ticker) -> Resolved:
    """Every frame matched one of the patterns: one batch per channel, each in arrival order, all in native code."""
    out = Resolved({})
    out.messages = len(raw)
    if pc.any(is_trade).as_py():
        market, trade_id, event_ms = (pc.filter(a, is_trade) for a in trades)
        recv = pc.filter(receive_us, is_trade)
        out.batches[feeds.TRADE] = _batch(feed.exchange, session, market, trade_id, event_ms, recv,
                                          pc.filter(raw, is_trade), None)
        out.lag_s = _max_lag(recv, event_ms)
    if pc.any(is_ticker).as_py():
        market, event_ms = (pc.filter(a, is_ticker) for a in tickers)
        out.batches[feeds.TICKER] = _batch(feed.exchange, session, market, pa.nulls(len(market), pa.int64()), event_ms,
                                           pc.filter(receive_us, is_ticker), pc.filter(raw, is_ticker), None)
    return out


def _mixed(feed, session, frames, raw, receive_us, fast, tickers=None) -> Resolved:
    """Some frames need the per-frame parser: rows are assembled in Python (the rare path: faults, control frames)."""
    fast_market = fast[0].to_pylist() if fast is not None else [None] * len(frames)
    if fast is not None:
        fast_ids, fast_ms = fast[1].to_pylist(), fast[2].to_pylist()
    tick_market, tick_ms = (tickers[0].to_pylist(), tickers[1].to_pylist()) if tickers is not None else (None, None)
    recv = receive_us.to_pylist()
    rows: dict[str, list[list]] = {}
    out = Resolved({})
    for i, frame in enumerate(frames):
        if fast_market[i] is not None:
            kind, market, tid, ms, error = feeds.TRADE, fast_market[i], fast_ids[i], fast_ms[i], None
        elif tick_market is not None and tick_market[i] is not None:
            kind, market, tid, ms, error = feeds.TICKER, tick_market[i], None, tick_ms[i], None
        else:
            p = feed.parse(frame)
            if p.kind == feeds.CONTROL:
                continue
            kind, market, tid, ms, error = p.kind, p.market, p.trade_id, p.event_ms, p.error
            if kind == feeds.DEAD:
                kind, tid, ms = feeds.TRADE, None, None  # dead letters travel in the trade stream
                out.malformed += 1
        out.messages += 1
        if error is None and kind == feeds.TRADE:
            out.lag_s = max(out.lag_s, recv[i] / 1e6 - ms / 1e3)
        cols = rows.setdefault(kind, [[] for _ in range(6)])
        for col, value in zip(cols, (market, tid, ms, recv[i], frame, error)):
            col.append(value)
    for kind, (market, tid, ms, rec, frm, err) in rows.items():
        out.batches[kind] = _batch(feed.exchange, session, pa.array(market, pa.string()), pa.array(tid, pa.int64()),
                                   pa.array(ms, pa.int64()), pa.array(rec, pa.int64()), pa.array(frm, pa.binary()),
                                   pa.array(err, pa.string()))
    return out


def _batch(exchange, session, market, trade_id, event_ms, receive_us, raw, error) -> pa.RecordBatch:
    n = len(raw)
    columns = [pa.repeat(exchange, n).cast(pa.string()), market, trade_id, event_ms, receive_us,
               pa.repeat(session, n).cast(pa.string()), raw, error if error is not None else pa.nulls(n, pa.string())]
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


def _max_lag(receive_us: pa.Array, event_ms: pa.Array) -> float:
    lag_us = pc.max(pc.subtract(receive_us, pc.multiply(event_ms, 1000))).as_py()
    return max(0.0, lag_us / 1e6) if lag_us is not None else 0.0
