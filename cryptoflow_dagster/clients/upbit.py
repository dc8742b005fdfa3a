"""Upbit quotation REST: candles, trade ticks, markets and tickers, paged exactly as Upbit pages (newest first, ``to``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
import json
import re
from pathlib import Path
from urllib.parse import urlsplit
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptoflow_dagster.clients.http import ExchangeError, RestClient, split_json_array
from cryptoflow_dagster.clients.ratelimit import UpbitLimiter
from cryptoflow_core.settings import validate_upbit_market

CANDLE_PAGE = 200
TICKS_PAGE = 500
MINUTE_UNITS = (1, 3, 5, 10, 15, 30, 60, 240)


@dataclass(frozen=True)
class Page:
    """One response: the request's parameters (kept with every row for replay) and the items exactly as received."""

    path: str
    params: dict[str, Any]
    items: list[Any]
    raw: list[str] = field(default_factory=list)

    def keep(self, wanted: Callable[[Any], bool]) -> "Page":
        """The same page with only the items (and their raw texts) that ``wanted`` accepts."""
        pairs = [(i, r) for i, r in zip(self.items, self.raw or [json.dumps(i) for i in self.items]) if wanted(i)]
        return Page(self.path, self.params, [i for i, _ in pairs], [r for _, r in pairs])


def upbit_time(ts: datetime) -> str:
    """Upbit's ``to`` format, always UTC with ``Z`` so the server never guesses a zone."""
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def candle_start(item: dict[str, Any]) -> datetime:
    """A candle's window start (``candle_date_time_utc``); its ``timestamp`` is the last tick, not the start."""
    return datetime.fromisoformat(str(item["candle_date_time_utc"])).replace(tzinfo=timezone.utc)


class UpbitClient:
    """``lock_dir``: where the processes of this host take turns on each rate-limit group (see ``HostLock``)."""

    def __init__(self, base_url: str, *, per_second: int = 10, lock_dir: Path | None = None, **http: Any) -> None:
        server = re.sub(r"[^A-Za-z0-9.-]+", "_", urlsplit(base_url).netloc)
        self.limiter = UpbitLimiter(per_second, lock_dir=lock_dir, lock_prefix=f"upbit-{server}")
        self.http = RestClient(base_url, name="upbit", **http)

    def close(self) -> None:
        self.http.close()
        self.limiter.close()

    def get(self, path: str, params: dict[str, Any], group: str) -> Page:
        reply = self.http.get_json(
            path,
            params,
            before=lambda: self.limiter.acquire(group),
            after=lambda ticket, r: self.limiter.answered(
                ticket, r.status_code if r is not None else None, r.headers.get("Remaining-Req") if r is not None else None
            ),
            on_429=lambda s: self.limiter.block(group, s),
        )
        if not isinstance(reply.data, list):
            raise ExchangeError(f"upbit GET {path} {params}: expected a JSON array, got {reply.text[:200]!r}")
        return Page(path, dict(params), reply.data, split_json_array(reply.text))

    # --- candles -------------------------------------------------------------------------------------------
    def candles(self, market: str, interval: str, *, to: datetime | None = None, count: int = CANDLE_PAGE) -> Page:
        """One page of candles ending before ``to`` (exclusive), newest first. ``interval`` is ``1m``..``240m`` or ``1d``."""
        validate_upbit_market(market)
        if interval == "1d":
            path = "/v1/candles/days"
        else:
            unit = int(interval.rstrip("m"))
            if unit not in MINUTE_UNITS:
                raise ValueError(f"Upbit has no {interval} candles: units are {MINUTE_UNITS}")
            path = f"/v1/candles/minutes/{unit}"
        params = {"market": market, "count": min(count, CANDLE_PAGE)}
        if to is not None:
            params["to"] = upbit_time(to)
        return self.get(path, params, "candle")

    def candle_pages(self, market: str, interval: str, start: datetime, end: datetime) -> Iterator[Page]:
        """Every page covering [start, end): walk the ``to`` cursor back from ``end``, 200 candles per call.

        The next cursor is the oldest candle seen, or one page-width further back if that is earlier: a quiet market
        returns short (even empty) pages because minutes without trades have no candle, so a short page is not the end.
        Items outside the window are dropped (the last page usually reaches before ``start``).
        """
        width = timedelta(days=1) if interval == "1d" else timedelta(minutes=int(interval.rstrip("m")))
        cursor = end
        while cursor > start:
            page = self.candles(market, interval, to=cursor)
            yield page.keep(lambda item: start <= candle_start(item) < end)
            oldest = min((candle_start(item) for item in page.items), default=cursor)
            cursor = min(oldest, cursor - width * page.params["count"])

    def day_candle(self, market: str, day_start: datetime) -> Page:
        """The day candle of the UTC day starting at ``day_start`` (empty items if that day had no trade)."""
        page = self.candles(market, "1d", to=day_start + timedelta(days=1), count=1)
        return page.keep(lambda item: candle_start(item) == day_start)

    # --- trades --------------------------------------------------------------------------------------------
    def trade_ticks(
        self,
        market: str,
        *,
        to: str | None = None,
        count: int = TICKS_PAGE,
        cursor: int | str | None = None,
        days_ago: int | None = None,
    ) -> Page:
        """``/v1/trades/ticks``: newest first; ``cursor`` is a sequential_id (returns older trades), ``days_ago`` 1..7."""
        validate_upbit_market(market)
        if days_ago is not None and not 1 <= days_ago <= 7:
            raise ValueError(f"days_ago must be 1..7 (Upbit keeps 7 days of ticks), got {days_ago}")
        params = {"market": market, "count": min(count, TICKS_PAGE), "to": to, "cursor": cursor, "days_ago": days_ago}
        params = {k: v for k, v in params.items() if v is not None}
        return self.get("/v1/trades/ticks", params, "trade")

    def trade_tick_pages(self, market: str, *, since_ms: int, until_ms: int | None = None, days_ago: int | None = None) -> Iterator[Page]:
        """Ticks back from the newest (or from ``until_ms``) to ``since_ms``, following the sequential_id cursor."""
        cursor: int | None = None
        while True:
            page = self.trade_ticks(market, cursor=cursor, days_ago=days_ago)
            if not page.items:
                return
            yield page.keep(lambda t: int(t["timestamp"]) >= since_ms and (until_ms is None or int(t["timestamp"]) < until_ms))
            oldest = min(page.items, key=lambda t: int(t["sequential_id"]))
            if int(oldest["timestamp"]) < since_ms or len(page.items) < page.params["count"]:
                return
            cursor = int(oldest["sequential_id"])

    # --- reference data ------------------------------------------------------------------------------------
    def markets(self, *, details: bool = False) -> list[dict[str, Any]]:
        return self.get("/v1/market/all", {"is_details": str(details).lower()}, "market").items

    def tickers(self, markets: list[str]) -> list[dict[str, Any]]:
        for market in markets:
            validate_upbit_market(market)
        return self.get("/v1/ticker", {"markets": ",".join(markets)}, "ticker").items
