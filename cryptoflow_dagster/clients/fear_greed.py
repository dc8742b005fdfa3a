"""alternative.me Fear & Greed index (``/fng/``, trailing slash kept: the API redirects without it)."""

from __future__ import annotations

import json
import time
from datetime import date, datetime, timezone
from typing import Any

from cryptoflow_dagster.clients.http import ExchangeError, RestClient
from cryptoflow_dagster.clients.upbit import Page


def entry_day(item: dict[str, Any]) -> date:
    """An entry's day: ``timestamp`` is Unix seconds at 00:00 UTC, sent as a string."""
    return datetime.fromtimestamp(int(item["timestamp"]), tz=timezone.utc).date()


class FearGreedClient:
    def __init__(self, base_url: str, **http: Any) -> None:
        self.http = RestClient(base_url, name="fear_greed", **http)

    def close(self) -> None:
        self.http.close()

    def history(self, limit: int) -> Page:
        """The newest ``limit`` days, newest first (``limit=0``: everything since 2018-02-01)."""
        params = {"limit": limit, "format": "json"}
        reply = self.http.get_json(
            "/fng/", params, before=lambda: None, after=lambda ticket, r: None, on_429=time.sleep
        )
        data = reply.data
        error = (data.get("metadata") or {}).get("error") if isinstance(data, dict) else "not an object"
        if error or not isinstance(data.get("data"), list):
            raise ExchangeError(f"fear_greed GET /fng/ {params}: {error or 'no data list'}")
        # Entries sit inside an object, so keep each one as compact JSON (its values are all strings: nothing to lose).
        return Page("/fng/", params, list(data["data"]), [json.dumps(i, separators=(",", ":")) for i in data["data"]])

    def days(self, first: date, last: date, *, today: date | None = None) -> Page:
        """Entries for first..last inclusive: the API only pages by 'newest N', so ask for enough to reach ``first``."""
        today = today or datetime.now(timezone.utc).date()
        limit = max(1, (today - first).days + 2)
        page = self.history(limit)
        return page.keep(lambda item: first <= entry_day(item) <= last)
