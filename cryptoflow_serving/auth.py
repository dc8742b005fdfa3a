"""API keys and the per-key rate limit (docs/api.md, "Authentication and limits").

Keys come from ``CRYPTOFLOW_API_KEYS`` (a secret: kept out of the settings' repr, never logged, never in a URL). A
request carries one as ``X-API-Key`` or ``Authorization: Bearer``; it is compared in constant time. The limiter is a
token bucket per key (per client address when no keys are configured), refilled at ``CRYPTOFLOW_API_RATE_LIMIT`` per
second with a burst of one second's worth; over it, 429 with ``Retry-After``. Buckets are kept for the most recent
``MAX_BUCKETS`` clients only, so a scan from many addresses cannot grow memory.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

MAX_BUCKETS = 10_000
PROTECTED_PREFIX = "/v1/"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Keys:
    def __init__(self, keys: tuple[str, ...]):
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    def __repr__(self) -> str:
        return f"Keys({len(self._digests)} configured)"  # never the keys themselves

    @property
    def required(self) -> bool:
        return bool(self._digests)

    def check(self, key: str | None) -> str | None:
        """The key's identity (a digest prefix, safe to use as a bucket name) when it is one of ours, else None."""
        if key is None:
            return None
        digest = hashlib.sha256(key.encode()).digest()
        ok = False
        for known in self._digests:  # every key compared, in constant time each: timing says nothing about which
            ok |= hmac.compare_digest(digest, known)
        return digest.hex()[:16] if ok else None


class RateLimiter:
    def __init__(self, per_second: float):
        self.rate = per_second
        self.burst = max(1.0, per_second)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # who -> (tokens, last refill)
        self._lock = threading.Lock()

    def take(self, who: str) -> float:
        """0 when the request may go; else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(who, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / self.rate
            self._buckets[who] = (tokens, now)
            while len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        return wait


class AuthMiddleware:
    """Keys and rate limit on every ``/v1/`` HTTP request (the WebSocket checks its own, see live.py)."""

    def __init__(self, app: ASGIApp, keys: Keys, limiter: RateLimiter):
        self.app, self.keys, self.limiter = app, keys, limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.keys.required:
            who = self.keys.check(key_from_headers(headers))
            if who is None:
                await _answer(send, 401, "unauthorized", "an API key is required: send it as X-API-Key or "
                              "Authorization: Bearer", {"www-authenticate": "Bearer"})
                return
        else:
            who = "addr:" + (scope.get("client") or ("?", 0))[0]
        wait = self.limiter.take(who)
        if wait > 0:
            await _answer(send, 429, "rate_limited",
                          f"over {self.limiter.rate:g} requests per second for this key: retry after {wait:.2f} s",
                          {"retry-after": str(max(1, math.ceil(wait)))})
            return
        await self.app(scope, receive, send)


async def _answer(send: Send, status: int, code: str, message: str, headers: dict[str, str]) -> None:
    import orjson

    body = orjson.dumps({"error": code, "message": message})
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
