"""Client-side rate limiting for the exchange REST APIs, shared by all threads of one client.

Upbit allows 10 requests/s per IP *per group* and reports what is left in ``Remaining-Req: group=candle; min=1800; sec=9``.
Binance counts request weight per minute and reports the total in ``X-MBX-USED-WEIGHT-1M``. Both answer 429 when
crossed and then ban the IP with 418 if the client keeps going, so the limiters here pace requests *before* sending
them, believe the server's own count over ours, and turn a repeated 429 into a clear stop instead of a ban.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable

_REMAINING_RE = re.compile(r"group=(?P<group>[a-z_-]+).*?sec=(?P<sec>-?\d+)", re.IGNORECASE)


def parse_remaining_req(header: str | None) -> tuple[str, int] | None:
    """``'group=candle; min=1800; sec=9'`` -> ``('candle', 9)``; ``None`` when absent or unreadable (``min`` is deprecated)."""
    if not header:
        return None
    match = _REMAINING_RE.search(header)
    if not match:
        return None
    return match.group("group"), int(match.group("sec"))


def parse_retry_after(header: str | None) -> float | None:
    """Retry-After in seconds (the exchanges send delta-seconds, never an HTTP date)."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None


def backoff_delay(attempt: int, *, base_s: float = 0.25, cap_s: float = 10.0, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter: attempt 1 -> up to base, doubling, never above cap.

    Jitter keeps concurrent market workers from retrying in lock step and hitting the same window together.
    """
    ceiling = min(cap_s, base_s * 2 ** (attempt - 1))
    return ceiling * (0.5 + 0.5 * rng())


# How much later than we sent it a request may be counted by the server's window (its trip there, under load).
_ARRIVAL_MARGIN_S = 0.25


class UpbitLimiter:
    """Per-group sliding one-second window, corrected by the server's ``Remaining-Req`` ``sec`` count."""

    def __init__(self, per_second: int = 10, *, clock: Callable[[], float] = time.monotonic, sleep=time.sleep) -> None:
        # One below the published limit: the server's second boundaries are not ours, so an exact fit can still tip over.
        self.per_second = max(1, per_second - 1)
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._sent: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}
        # (requests the server said are left, when it said so): concurrent workers share what is left of that second.
        self._server_left: dict[str, tuple[int, float]] = {}
        # Requests per second the server has shown it allows (largest `sec` seen + the request that got it).
        self._capacity: dict[str, int] = {}

    def wait_time(self, group: str) -> float:
        """Seconds to wait before a request of ``group`` may go out; 0 reserves the slot (call under no lock)."""
        with self._lock:
            now = self._clock()
            window = self._sent.setdefault(group, deque())
            while window and now - window[0] >= 1.0:
                window.popleft()
            blocked = self._blocked_until.get(group, 0.0) - now
            if blocked > 0:
                return blocked
            if len(window) >= self.per_second:
                return max(0.001, 1.0 - (now - window[0]))
            if group not in self._server_left:
                # Until the server has told us this group's allowance, one request at a time finds it out.
                if window:
                    return 0.02
                window.append(now)
                return 0.0
            capacity = self._capacity.get(group, self.per_second)
            if len(window) >= capacity:
                return max(0.001, 1.0 - (now - window[0]))
            left, said_at = self._server_left[group]
            if left <= 0 and window and window[0] + _ARRIVAL_MARGIN_S < said_at:
                # The server's window slides: its "none left" ends when our oldest request in it ages out there (sent
                # time + a margin for its trip), not a full second after the answer: waiting that second held the
                # backfill at ~65 % of the limit (BENCHMARKS.md).
                said_at = window[0] + _ARRIVAL_MARGIN_S
                self._server_left[group] = (left, said_at)
            if now - said_at < 1.0:
                if left <= 0:
                    return max(0.001, 1.0 - (now - said_at))
                self._server_left[group] = (left - 1, said_at)
            window.append(now)
            return 0.0

    def acquire(self, group: str) -> None:
        while (delay := self.wait_time(group)) > 0:
            self._sleep(delay)

    def observe(self, remaining_req: str | None) -> None:
        """Take the server's word: what it says is left this second is all the group's workers may still send in it."""
        parsed = parse_remaining_req(remaining_req)
        if parsed:
            group, left = parsed
            with self._lock:
                self._server_left[group] = (left, self._clock())
                seen = min(self.per_second, left + 1)
                self._capacity[group] = max(self._capacity.get(group, 0), seen)

    def block(self, group: str, seconds: float) -> None:
        with self._lock:
            until = self._clock() + seconds
            self._blocked_until[group] = max(self._blocked_until.get(group, 0.0), until)


class WeightLimiter:
    """Binance request weight per minute: spend at most ``safety`` of the limit, then wait for the next minute.

    The server's ``X-MBX-USED-WEIGHT-1M`` wins whenever it reports more than we counted (other processes on the same IP
    spend the same allowance).
    """

    def __init__(
        self,
        weight_per_minute: int = 6000,
        *,
        safety: float = 0.8,
        clock: Callable[[], float] = time.time,
        sleep=time.sleep,
    ) -> None:
        self.budget = max(1, int(weight_per_minute * safety))
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._minute = -1
        self._used = 0
        self._blocked_until = 0.0

    def _roll(self, now: float) -> None:
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._used = minute, 0

    def wait_time(self, weight: int) -> float:
        with self._lock:
            now = self._clock()
            self._roll(now)
            if self._blocked_until > now:
                return self._blocked_until - now
            if self._used + weight > self.budget:
                return max(0.001, (self._minute + 1) * 60 - now)
            self._used += weight
            return 0.0

    def acquire(self, weight: int) -> None:
        while (delay := self.wait_time(weight)) > 0:
            self._sleep(delay)

    def observe(self, used_weight: str | None) -> None:
        if not used_weight:
            return
        try:
            used = int(used_weight)
        except ValueError:
            return
        with self._lock:
            self._roll(self._clock())
            self._used = max(self._used, used)

    def block(self, seconds: float) -> None:
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    @property
    def used(self) -> int:
        with self._lock:
            self._roll(self._clock())
            return self._used
