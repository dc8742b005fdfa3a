"""Upbit's payload shapes: REST candles, ticks and tickers, and WebSocket trade/ticker messages (DEFAULT and SIMPLE).

Field names and order follow docs/exchange-apis.md and the recorded samples; tests compare key sets and types
against exchange_sim/recorded/upbit/native_samples.json.
"""

from __future__ import annotations

import functools
import json
from itertools import repeat
from datetime import datetime, timedelta, timezone

import numpy as np

from exchange_sim.markets import MarketSpec, upbit_ticks
from exchange_sim.model import DAY_MS, Candles, Model, Trades

KST = timedelta(hours=9)

TRADE_KEYS = (
    ("type", "ty"), ("code", "cd"), ("timestamp", "tms"), ("trade_date", "td"), ("trade_time", "ttm"),
    ("trade_timestamp", "ttms"), ("trade_price", "tp"), ("trade_volume", "tv"), ("ask_bid", "ab"),
    ("prev_closing_price", "pcp"), ("change", "c"), ("change_price", "cp"), ("sequential_id", "sid"),
    ("best_ask_price", "bap"), ("best_ask_size", "bas"), ("best_bid_price", "bbp"), ("best_bid_size", "bbs"),
    ("stream_type", "st"),
)
TICKER_KEYS = (
    ("type", "ty"), ("code", "cd"), ("opening_price", "op"), ("high_price", "hp"), ("low_price", "lp"),
    ("trade_price", "tp"), ("prev_closing_price", "pcp"), ("change", "c"), ("change_price", "cp"),
    ("signed_change_price", "scp"), ("change_rate", "cr"), ("signed_change_rate", "scr"), ("trade_volume", "tv"),
    ("acc_trade_volume", "atv"), ("acc_trade_volume_24h", "atv24"), ("acc_trade_price", "atp"),
    ("acc_trade_price_24h", "atp24"), ("trade_date", "tdt"), ("trade_time", "ttm"), ("trade_timestamp", "ttms"),
    ("ask_bid", "ab"), ("acc_ask_volume", "aav"), ("acc_bid_volume", "abv"), ("highest_52_week_price", "h52wp"),
    ("highest_52_week_date", "h52wdt"), ("lowest_52_week_price", "l52wp"), ("lowest_52_week_date", "l52wdt"),
    ("market_state", "ms"), ("is_trading_suspended", "its"), ("delisting_date", "dd"), ("market_warning", "mw"),
    ("timestamp", "tms"), ("stream_type", "st"),
)


def num(x: float) -> float | int:
    """Upbit prints whole KRW quotes of best bid/ask without a fraction (``91370000``), trade prices with one."""
    return int(x) if float(x).is_integer() else float(x)


def iso(ms: int, shift: timedelta = timedelta(0)) -> str:
    return (datetime.fromtimestamp(ms / 1000, timezone.utc) + shift).strftime("%Y-%m-%dT%H:%M:%S")


def hms(ms: int, sep: str = ":") -> str:
    s = (ms % DAY_MS) // 1000
    return f"{s // 3600:02d}{sep}{s // 60 % 60:02d}{sep}{s % 60:02d}"


@functools.lru_cache(maxsize=4096)
def _ymd_of_day(day: int, sep: str) -> str:
    return datetime.fromtimestamp(day * 86_400, timezone.utc).strftime(f"%Y{sep}%m{sep}%d")


def ymd(ms: int, sep: str = "-") -> str:
    return _ymd_of_day(int(ms) // DAY_MS, sep)


def change_word(price: float, prev: float) -> str:
    return "RISE" if price > prev else "FALL" if price < prev else "EVEN"


def minute_candle_rows(market: str, c: Candles, unit: int) -> list[dict]:
    rows = []
    for i in range(len(c) - 1, -1, -1):  # newest first
        start = int(c.start[i])
        rows.append({
            "market": market,
            "candle_date_time_utc": iso(start),
            "candle_date_time_kst": iso(start, KST),
            "opening_price": float(c.open[i]),
            "high_price": float(c.high[i]),
            "low_price": float(c.low[i]),
            "trade_price": float(c.close[i]),
            "timestamp": int(c.last_ts[i]),
            "candle_acc_trade_price": float(c.quote[i]),
            "candle_acc_trade_volume": float(c.volume[i]),
            "unit": unit,
        })
    return rows


def day_candle_row(market: str, c: Candles, prev_close: float, converting: str | None) -> dict:
    close = float(c.close[0])
    row = {
        "market": market,
        "candle_date_time_utc": iso(int(c.start[0])),
        "candle_date_time_kst": iso(int(c.start[0]), KST),
        "opening_price": float(c.open[0]),
        "high_price": float(c.high[0]),
        "low_price": float(c.low[0]),
        "trade_price": close,
        "timestamp": int(c.last_ts[0]),
        "candle_acc_trade_price": float(c.quote[0]),
        "candle_acc_trade_volume": float(c.volume[0]),
        "prev_closing_price": prev_close,
        "change_price": round(close - prev_close, 8),
        "change_rate": round((close - prev_close) / prev_close, 10) if prev_close else 0.0,
    }
    if converting:
        row["converted_trade_price"] = close
    return row


def tick_rows(market: str, t: Trades, prev_close: float) -> list[dict]:
    rows = []
    for i in range(len(t) - 1, -1, -1):  # newest first
        ts, price = int(t.ts[i]), float(t.price[i])
        rows.append({
            "market": market,
            "trade_date_utc": ymd(ts),
            "trade_time_utc": hms(ts),
            "timestamp": ts,
            "trade_price": price,
            "trade_volume": float(t.volume[i]),
            "prev_closing_price": prev_close,
            "change_price": round(price - prev_close, 8),  # signed on REST
            "ask_bid": "BID" if t.buy[i] else "ASK",
            "sequential_id": int(t.ids[i]),
        })
    return rows


class TradeEncoder:
    """Trade messages built column-wise: numpy prepares every field, then one %-format per message (firehose speed)."""

    def __init__(self, simple: bool, list_format: bool):
        keys = [k[1] if simple else k[0] for k in TRADE_KEYS]
        # the time of day is three ints formatted inside the one %-operation (no string built per trade in Python)
        formats = {"trade_date": '"%s"', "trade_time": '"%02d:%02d:%02d"', "ask_bid": '"%s"', "change": '"%s"'}
        fixed = {"type", "code", "prev_closing_price", "stream_type"}  # filled in per call, once
        self.parts = [
            (key, full) if full in fixed else (f'"{key}":{formats.get(full, "%s")}', None)
            for key, (full, _) in zip(keys, TRADE_KEYS)
        ]
        self.list_format = list_format
        self.templates: dict[tuple, str] = {}  # (code, prev close, stream type) -> message template

    def template(self, code: str, prev_close: float, stream_type: str) -> str:
        key = (code, prev_close, stream_type)
        tmpl = self.templates.get(key)
        if tmpl is None:
            fixed = {"type": '"trade"', "code": f'"{code}"', "prev_closing_price": repr(float(prev_close)),
                     "stream_type": f'"{stream_type}"'}
            tmpl = "{" + ",".join(part if full is None else f'"{part}":{fixed[full]}' for part, full in self.parts) + "}"
            if len(self.templates) > 4096:  # a new day brings new closes: drop the old ones
                self.templates.clear()
            self.templates[key] = tmpl
        return tmpl

    def encode(self, code: str, spec: MarketSpec, t: Trades, prev_close: float, stream_type: str, sent_ms: int) -> list[str]:
        tmpl = self.template(code, prev_close, stream_type)
        price, buy = t.price, t.buy
        ticks = upbit_ticks(price, spec.quote)
        ask = np.where(buy, price, price + ticks)
        bid = np.where(buy, price - ticks, price)
        whole = bool(np.all(ask == np.floor(ask)) and np.all(bid == np.floor(bid)))
        # Upbit prints whole-number best quotes without a fraction (91370000), trade prices with one (91361000.0)
        ask_l = ask.astype(np.int64).tolist() if whole else np.round(ask, 8).tolist()
        bid_l = bid.astype(np.int64).tolist() if whole else np.round(bid, 8).tolist()
        change = np.where(price > prev_close, "RISE", np.where(price < prev_close, "FALL", "EVEN")).tolist()
        day_ms = t.ts - t.ts % DAY_MS
        days = np.unique(day_ms).tolist()
        if len(days) == 1:
            dates = repeat(ymd(days[0]))
        else:
            names = {d: ymd(d) for d in days}
            dates = [names[d] for d in day_ms.tolist()]
        second = (t.ts % DAY_MS) // 1000
        rows = zip(
            np.maximum(t.ts, sent_ms).tolist(),
            dates,
            (second // 3600).tolist(),
            (second // 60 % 60).tolist(),
            (second % 60).tolist(),
            t.ts.tolist(),
            price.tolist(),
            t.volume.tolist(),
            np.where(buy, "BID", "ASK").tolist(),
            change,
            np.abs(np.round(price - prev_close, 8)).tolist(),
            t.ids.tolist(),
            ask_l,
            np.round(t.volume * 1.7 + 0.001, 8).tolist(),
            bid_l,
            np.round(t.volume * 0.9 + 0.002, 8).tolist(),
        )
        out = [tmpl % row for row in rows]
        if self.list_format:
            out = ["[" + m + "]" for m in out]
        return out


def ticker_fields(model: Model, spec: MarketSpec, at_ms: int) -> dict | None:
    """The ticker as of ``at_ms``: today's OHLC and totals, rolling 24 h totals, extremes (see Model.extremes_before)."""
    # the latest day with a trade so far (just after 00:00 UTC the ticker still shows yesterday's last trade)
    for day in range(at_ms // DAY_MS, at_ms // DAY_MS - 8, -1):
        today = model.totals(spec, day, at_ms + 1)
        if today.count:
            break
    else:
        return None
    prev_close = model.day_close(spec, day - 1)
    price = today.close
    acc_volume, acc_quote = today.volume, today.quote
    # rolling 24 h: today so far plus yesterday after (at - 24 h), as differences of the day's running folds
    vol24, q24 = acc_volume, acc_quote
    whole = model.totals(spec, day - 1, day * DAY_MS)
    before = model.totals(spec, day - 1, at_ms - DAY_MS + 1)
    if whole.count > before.count:
        vol24 += whole.volume - before.volume
        q24 += whole.quote - before.quote
    high, low = today.high, today.low
    hi, hi_day, lo, lo_day = high, day, low, day
    extremes = model.extremes_before(spec, day)
    if extremes is not None:
        if extremes[0] > hi:
            hi, hi_day = extremes[0], extremes[1]
        if extremes[2] < lo:
            lo, lo_day = extremes[2], extremes[3]
    change = round(price - prev_close, 8)
    rate = round(change / prev_close, 10) if prev_close else 0.0
    ts = today.last_ts
    return {
        "opening_price": today.open,
        "high_price": high,
        "low_price": low,
        "trade_price": price,
        "prev_closing_price": prev_close,
        "change": change_word(price, prev_close),
        "change_price": abs(change),
        "signed_change_price": change,
        "change_rate": abs(rate),
        "signed_change_rate": rate,
        "trade_volume": today.last_volume,
        "acc_trade_volume": acc_volume,
        "acc_trade_volume_24h": vol24,
        "acc_trade_price": acc_quote,
        "acc_trade_price_24h": q24,
        "trade_date": ymd(ts, ""),
        "trade_time": hms(ts, ""),
        "trade_timestamp": ts,
        "ask_bid": "BID" if today.last_buy else "ASK",
        "acc_ask_volume": today.sell_volume,
        "acc_bid_volume": today.buy_volume,
        "highest_52_week_price": hi,
        "highest_52_week_date": ymd(hi_day * DAY_MS),
        "lowest_52_week_price": lo,
        "lowest_52_week_date": ymd(lo_day * DAY_MS),
        "market_state": "ACTIVE",
        "is_trading_suspended": False,
        "delisting_date": None,
        "market_warning": "NONE",
        "timestamp": max(at_ms, ts),
    }


REST_TICKER_KEYS = (
    "market", "trade_date", "trade_time", "trade_timestamp", "opening_price", "high_price", "low_price", "trade_price",
    "prev_closing_price", "change", "change_price", "change_rate", "signed_change_price", "signed_change_rate",
    "trade_volume", "acc_trade_price", "acc_trade_price_24h", "acc_trade_volume", "acc_trade_volume_24h",
    "highest_52_week_price", "highest_52_week_date", "lowest_52_week_price", "lowest_52_week_date", "timestamp",
)


def rest_ticker(market: str, fields: dict) -> dict:
    merged = {"market": market, **fields}
    return {k: merged[k] for k in REST_TICKER_KEYS}


def ws_ticker(code: str, fields: dict, stream_type: str, simple: bool, list_format: bool) -> str:
    merged = {"type": "ticker", "code": code, **fields, "stream_type": stream_type}
    msg = {(short if simple else full): merged[full] for full, short in TICKER_KEYS}
    text = json.dumps(msg, ensure_ascii=False, separators=(",", ":"))
    return "[" + text + "]" if list_format else text
