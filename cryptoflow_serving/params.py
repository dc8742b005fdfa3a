"""The query parameters every read endpoint shares, parsed and checked before any SQL runs (docs/api.md,
"Conventions"). Values reach SQL only as parameters; anything outside what is allowed is a 400 that says what is."""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import orjson

from cryptoflow_core.settings import SettingsError, validate_market
from cryptoflow_serving.errors import bad_parameter

EXCHANGES = ("upbit", "binance")
ORDERS = ("asc", "desc")
DEFAULT_LIMIT = 1000
MAX_JSON_LIMIT = 10_000
MAX_BULK_LIMIT = 1_000_000
MAX_MARKETS = 100
# The first Bitcoin block to the end of the century: a time outside is a typo (or epoch milliseconds), not a query.
EARLIEST = datetime(2009, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)
_EPOCH = re.compile(r"-?\d+(\.\d+)?")
_ASSET = re.compile(r"[A-Z0-9]{1,15}")
_WORD = re.compile(r"[a-z0-9_]{1,64}")


def exchange(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in EXCHANGES:
        raise bad_parameter("exchange", f"unknown exchange {value!r}: allowed {', '.join(EXCHANGES)}")
    return value


def markets(values: list[str] | None, exchange_: str | None) -> list[str]:
    """Market codes (repeated and/or comma-separated), each checked by the platform's own rule for its exchange: with
    no exchange given, a code must be valid on one of them."""
    codes = [c.strip() for v in values or () for c in v.split(",") if c.strip()]
    if len(codes) > MAX_MARKETS:
        raise bad_parameter("market", f"{len(codes)} markets asked: at most {MAX_MARKETS} per request")
    for code in codes:
        candidates = [exchange_] if exchange_ else list(EXCHANGES)
        errors = []
        for ex in candidates:
            try:
                validate_market(ex, code)
                break
            except SettingsError as exc:
                errors.append(str(exc))
        else:
            raise bad_parameter("market", f"unknown market {code[:40]!r}: {'; '.join(errors)}")
    return codes


def instant(name: str, value: str | None) -> datetime | None:
    """ISO 8601 (no zone: UTC; a date alone: its midnight UTC) or epoch seconds."""
    if value is None:
        return None
    text = value.strip()
    try:
        if _EPOCH.fullmatch(text):
            seconds = float(text)
            if not math.isfinite(seconds):
                raise ValueError
            # clamped to just outside the allowed span, so an epoch in milliseconds gets the range message below
            seconds = min(max(seconds, EARLIEST.timestamp() - 1), LATEST.timestamp() + 1)
            when = datetime.fromtimestamp(seconds, tz=timezone.utc)
        else:
            when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            when = when.astimezone(timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise bad_parameter(name, f"{name}={value[:64]!r} is not a time: use ISO 8601 (2025-09-01T12:00:00Z, "
                            "2025-09-01) or epoch seconds (1756728000)") from None
    if not EARLIEST <= when <= LATEST:
        raise bad_parameter(name, f"{name}={value[:64]!r} is outside {EARLIEST.date()} .. {LATEST.date()} "
                            "(epoch milliseconds? the API takes seconds)")
    return when


def time_range(start: str | None, end: str | None, day: str | None = None) -> tuple[datetime | None, datetime | None]:
    """``[start, end)``; ``day`` (a UTC date) is shorthand for that day and excludes start/end."""
    if day is not None:
        if start is not None or end is not None:
            raise bad_parameter("day", "give either day or start/end, not both")
        try:
            first = date.fromisoformat(day)
        except ValueError:
            raise bad_parameter("day", f"day={day[:64]!r} is not a date: use YYYY-MM-DD") from None
        lo = datetime.combine(first, time(), tzinfo=timezone.utc)
        if not EARLIEST <= lo < LATEST:
            raise bad_parameter("day", f"day={day!r} is outside {EARLIEST.date()} .. {LATEST.date()}")
        return lo, lo + timedelta(days=1)
    lo, hi = instant("start", start), instant("end", end)
    if lo is not None and hi is not None and hi < lo:
        raise bad_parameter("end", f"end ({hi.isoformat()}) is before start ({lo.isoformat()})")
    return lo, hi


def limit(value: int | None, bulk: bool) -> int:
    top = MAX_BULK_LIMIT if bulk else MAX_JSON_LIMIT
    if value is None:
        return DEFAULT_LIMIT if not bulk else top
    if not 1 <= value <= top:
        kind = "csv/arrow/parquet" if bulk else "JSON (csv/arrow/parquet allow up to " f"{MAX_BULK_LIMIT:,})"
        raise bad_parameter("limit", f"limit={value}: allowed 1 to {top:,} for {kind}")
    return value


def order(value: str | None) -> str:
    value = value or "asc"
    if value not in ORDERS:
        raise bad_parameter("order", f"unknown order {value[:40]!r}: allowed asc, desc")
    return value


def asset(value: str | None) -> str | None:
    if value is not None and not _ASSET.fullmatch(value):
        raise bad_parameter("asset", f"asset={value[:40]!r}: expected an asset code such as BTC (A-Z, 0-9)")
    return value


def word(name: str, value: str | None, allowed: tuple[str, ...] | None = None) -> str | None:
    """A name-like filter (an alert rule, a status, a model): from ``allowed`` when given, else a plain identifier."""
    if value is None:
        return None
    if allowed is not None and value not in allowed:
        raise bad_parameter(name, f"unknown {name} {value[:40]!r}: allowed {', '.join(allowed)}")
    if not _WORD.fullmatch(value):
        raise bad_parameter(name, f"{name}={value[:40]!r}: expected a name of a-z, 0-9, _")
    return value


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: the key of the last row sent, and the order it was sent in (keyset paging)."""

    key: tuple[Any, ...]
    order: str

    def encode(self) -> str:
        values = [v.isoformat() if isinstance(v, (datetime, date)) else v for v in self.key]
        kinds = ["t" if isinstance(v, datetime) else "d" if isinstance(v, date) else "v" for v in self.key]
        raw = orjson.dumps({"k": values, "t": kinds, "o": self.order})
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor(value: str | None, key_len: int, order_: str) -> Cursor | None:
    if value is None:
        return None
    bad = bad_parameter("cursor", "not a cursor of this endpoint: pass next_cursor (or X-Next-Cursor) exactly as "
                        "received, with the same filters and order")
    try:
        data = orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        values, kinds = data["k"], data["t"]
        if len(values) != key_len or len(kinds) != key_len or data["o"] != order_:
            raise bad
        key = []
        for v, kind in zip(values, kinds):
            if kind == "t":
                key.append(datetime.fromisoformat(v))
            elif kind == "d":
                key.append(date.fromisoformat(v))
            elif kind == "v" and isinstance(v, (str, int, float)) and not isinstance(v, bool):
                key.append(v)
            else:
                raise bad
    except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise bad from None
    return Cursor(tuple(key), order_)
