"""Per-client rate limits as the exchanges apply them: Upbit per group per second, Binance request weight per minute.

Both escalate the same way: a client that keeps sending after 429s is banned with 418, for a time that grows.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass
class Verdict:
    status: int  # 200, 429 or 418
    headers: dict[str, str]


@dataclass
class _Ban:
    strikes: int = 0
    last_strike: float = -math.inf
    until: float = -math.inf
    length: float = 0.0


class _Escalation:
    """Counts 429s that arrive close together; past ``after`` of them the client is banned (418)."""

    def __init__(self, after: int, first_ban_s: float, strike_gap_s: float):
        self.after, self.first_ban_s, self.gap = after, first_ban_s, strike_gap_s
        self.bans: dict[str, _Ban] = {}

    def banned_for(self, client: str, now: float) -> float:
        ban = self.bans.get(client)
        return ban.until - now if ban and ban.until > now else 0.0

    def strike(self, client: str, now: float) -> bool:
        ban = self.bans.setdefault(client, _Ban())
        ban.strikes = ban.strikes + 1 if now - ban.last_strike <= self.gap else 1
        ban.last_strike = now
        if ban.strikes > self.after:
            ban.length = ban.length * 2 if ban.length else self.first_ban_s
            ban.until = now + ban.length
            ban.strikes = 0
            return True
        return False


class UpbitLimiter:
    """10 requests per second per group per client; ``Remaining-Req`` on every answer."""

    def __init__(self, per_second: int = 10, ban_after: int = 10, ban_s: float = 2.0):
        self.per_second = per_second
        self.escalation = _Escalation(ban_after, ban_s, strike_gap_s=2.0)
        self.windows: dict[tuple[str, str, bool], deque[float]] = {}

    def check(self, client: str, group: str, now: float, origin: bool = False) -> Verdict:
        """``origin``: the request carried an Origin header (a browser), which Upbit allows once per 10 s."""
        limit, span = (1, 10.0) if origin else (self.per_second, 1.0)
        window = self.windows.setdefault((client, group, origin), deque())
        while window and window[0] <= now - span:
            window.popleft()
        if self.escalation.banned_for(client, now) > 0:
            return Verdict(418, {"Remaining-Req": f"group={group}; min=1800; sec=0"})
        if len(window) >= limit:
            status = 418 if self.escalation.strike(client, now) else 429
            return Verdict(status, {"Remaining-Req": f"group={group}; min=1800; sec=0"})
        window.append(now)
        return Verdict(200, {"Remaining-Req": f"group={group}; min=1800; sec={limit - len(window)}"})

    def reset(self) -> None:
        self.windows.clear()
        self.escalation.bans.clear()


class BinanceLimiter:
    """Request weight per calendar minute per client; 429 with Retry-After, then 418 bans."""

    def __init__(self, weight_per_min: int = 6000, ban_after: int = 10, ban_s: float = 120.0):
        self.limit = weight_per_min
        self.escalation = _Escalation(ban_after, ban_s, strike_gap_s=60.0)
        self.used: dict[str, tuple[int, int]] = {}

    def check(self, client: str, weight: int, now: float) -> Verdict:
        minute = int(now // 60)
        m, used = self.used.get(client, (minute, 0))
        if m != minute:
            used = 0
        banned = self.escalation.banned_for(client, now)
        if banned > 0:
            return Verdict(418, {"Retry-After": str(math.ceil(banned)), "X-MBX-USED-WEIGHT-1M": str(used)})
        if used + weight > self.limit:
            retry = math.ceil((minute + 1) * 60 - now)
            status = 418 if self.escalation.strike(client, now) else 429
            if status == 418:
                retry = math.ceil(self.escalation.banned_for(client, now))
            self.used[client] = (minute, used)
            return Verdict(status, {"Retry-After": str(retry), "X-MBX-USED-WEIGHT-1M": str(used)})
        used += weight
        self.used[client] = (minute, used)
        return Verdict(200, {"X-MBX-USED-WEIGHT-1M": str(used), "X-MBX-USED-WEIGHT": str(used)})

    def reset(self) -> None:
        self.used.clear()
        self.escalation.bans.clear()
