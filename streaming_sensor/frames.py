"""Raw frames -> landing rows, a whole batch at a time, off the receive loop (ADR 0010).

The receive loop only keeps each frame and its receive time; this module gives every frame its verdict at flush time.
Frames matching the feed's ``trade_pattern`` are resolved in one pass of Arrow's RE2 kernels (native code that releases
the GIL, so the event loop keeps reading sockets meanwhile); every other frame (a ticker, a control frame, a malformed
or drifted one) goes through ``Feed.parse``, which stays the reference: the resolved rows, dead letters and counters are
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
    return _mixed(feed, session, frames, raw, receive_us, fast)


def _fast_trades(feed: feeds.Feed, raw: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array] | None:
    """(market, trade_id, event_ms), null where the frame is not an ordinary trade of a subscribed market."""
    if feed.trade_pattern is None:
        return None
    found = pc.extract_regex(raw, feed.trade_pattern)
    # flatten(), not field(): a frame that did not match is null in every group (field() would give "" there)
    market, trade_id, event_ms = (found.flatten()[found.type.get_field_index(name)]
                                  for name in ("market", "trade_id", "event_ms"))
    # every captured byte is ASCII digits or [A-Z0-9] (the pattern says so): these casts cannot fail
    market = market.cast(pa.string())
    subscribed = pc.is_in(market, value_set=pa.array(sorted(feed.markets), pa.string()))
    market = pc.if_else(subscribed, market, None)  # null stays null: unmatched frames are not ordinary trades either
    trade_id = pc.if_else(subscribed, trade_id.cast(pa.string()).cast(pa.int64()), None)
    event_ms = pc.if_else(subscribed, event_ms.cast(pa.string()).cast(pa.int64()), None)
    return market, trade_id, event_ms


def _mixed(feed, session, frames, raw, receive_us, fast) -> Resolved:
    """Some frames need the per-frame parser: rows are assembled in Python (the rare path: faults, tickers, Upbit)."""
    fast_market = fast[0].to_pylist() if fast is not None else [None] * len(frames)
    if fast is not None:
        fast_ids, fast_ms = fast[1].to_pylist(), fast[2].to_pylist()
    recv = receive_us.to_pylist()
    rows: dict[str, list[list]] = {}
    out = Resolved({})
    for i, frame in enumerate(frames):
        if fast_market[i] is not None:
            kind, market, tid, ms, error = feeds.TRADE, fast_market[i], fast_ids[i], fast_ms[i], None
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
