"""The retrying HTTP core the exchange clients share: bounded retries, jitter, Retry-After, and a stop before a ban."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from cryptoflow_dagster.clients.ratelimit import backoff_delay, parse_retry_after

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)


class ExchangeError(RuntimeError):
    """A request failed for good (bad parameters, an error payload, retries exhausted); the message says which."""


class RateLimitStop(ExchangeError):
    """We stopped on purpose: the exchange kept answering 429 and one more request could earn a 418 IP ban."""


class BannedError(ExchangeError):
    """The exchange answered 418: the IP is banned for a while. Nothing should retry this automatically."""


@dataclass(frozen=True)
class Reply:
    data: Any
    text: str


def split_json_array(text: str) -> list[str]:
    """The source text of each element of a top-level JSON array, byte for byte as the server sent it.

    Bronze keeps responses verbatim; re-serialising parsed JSON would change number spellings
    (``162483000.00000000`` -> ``162483000.0``) and break the promise that a load can be replayed exactly.
    """
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    items: list[str] = []
    while True:
        while text[pos] in " \t\r\n,":
            pos += 1
        if text[pos] == "]":
            return items
        _, end = decoder.raw_decode(text, pos)
        items.append(text[pos:end])
        pos = end


class RestClient:
    """Sync httpx client, safe to share between the threads that fetch markets concurrently.

    ``before`` reserves rate-limit room for a request and returns its ticket, ``after`` hands the ticket back with the
    response (``None``: no answer came), and ``on_429`` tells the limiter to hold every request for the server's
    Retry-After (or a backoff).
    """

    def __init__(
        self,
        base_url: str,
        *,
        name: str,
        timeout_s: float = 10.0,
        max_attempts: int = 5,
        max_429: int = 4,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.max_attempts = max_attempts
        self.max_429 = max_429
        self._sleep = sleep
        import httpx  # on first use, not at import: loading the code location does not need it

        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers={"Accept": "application/json"})
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "429": 0, "retries": 0}
        # When each 429 came back (time.monotonic()): the backfill benchmark counts those after its first second.
        self.limited_at: list[float] = []
        # The exchanges escalate to 418 after 429s keep coming: count them in a row, a success resets the count.
        self._429_streak = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _count(self, key: str) -> int:
        with self._lock:
            self.stats[key] += 1
            return self.stats[key]

    def get_json(
        self,
        path: str,
        params: Mapping[str, Any],
        *,
        before: Callable[[], Any],
        after: Callable[[Any, httpx.Response | None], None],
        on_429: Callable[[float], None],
    ) -> Reply:
        import httpx  # loaded by __init__ already

        for attempt in range(1, self.max_attempts + 1):
            ticket = before()
            self._count("requests")
            try:
                response = self._http.get(path, params={k: v for k, v in params.items() if v is not None})
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                after(ticket, None)
                if attempt == self.max_attempts:
                    raise ExchangeError(f"{self.name} GET {path} {dict(params)}: {exc!r} after {attempt} attempts") from exc
                self._retry(attempt, f"{type(exc).__name__}")
                continue
            after(ticket, response)
            status = response.status_code
            if status == 418:
                raise BannedError(
                    f"{self.name} answered 418 (IP banned) for GET {path}: stop all collection and wait out the ban"
                )
            if status == 429:
                self._count("429")
                with self._lock:
                    self.limited_at.append(time.monotonic())
                    self._429_streak += 1
                    streak = self._429_streak
                wait = parse_retry_after(response.headers.get("Retry-After")) or backoff_delay(attempt, base_s=1.0)
                on_429(wait)
                if streak >= self.max_429:
                    raise RateLimitStop(
                        f"{self.name}: {streak} responses 429 (too many requests) in a row; stopping before the "
                        f"exchange escalates to a 418 IP ban. Lower the concurrency or wait {wait:.0f}s and rerun."
                    )
                log.warning("%s 429 on %s, holding requests for %.2fs", self.name, path, wait)
                continue
            if status >= 500:
                if attempt == self.max_attempts:
                    raise ExchangeError(f"{self.name} GET {path}: HTTP {status} after {attempt} attempts: {response.text[:200]}")
                self._retry(attempt, f"HTTP {status}")
                continue
            if status >= 400:
                raise ExchangeError(f"{self.name} GET {path} {dict(params)}: HTTP {status}: {response.text[:300]}")
            with self._lock:
                self._429_streak = 0
            try:
                return Reply(response.json(), response.text)
            except ValueError as exc:
                raise ExchangeError(f"{self.name} GET {path}: response is not JSON: {response.text[:200]!r}") from exc
        raise ExchangeError(f"{self.name} GET {path}: gave up after {self.max_attempts} attempts (rate limited)")

    def _retry(self, attempt: int, why: str) -> None:
        self._count("retries")
        delay = backoff_delay(attempt)
        log.info("%s: %s, retry %d/%d in %.2fs", self.name, why, attempt, self.max_attempts - 1, delay)
        self._sleep(delay)
