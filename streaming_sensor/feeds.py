"""One class per exchange: endpoint, subscription and the hot-path parser of its WebSocket frames.

The parser reads only what routing and exactly-once need (market, trade id, event time) and checks that the fields silver
will extract are there; the frame itself is kept verbatim. A frame that fails is not raised: it becomes a
:class:`Parsed` with ``kind="dead"`` and a reason, so the stream goes on and the Dagster run writes a dead letter.
"""

from __future__ import annotations

import math
import uuid
from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple

import orjson

TRADE = "trade"
TICKER = "ticker"
CONTROL = "control"  # pongs, subscription acks: nothing to land
DEAD = "dead"


class Parsed(NamedTuple):
    """What the hot path needs from one frame. A NamedTuple: built once per message, and a frozen dataclass's
    ``__init__`` (one ``object.__setattr__`` per field) was ~8 % of the sidecar's CPU under the firehose (py-spy)."""

    kind: str
    market: str | None = None
    trade_id: int | None = None
    event_ms: int | None = None
    error: str | None = None
    reconnect: bool = False  # the exchange announced it will close this connection


def _dead(reason: str, market: str | None = None) -> Parsed:
    return Parsed(DEAD, market=market, error=reason)


def _is_int(value: object) -> bool:
    # ids and epoch times land in int64 Parquet columns: orjson reads up to 2**64-1, and one such value would fail the
    # whole micro-batch write on every retry, so out-of-range numbers are dead letters here
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _decimal_string(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        number = float(value)
    except ValueError:
        return False
    return math.isfinite(number)  # float() also reads "nan", "inf" and "1e999"


class Feed(ABC):
    """What the connection handler needs to know about one exchange."""

    exchange: ClassVar[str]
    # A connection silent for longer than this is presumed dead and replaced (the watchdog).
    silence_timeout_s: ClassVar[float]
    # Exchanges close connections after a maximum age; reconnecting first avoids losing the tail of a session.
    max_age_s: ClassVar[float]
    # Application-level keep-alive text frame, if the exchange wants one.
    keepalive_text: ClassVar[str | None] = None
    keepalive_interval_s: ClassVar[float] = 60.0
    # A frame containing these bytes is parsed the moment it arrives (the receive loop parses nothing else while no gap
    # is open): it may announce that the exchange is about to close the connection.
    urgent_marker: ClassVar[bytes | None] = None
    # RE2 pattern (full match, named groups market / trade_id / event_ms) of the exchange's usual trade frame, for the
    # vectorized batch path (streaming_sensor/frames.py). It must only match frames ``parse`` calls a TRADE of those
    # values once the market is checked; anything else goes through ``parse`` frame by frame.
    trade_pattern: ClassVar[str | None] = None
    # The same for the exchange's ticker frame (named groups market / event_ms): only frames ``parse`` calls a TICKER.
    ticker_pattern: ClassVar[str | None] = None
    # When set, the pattern above only validates, and these read the named values (group ``v``) of matched frames.
    trade_fields: ClassVar[dict[str, str] | None] = None
    ticker_fields: ClassVar[dict[str, str] | None] = None

    def __init__(self, base_url: str, markets: tuple[str, ...]):
        self.base_url = base_url.rstrip("/")
        self.markets = tuple(markets)
        self._subscribed = frozenset(self.markets)

    @abstractmethod
    def url(self) -> str: ...

    @abstractmethod
    def subscription(self) -> list[str]:
        """Text frames to send right after connecting."""

    @abstractmethod
    def parse(self, frame: bytes | str) -> Parsed: ...


# Pieces of the Upbit patterns. Every value a pattern accepts is one orjson reads as the JSON value ``parse`` expects:
# strings are printable ASCII without escapes (so valid UTF-8, and no escaped key can hide a duplicate), checked
# integers have at most 18 digits (< 2**63, as ``_is_int`` wants), numbers at most 100 digits before the point and a
# 2-digit exponent (finite, or orjson refuses the frame), and a positive number a non-zero digit among its first 30
# after the point (``trade_price > 0``, no underflow to 0.0). Unbounded repeats where no bound is needed: RE2's DFA
# stays small (bounded ones made the full match 2-5x slower, benchmarks/sidecar_ingest.py --upbit).
_STR = r'"[ !#-\[\]-~]*"'
_UINT = r"(?:0|[1-9][0-9]{0,17})"
_EXP = r"(?:[eE][+-]?[0-9]{1,2})?"
_NONNEG = r"(?:0|[1-9][0-9]{0,99})(?:\.[0-9]+)?" + _EXP
_POS = r"(?:[1-9][0-9]{0,99}(?:\.[0-9]+)?|0\.[0-9]{0,29}[1-9][0-9]*)" + _EXP
_ANY = rf"(?:-?{_NONNEG}|{_STR}|true|false|null)"  # a field ``parse`` does not read: any JSON scalar


def _fields(*keys: str) -> str:
    return "".join(f',"{k}":{_ANY}' for k in keys)


class UpbitFeed(Feed):
    """Upbit ``/websocket/v1``: trade and ticker, DEFAULT format, binary frames of UTF-8 JSON.

    A real trade frame (captured 2023-11-19, exchange_sim/recorded/upbit/native_samples.json)::

        {"type":"trade","code":"KRW-BTC","timestamp":1700365437515,"trade_date":"2023-11-19","trade_time":"03:43:57",
         "trade_timestamp":1700365437486,"trade_price":49083000.0,"trade_volume":0.02430412,"ask_bid":"ASK",
         "prev_closing_price":49165000.0,"change":"FALL","change_price":82000.0,"sequential_id":1700365437486000,
         "stream_type":"REALTIME"}
    """

    exchange = "upbit"
    # KRW markets trade every few seconds; Upbit itself closes after 120 s of silence, so 60 s is already suspicious.
    silence_timeout_s = 60.0
    max_age_s = 23 * 3600.0
    keepalive_text = "PING"  # answered with {"status":"UP"}; keeps the 120 s idle close away on quiet markets
    keepalive_interval_s = 30.0
    # The DEFAULT-format trade and ticker frames in Upbit's key order (the recorded 2023 frame has no best_* quotes, the
    # current API and the simulator have them). What a match proves is what ``parse`` checks: type, a string code,
    # integer sequential_id / trade_timestamp (ticker: timestamp) in [0, 2**63), trade_price > 0, trade_volume >= 0,
    # ask_bid ASK or BID; every other field a JSON scalar; each key once. Anything else: ``parse``, frame by frame.
    # The patterns only validate (no groups: captures made RE2 4x slower on these long frames); once a frame matched,
    # the small ``*_fields`` patterns read its values, unambiguously (each key is there once, no string holds a quote).
    trade_pattern = (
        r'^\{"type":"trade","code":"[A-Z0-9-]{1,32}"' + _fields("timestamp", "trade_date", "trade_time")
        + rf',"trade_timestamp":{_UINT},"trade_price":{_POS},"trade_volume":{_NONNEG},"ask_bid":"(?:ASK|BID)"'
        + _fields("prev_closing_price", "change", "change_price") + rf',"sequential_id":{_UINT}'
        + "(?:" + _fields("best_ask_price", "best_ask_size", "best_bid_price", "best_bid_size") + ")?"
        + _fields("stream_type") + r"\}$"
    )
    trade_fields = {"market": r'^\{"type":"trade","code":"(?P<v>[A-Z0-9-]+)"',
                    "trade_id": r',"sequential_id":(?P<v>[0-9]+)', "event_ms": r',"trade_timestamp":(?P<v>[0-9]+)'}
    ticker_pattern = (
        r'^\{"type":"ticker","code":"[A-Z0-9-]{1,32}"'
        + _fields("opening_price", "high_price", "low_price", "trade_price", "prev_closing_price", "change",
                  "change_price", "signed_change_price", "change_rate", "signed_change_rate", "trade_volume",
                  "acc_trade_volume", "acc_trade_volume_24h", "acc_trade_price", "acc_trade_price_24h", "trade_date",
                  "trade_time", "trade_timestamp", "ask_bid", "acc_ask_volume", "acc_bid_volume",
                  "highest_52_week_price", "highest_52_week_date", "lowest_52_week_price", "lowest_52_week_date",
                  "market_state", "is_trading_suspended", "delisting_date", "market_warning")
        + rf',"timestamp":{_UINT}' + _fields("stream_type") + r"\}$"
    )
    ticker_fields = {"market": r'^\{"type":"ticker","code":"(?P<v>[A-Z0-9-]+)"', "event_ms": r',"timestamp":(?P<v>[0-9]+)'}

    def url(self) -> str:
        return self.base_url

    def subscription(self) -> list[str]:
        codes = list(self.markets)
        request = [
            {"ticket": uuid.uuid4().hex},
            {"type": "trade", "codes": codes, "is_only_realtime": True},
            {"type": "ticker", "codes": codes, "is_only_realtime": True},
            {"format": "DEFAULT"},
        ]
        return [orjson.dumps(request).decode()]

    def parse(self, frame: bytes | str) -> Parsed:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            return _dead(f"invalid JSON: {exc}")
        if not isinstance(msg, dict):
            return _dead("not a JSON object")
        kind = msg.get("type")
        if kind is None:
            if msg.get("status") == "UP":
                return Parsed(CONTROL)
            if "error" in msg:
                return _dead(f"exchange error: {msg['error']}")
            return _dead("missing field: type")
        market = msg.get("code")
        if not isinstance(market, str):
            return _dead("missing field: code")
        if market not in self._subscribed:
            return _dead(f"unsubscribed market {market!r}", market)
        if kind == "trade":
            sid, ts = msg.get("sequential_id"), msg.get("trade_timestamp")
            if not _is_int(sid):
                return _dead("missing, non-integer or out-of-range field: sequential_id", market)
            if not _is_int(ts):
                return _dead("missing, non-integer or out-of-range field: trade_timestamp", market)
            price, volume = msg.get("trade_price"), msg.get("trade_volume")
            if not _is_number(price) or price <= 0:
                return _dead("missing or non-positive field: trade_price", market)
            if not _is_number(volume) or volume < 0:
                return _dead("missing or negative field: trade_volume", market)
            if msg.get("ask_bid") not in ("ASK", "BID"):
                return _dead("missing or unknown field: ask_bid", market)
            return Parsed(TRADE, market, sid, ts)
        if kind == "ticker":
            ts = msg.get("timestamp")
            if not _is_int(ts):
                return _dead("missing, non-integer or out-of-range field: timestamp", market)
            return Parsed(TICKER, market, None, ts)
        return _dead(f"unknown message type {kind!r}", market)


class BinanceFeed(Feed):
    """Binance spot combined streams ``/stream?streams=<symbol>@trade/...``.

    A real trade (trxusdt@trade, 2025-03-04: the first row of exchange_sim/recorded/binance/ws_trades_TRXUSDT_spot_2025-03-04.csv,
    recorded flattened with times in microseconds; here re-framed as the combined stream sends it)::

        {"stream":"trxusdt@trade","data":{"e":"trade","E":1741046401271,"s":"TRXUSDT","t":348656870,"p":"0.2312",
         "q":"2619.4","T":1741046401271,"m":true,"M":true}}
    """

    exchange = "binance"
    # Liquid USDT pairs trade many times a second; and the server pings every 20 s, so 60 s of nothing is a dead link.
    silence_timeout_s = 60.0
    max_age_s = 23.5 * 3600.0  # Binance drops every connection at 24 h

    urgent_marker = b"serverShutdown"
    # The combined-stream trade frame exactly as Binance (and the simulator) send it: fixed key order, no whitespace, no
    # escapes, ASCII only. What a match proves, clause by clause, is what ``parse`` checks: a JSON object with "stream"
    # and an object "data" with no "result"/"id" key, e == "trade", s a string, t and T integers in [0, 2**63) (at most
    # 18 digits, no sign, no leading zero, no fraction or exponent), p and q finite decimal strings (<= 30 digits before
    # the point), m a boolean. Duplicate keys cannot occur: the keys are spelled out.
    trade_pattern = (
        r'^\{"stream":"[a-z0-9@_]{1,64}","data":\{"e":"trade","E":(?:0|[1-9][0-9]{0,18}),'
        r'"s":"(?P<market>[A-Z0-9]{1,32})","t":(?P<trade_id>0|[1-9][0-9]{0,17}),'
        r'"p":"[0-9]{1,30}(?:\.[0-9]{1,30})?","q":"[0-9]{1,30}(?:\.[0-9]{1,30})?",'
        r'"T":(?P<event_ms>0|[1-9][0-9]{0,17}),"m":(?:true|false),"M":(?:true|false)\}\}$'
    )

    def url(self) -> str:
        streams = "/".join(f"{s.lower()}@trade" for s in self.markets)
        return f"{self.base_url}/stream?streams={streams}"

    def subscription(self) -> list[str]:
        return []  # the combined-stream URL is the subscription

    def parse(self, frame: bytes | str) -> Parsed:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            return _dead(f"invalid JSON: {exc}")
        if not isinstance(msg, dict):
            return _dead("not a JSON object")
        data = msg.get("data") if "stream" in msg else msg
        if not isinstance(data, dict):
            return _dead("missing field: data")
        if "result" in data and "id" in data:
            return Parsed(CONTROL)
        kind = data.get("e")
        if kind == "serverShutdown":
            return Parsed(CONTROL, reconnect=True)
        if kind is None:
            return _dead("missing field: e")
        if kind != "trade":
            return _dead(f"unknown message type {kind!r}")
        market = data.get("s")
        if not isinstance(market, str):
            return _dead("missing field: s")
        if market not in self._subscribed:
            return _dead(f"unsubscribed market {market!r}", market)
        trade_id, ts = data.get("t"), data.get("T")
        if not _is_int(trade_id):
            return _dead("missing, non-integer or out-of-range field: t", market)
        if not _is_int(ts):
            return _dead("missing, non-integer or out-of-range field: T", market)
        if not _decimal_string(data.get("p")) or not _decimal_string(data.get("q")):
            return _dead("missing or non-decimal field: p/q", market)
        if not isinstance(data.get("m"), bool):
            return _dead("missing or non-boolean field: m", market)
        return Parsed(TRADE, market, trade_id, ts)


FEEDS: dict[str, type[Feed]] = {"upbit": UpbitFeed, "binance": BinanceFeed}
