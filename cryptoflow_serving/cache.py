"""Answers kept while the lake rows behind them have not changed (ADR 0020).

A page of a lake table is cached with the table and the time range its filters select. Each time the live feed moves
to a new snapshot it reads, for every table with cached pages, the earliest and latest time among the rows changed
since its last snapshot (DuckLake's change feed covers inserts, deletes and both images of updates) and drops the
pages whose range overlaps. Pages of a table the feed did not check, and everything after a failed poll, are dropped.
So a cached page equals what a read at the feed's snapshot would answer: a day of yesterday's bars is read once, not
at every request, while today's are read again after every commit that touched them. Memory is bounded by
``max_bytes`` (least recently used pages go first) and a page above ``MAX_PAGE_BYTES`` is not kept.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

MAX_PAGE_BYTES = 4 * 1024 * 1024


@dataclass
class Entry:
    table: str
    lo: Any  # None: unbounded
    hi: Any  # exclusive; None: unbounded
    body: bytes


def _comparable(value: Any) -> Any:
    """Days and times compared on one scale (a daily table's range is in days, its changes too)."""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    return value


class AnswerCache:
    def __init__(self, max_bytes: int = 64 * 1024 * 1024):
        self.max_bytes = max_bytes
        self.valid_at: int | None = None  # the snapshot every kept page is known to equal
        self._entries: OrderedDict[tuple, Entry] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = self.dropped = 0

    def tables(self) -> set[str]:
        return {e.table for e in self._entries.values()}

    def get(self, key: tuple) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.body

    def put(self, key: tuple, table: str, lo: Any, hi: Any, body: bytes, snapshot: int) -> None:
        """Keep a page read at ``snapshot``, only when that is the snapshot the kept pages are checked up to (a page
        read at another snapshot may miss or predate a change the feed has already looked at)."""
        if snapshot != self.valid_at or len(body) > MAX_PAGE_BYTES or self.max_bytes <= 0:
            return
        self._drop(key)
        self._entries[key] = Entry(table, lo, hi, body)
        self._bytes += len(body)
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def advance(self, snapshot: int, changed: dict[str, tuple[Any, Any]] | None, checked: set[str]) -> None:
        """The feed moved to ``snapshot``: ``changed`` maps a checked table to the (earliest, latest) time of its rows
        changed since; None means the changes could not be read (everything goes)."""
        if changed is None:
            self.clear()
        else:
            for key, entry in list(self._entries.items()):
                if entry.table not in checked:
                    self._drop(key)
                elif entry.table in changed and _overlaps(entry, *changed[entry.table]):
                    self._drop(key)
        self.valid_at = snapshot

    def clear(self) -> None:
        for key in list(self._entries):
            self._drop(key)
        self.valid_at = None

    def _drop(self, key: tuple) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry.body)
            self.dropped += 1

    def stats(self) -> dict[str, Any]:
        return {"pages": len(self._entries), "bytes": self._bytes, "hits": self.hits, "misses": self.misses,
                "dropped": self.dropped, "valid_at": self.valid_at}


def _overlaps(entry: Entry, lo: Any, hi: Any) -> bool:
    if lo is None or hi is None:  # a change whose time is unknown (NULL): assume it touches everything
        return True
    lo, hi = _comparable(lo), _comparable(hi)
    if entry.lo is not None and hi < _comparable(entry.lo):
        return False
    if entry.hi is not None and lo >= _comparable(entry.hi):
        return False
    return True
